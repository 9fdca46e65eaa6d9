"""A call cut short writes one log line: RPC, request id, why, and how far it got (issue 15 point 8).

Real LM, DiT and orchestrator servers (one process, real gRPC on 127.0.0.1) on tiny checkpoints; the lines
are read from the servers' logging.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import pytest

from acestep_client.convert import config_to_proto, params_to_proto
from acestep_client.proto.acestep.v1 import (
    dit_pb2,
    dit_pb2_grpc,
    lm_pb2,
    lm_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
)
from acestep_client.types import GenerationConfig, GenerationParams
from orchestrator.stack import start_stack

LONG = GenerationParams(caption="a very long song", duration=600)


@pytest.fixture
def calls_log(caplog):
    caplog.set_level(logging.INFO, logger="acestep_serving.calls")
    return caplog


async def line_with(caplog, *parts: str, timeout: float = 60) -> str:
    """The first log line holding every part (the server writes it when its handler ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in caplog.records:
            message = record.getMessage()
            if all(part in message for part in parts):
                return message
        await asyncio.sleep(0.05)
    lines = "\n".join(r.getMessage() for r in caplog.records if r.name == "acestep_serving.calls")
    pytest.fail(f"no log line with {parts}; the call lines were:\n{lines}")


async def test_cancels_and_deadlines_are_logged_by_each_service(tiny_root, calls_log):
    stack = await start_stack(tiny_root, device="cpu", dtype="float32", announce=lambda line: None)
    try:
        async with grpc.aio.insecure_channel(stack.dit.address) as dit_channel, \
                grpc.aio.insecure_channel(stack.lm.address) as lm_channel, \
                grpc.aio.insecure_channel(stack.address) as front_channel:
            # DiT: the client cancels during diffusion.
            dit = dit_pb2_grpc.DiffusionServiceStub(dit_channel)
            call = dit.Synthesize(dit_pb2.SynthesizeRequest(params=params_to_proto(LONG), seeds=[1],
                                                            request_id="cancel-dit"))
            async for response in call:
                if response.WhichOneof("event") == "progress" and response.progress.step >= 1:
                    break
            call.cancel()
            dit_line = await line_with(calls_log, "Synthesize request_id=cancel-dit cancelled by the client")

            # LM: the deadline passes mid-plan.
            lm = lm_pb2_grpc.LanguageModelServiceStub(lm_channel)
            plan = lm.Plan(lm_pb2.PlanRequest(params=params_to_proto(LONG), seeds=[1], generate_codes=True,
                                              request_id="deadline-lm"), timeout=3)
            with pytest.raises(grpc.aio.AioRpcError) as lm_error:
                async for _ in plan:
                    pass
            lm_line = await line_with(calls_log, "Plan request_id=deadline-lm hit its deadline")

            # Orchestrator: the deadline passes while the LM plans; it and the LM each say so.
            front = orchestrator_pb2_grpc.MusicGenerationServiceStub(front_channel)
            generate = front.GenerateMusic(orchestrator_pb2.GenerateMusicRequest(
                params=params_to_proto(LONG), config=config_to_proto(GenerationConfig(batch_size=1)),
                request_id="deadline-gen"), timeout=4)
            with pytest.raises(grpc.aio.AioRpcError) as front_error:
                async for _ in generate:
                    pass
            front_line = await line_with(calls_log, "GenerateMusic request_id=deadline-gen hit its deadline")
            backend_line = await line_with(calls_log, "request_id=deadline-gen hit its deadline", "Plan")
    finally:
        await stack.stop()

    assert "at diffusion step" in dit_line and "0/1 item(s) done" in dit_line
    assert lm_error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "at LM phase" in lm_line and "tokens" in lm_line
    assert front_error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "at LM" in front_line and "0/1 item(s) done" in front_line
    assert "at LM phase" in backend_line
