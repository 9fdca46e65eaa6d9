"""The DiT server with ``--adapters`` over real gRPC (in process, no orchestrator): ListModels lists the adapters
beside the model, requests name them in GenerationParams.adapter, unknown or unfit ones are refused with the status
that says why, and requests with different adapters share forwards."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import pytest
import torch

from acestep_client.proto.acestep.v1 import dit_pb2, dit_pb2_grpc
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_serving.admission import Admission
from acestep_serving.server import GrpcServer, ServerOptions
from dit_service.adapters.tiny import (
    ATTENTION_TARGETS,
    TINY_LOKR,
    TINY_LORA,
    decoder_linears,
    lora_tensors,
    targeted,
    write_peft_lora,
)
from dit_service.batcher import ForwardBatcher
from dit_service.engine import DiTEngine
from dit_service.server import SERVICE_NAME, DiffusionServicer, DiTMetrics, build_parser
from dit_service.tiny_checkpoint import ADAPTERS_FOLDER, VARIANTS, tiny_dit_config

TURBO = "acestep-v15-turbo"


@pytest.fixture(scope="module")
def adapter_folder(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served_adapters")
    for name in (TINY_LORA, TINY_LOKR):
        shutil.copytree(tiny_root / ADAPTERS_FOLDER / name, folder / name)
    linears = decoder_linears(tiny_dit_config(**VARIANTS[TURBO]))
    tensors = lora_tensors(linears, targeted(linears, ATTENTION_TARGETS), 4, torch.Generator().manual_seed(1))
    write_peft_lora(folder / "for-base", tensors, rank=4, alpha=8, base_model="acestep-v15-base")
    return folder


@pytest.fixture(scope="module")
def engine(tiny_root: Path, adapter_folder: Path) -> DiTEngine:
    return DiTEngine.load(tiny_root, TURBO, adapters=adapter_folder)


async def _serve(engine: DiTEngine, metrics: DiTMetrics) -> tuple[GrpcServer, str]:
    servicer = DiffusionServicer(Admission(4, 4), metrics, model_name=TURBO)
    servicer.engine = engine
    server = GrpcServer([SERVICE_NAME], ServerOptions(port=0))
    server.add(dit_pb2_grpc.add_DiffusionServiceServicer_to_server, servicer)
    port = await server.start()
    return server, f"127.0.0.1:{port}"


def _request(seed: int, **params) -> dit_pb2.SynthesizeRequest:
    return dit_pb2.SynthesizeRequest(
        params=gen_pb2.GenerationParams(caption="lofi", duration=10, inference_steps=8, **params), seeds=[seed]
    )


async def _synthesize(stub, request) -> int:
    """Frames of audio received."""
    frames = 0
    async for response in stub.Synthesize(request, timeout=120):
        if response.HasField("item_done"):
            frames += response.item_done.num_frames
    return frames


def test_the_flags_and_their_environment_variables(monkeypatch, tmp_path):
    args = build_parser().parse_args([])
    assert (args.adapters, args.adapter_cache_mb) == ("", 1024.0)
    args = build_parser().parse_args(["--adapters", str(tmp_path), "--adapter-cache-mb", "64"])
    assert (args.adapters, args.adapter_cache_mb) == (str(tmp_path), 64.0)
    monkeypatch.setenv("ACESTEP_ADAPTERS", str(tmp_path))  # how `acestep serve all` passes it on
    assert build_parser().parse_args([]).adapters == str(tmp_path)


async def test_list_models_lists_the_adapters_and_requests_use_them(engine):
    metrics = DiTMetrics()
    engine.batcher = ForwardBatcher(batch_wait_ms=2000, observer=metrics.observe_batch)
    server, address = await _serve(engine, metrics)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = dit_pb2_grpc.DiffusionServiceStub(channel)
            listed = (await stub.ListModels(gen_pb2.ListModelsRequest(), timeout=10)).models
            assert [(m.name, m.kind) for m in listed] == [
                (TURBO, gen_pb2.MODEL_KIND_DIT),
                (TINY_LOKR, gen_pb2.MODEL_KIND_ADAPTER),
                (TINY_LORA, gen_pb2.MODEL_KIND_ADAPTER),
            ]  # "for-base" is for another model: not servable here, not listed
            adapters = {m.name: m for m in listed[1:]}
            assert {(m.base_model, m.adapter_format, m.loaded) for m in adapters.values()} == {
                (TURBO, "lokr", False), (TURBO, "lora", False)}

            for name, code, fragments in (
                ("no-such", grpc.StatusCode.NOT_FOUND, ["'no-such'", "not found"]),
                ("for-base", grpc.StatusCode.FAILED_PRECONDITION, ["'for-base'", "acestep-v15-base", TURBO]),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await _synthesize(stub, _request(1, adapter=name))
                assert refused.value.code() == code
                assert all(fragment in refused.value.details() for fragment in fragments)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _synthesize(stub, _request(1, adapter=TINY_LORA, adapter_scale=1.5))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "adapter_scale" in refused.value.details()

            # Two requests with different adapters at once: they share forwards, and both finish.
            frames = await asyncio.gather(
                _synthesize(stub, _request(2, adapter=TINY_LORA)),
                _synthesize(stub, _request(3, adapter=TINY_LOKR, adapter_scale=0.5)),
            )
            assert frames[0] == frames[1] > 0
            rows = metrics.registry.get_sample_value("acestep_dit_batch_items_sum", {"component": "dit"})
            forwards = metrics.registry.get_sample_value("acestep_dit_batch_items_count", {"component": "dit"})
            assert rows > forwards  # some DiT forward carried rows of both requests

            listed = (await stub.ListModels(gen_pb2.ListModelsRequest(), timeout=10)).models
            assert {m.name: m.loaded for m in listed[1:]} == {TINY_LOKR: True, TINY_LORA: True}
    finally:
        await server.drain_and_stop(0)
        engine.batcher.close()
