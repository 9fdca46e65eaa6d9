"""The LM replica's answer to ListModels: its model and what it plans for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2

if TYPE_CHECKING:
    from lm_service.planner import Planner

# The tasks the orchestrator asks the LM to plan (metadata, and codes for text2music); cover and repaint
# take their plan from the source audio.
PLANNED_TASKS = (
    gen_pb2.TASK_TYPE_TEXT2MUSIC, gen_pb2.TASK_TYPE_LEGO, gen_pb2.TASK_TYPE_EXTRACT, gen_pb2.TASK_TYPE_COMPLETE,
)


def lm_model_info(name: str, planner: Planner | None, max_batch: int) -> gen_pb2.ModelInfo:
    """``planner`` None: still loading (``loaded`` false, no limits)."""
    info = gen_pb2.ModelInfo(name=name, kind=gen_pb2.MODEL_KIND_LM, loaded=planner is not None)
    if planner is None:
        return info
    info.task_types.extend(PLANNED_TASKS)
    info.max_duration_s = float(planner.max_duration)
    info.max_batch_size = max_batch
    return info
