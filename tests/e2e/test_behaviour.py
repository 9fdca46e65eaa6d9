"""What a user of the whole chain relies on: reproducibility, errors, cancellation, failover, DiT-only."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import numpy as np
import pytest

from acestep_client import (
    AceStepClient,
    AsyncAceStepClient,
    GenerationConfig,
    GenerationParams,
    InvalidArgument,
    generate_music,
)
from acestep_client.convert import config_to_proto, params_to_proto
from acestep_client.proto.acestep.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from orchestrator.server import build_parser, start_orchestrator

FAST = {"duration": 10, "bpm": 100, "keyscale": "D minor", "timesignature": "4"}


def _generate(address, params, config, save_dir=None):
    with AceStepClient(address) as client:
        return client.generate(params, config, save_dir=save_dir)


def test_same_seed_gives_the_same_audio_through_the_whole_chain(stack):
    params = GenerationParams(caption="lofi beat", **FAST)
    config = GenerationConfig(batch_size=1, seeds=[7], use_random_seed=False)
    first, second = _generate(stack.address, params, config), _generate(stack.address, params, config)
    other = _generate(stack.address, params, GenerationConfig(batch_size=1, seeds=[8], use_random_seed=False))
    assert first.success and second.success and other.success
    a, b, c = (r.audios[0]["tensor"].numpy() for r in (first, second, other))
    assert np.array_equal(a, b)
    assert first.audios[0]["params"]["audio_codes"] == second.audios[0]["params"]["audio_codes"]
    assert not np.array_equal(a, c)


def test_bad_input_is_invalid_argument_naming_the_field_and_writes_nothing(stack, tmp_path):
    request = orchestrator_pb2.GenerateMusicRequest(
        params=params_to_proto(GenerationParams(caption="x", bpm=500)), config=config_to_proto(GenerationConfig()))
    with grpc.insecure_channel(stack.address) as channel:
        stub = orchestrator_pb2_grpc.MusicGenerationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as excinfo:
            list(stub.GenerateMusic(request, timeout=30))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bpm" in excinfo.value.details() and "30 and 300" in excinfo.value.details()

    with AceStepClient(stack.address) as client:
        with pytest.raises(InvalidArgument, match="duration"):  # the SDK refuses before any network call
            client.generate(GenerationParams(caption="x", duration=5), GenerationConfig(), save_dir=str(tmp_path))
        result = generate_music(client, None, GenerationParams(caption="x", duration=5), GenerationConfig(),
                                save_dir=str(tmp_path))
    assert not result.success and result.error.startswith("INVALID_ARGUMENT: duration:")
    assert list(tmp_path.iterdir()) == []


def test_server_side_validation_catches_what_a_raw_client_sends(stack):
    request = orchestrator_pb2.GenerateMusicRequest(params=params_to_proto(GenerationParams(
        task_type="lego", src_audio="x.wav", instruction="Generate the kazoo track")))
    with grpc.insecure_channel(stack.address) as channel:
        stub = orchestrator_pb2_grpc.MusicGenerationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as excinfo:
            list(stub.GenerateMusic(request, timeout=30))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert excinfo.value.details().startswith("instruction:")


def test_turbo_refuses_base_only_tasks(stack, tmp_path):
    src = tmp_path / "a.wav"
    from acestep_client.audio_io import write_audio

    write_audio(src, np.zeros((2, 48_000 * 10), np.float32) + 0.1, 48_000, "wav")
    params = GenerationParams(task_type="extract", src_audio=str(src), instruction="Extract the drums track:",
                              thinking=False, use_cot_metas=False)
    result = _generate(stack.address, params, GenerationConfig(batch_size=1))
    assert not result.success
    assert "INVALID_ARGUMENT" in result.error or "FAILED_PRECONDITION" in result.error
    assert "base" in result.error


async def test_cancel_mid_generation_stops_lm_and_dit_work(stack):
    params = GenerationParams(caption="very long song", duration=600)  # thinking: 3,000 LM codes
    lm_admission = stack.stack.lm.servicer.admission
    async with AsyncAceStepClient(stack.address) as client:
        events = client.stream(params, GenerationConfig(batch_size=1))
        async for event in events:
            if event.WhichOneof("event") == "progress" and event.progress.step > 0:
                break
        await events.aclose()
    assert lm_admission.running == 1 or lm_admission.running == 0
    deadline = time.monotonic() + 10
    while lm_admission.running and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert lm_admission.running == 0, "the LM kept decoding after the client went away"


def test_deadline_exceeded_is_reported(stack):
    params = GenerationParams(caption="very long song", duration=600)
    request = orchestrator_pb2.GenerateMusicRequest(params=params_to_proto(params),
                                                    config=config_to_proto(GenerationConfig(batch_size=1)))
    with grpc.insecure_channel(stack.address) as channel:
        stub = orchestrator_pb2_grpc.MusicGenerationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as excinfo:
            list(stub.GenerateMusic(request, timeout=0.5))
    assert excinfo.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed when we leave: nothing listens there


def test_dead_dit_replica_fails_over_to_the_live_one(stack):
    async def start():
        args = build_parser().parse_args(
            ["--port", "0", "--dit", f"{_dead_address()},{stack.stack.dit.address}", "--lm", stack.stack.lm.address])
        return await start_orchestrator(args, announce=lambda line: None)

    orchestrator = stack.run(start())
    try:
        for _ in range(2):  # round robin: one of the two calls starts on the dead replica
            result = _generate(f"127.0.0.1:{orchestrator.port}", GenerationParams(caption="x", thinking=False, **FAST),
                               GenerationConfig(batch_size=1))
            assert result.success, result.error
    finally:
        stack.run(orchestrator.stop())


def test_dit_only_deployment(stack):
    async def start():
        args = build_parser().parse_args(["--port", "0", "--dit", stack.stack.dit.address])
        return await start_orchestrator(args, announce=lambda line: None)

    orchestrator = stack.run(start())
    address = f"127.0.0.1:{orchestrator.port}"
    try:
        ok = _generate(address, GenerationParams(caption="x", thinking=False, use_cot_metas=False, duration=10),
                       GenerationConfig(batch_size=1))
        assert ok.success, ok.error
        needs_lm = _generate(address, GenerationParams(caption="x", duration=10), GenerationConfig(batch_size=1))
        assert not needs_lm.success
        assert "FAILED_PRECONDITION" in needs_lm.error and "no LM service" in needs_lm.error
    finally:
        stack.run(orchestrator.stop())


def test_spec_spellings_of_key_and_meter_reach_the_models_in_canonical_form(stack):
    params = GenerationParams(caption="x", duration=10, bpm=90, keyscale="Am", timesignature="6/8")
    result = _generate(stack.address, params, GenerationConfig(batch_size=1))
    assert result.success, result.error
    reported = result.audios[0]["params"]
    assert (reported["keyscale"], reported["timesignature"]) == ("Am", "6/8")  # the caller's values, untouched


def test_codes_beyond_the_dit_codebook_are_clamped_like_the_reference(stack):
    """The LM vocabulary has 65,535 codes, the DiT codebook 64,000: the top ones clamp, never fail."""
    codes = "".join(f"<|audio_code_{n}|>" for n in [0, 63_999, 64_000, 65_534] * 13)  # 52 codes = 10.4 s
    params = GenerationParams(task_type="cover", audio_codes=codes, caption="x", thinking=False,
                              use_cot_metas=False)
    result = _generate(stack.address, params, GenerationConfig(batch_size=1))
    assert result.success, result.error
    assert result.audios[0]["tensor"].shape[1] == 52 * 5 * 1920
