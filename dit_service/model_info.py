"""The DiT replica's answer to ListModels: its model and limits, read from the loaded engine.

The orchestrator checks requests against this before any model work (an LM plan, an upload's
encoding), so a request the DiT would refuse costs nothing; the engine's own ``validate`` enforces the
same limits, from the same properties.
"""

from __future__ import annotations

from acestep_client.convert import task_type_number
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from dit_service.adapters import AdapterLibrary
from dit_service.engine import DEFAULT_STEPS, MAX_BATCH, MAX_DURATION_S, DiTEngine


def dit_model_info(name: str, engine: DiTEngine | None, max_batch: int = MAX_BATCH) -> gen_pb2.ModelInfo:
    """``engine`` None: still loading, so only the name is known (``loaded`` false, no limits)."""
    info = gen_pb2.ModelInfo(name=name, kind=gen_pb2.MODEL_KIND_DIT, loaded=engine is not None)
    if engine is None:
        return info
    info.task_types.extend(task_type_number(task) for task in engine.task_types)
    info.min_inference_steps = 1
    info.max_inference_steps = engine.max_inference_steps
    info.default_inference_steps = DEFAULT_STEPS
    info.is_turbo = engine.is_turbo
    info.max_duration_s = MAX_DURATION_S
    info.max_batch_size = min(max_batch, MAX_BATCH)
    return info


def adapter_model_infos(model_name: str, library: AdapterLibrary | None) -> list[gen_pb2.ModelInfo]:
    """Every adapter this replica can serve on ``model_name`` (kind ADAPTER), ``loaded`` when in its cache."""
    if library is None:
        return []
    return [
        gen_pb2.ModelInfo(
            name=spec.name, kind=gen_pb2.MODEL_KIND_ADAPTER, loaded=loaded, base_model=model_name,
            adapter_format=spec.format,
        )
        for spec, loaded in library.entries()
    ]
