"""understand_music / create_sample / format_sample through real servers: SDK -> orchestrator -> LM.

Random weights write garbage text; the checks are on what the chain guarantees (fields in range,
user metadata kept, seeds reproducible, errors named, cancellation frees the LM).
"""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest

from acestep_client import (
    AceStepClient,
    AsyncAceStepClient,
    RemoteLM,
    cli,
    create_sample,
    format_sample,
    understand_music,
)
from acestep_client.constants import BPM_RANGE, VOCAL_LANGUAGES
from acestep_client.describe import sampling_message
from acestep_client.proto.acestep.v1 import generation_pb2 as pb
from acestep_client.proto.acestep.v1 import lm_pb2, lm_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from orchestrator.server import build_parser, start_orchestrator

CODES = "<|audio_code_11|><|audio_code_2|><|audio_code_63999|>"
SHORT = {"max_new_tokens": 48}
FULL_COT = {"max_new_tokens": 700}  # the caption alone may take 512 tokens on random weights


def test_understand_music_through_the_orchestrator_is_reproducible(stack):
    with AceStepClient(stack.address) as client:
        first = client.understand_music(CODES, seed=5, **SHORT)
        again = client.understand_music(CODES, seed=5, **SHORT)
        other = client.understand_music(CODES, seed=6, **SHORT)
    assert first.success, first.error
    fields = ("caption", "lyrics", "bpm", "duration", "keyscale", "language", "timesignature")
    values = [tuple(getattr(r, f) for f in fields) for r in (first, again, other)]
    assert values[0] == values[1] and values[0] != values[2]
    assert BPM_RANGE[0] <= first.bpm <= BPM_RANGE[1]
    assert "seed 5" in first.status_message


def test_the_lm_directly_and_through_the_orchestrator_agree(stack):
    with AceStepClient(stack.address) as client:
        relayed = client.understand_music(CODES, temperature=0.3, seed=9, **SHORT)
    request = lm_pb2.DescribeRequest(task=pb.DescribeTask(
        understand=pb.UnderstandInput(audio_codes=CODES), sampling=sampling_message(0.3, seed=9, **SHORT)))
    with grpc.insecure_channel(stack.stack.lm.address) as channel:
        events = list(lm_pb2_grpc.LanguageModelServiceStub(channel).Describe(request))
    direct = events[-1].description
    assert [e.WhichOneof("event") for e in events[:-1]] == ["progress"] * (len(events) - 1)
    assert (relayed.caption, relayed.bpm, relayed.keyscale) == (direct.caption, direct.bpm, direct.keyscale)


def test_module_functions_take_the_reference_signatures(stack):
    created = create_sample(stack.address, "a soft Bengali love song", instrumental=True, vocal_language="bn",
                            **FULL_COT)  # fmt: skip
    assert created.success, created.error
    assert created.language == "bn" and created.instrumental and created.lyrics
    formatted = format_sample(stack.address, "latin pop", "[Verse]\nhola", {"bpm": 100, "keyscale": "Am"},
                              temperature=0.5, top_k=50, top_p=0.9, **FULL_COT)  # fmt: skip
    assert formatted.success, formatted.error
    assert (formatted.bpm, formatted.keyscale) == (100, "A minor")
    assert formatted.language in VOCAL_LANGUAGES
    understood = understand_music(RemoteLM(stack.stack.lm.address), CODES, use_constrained_decoding=False, **SHORT)
    assert understood.success, understood.error


def test_bad_input_fails_with_the_field_and_nothing_runs(stack):
    assert not format_sample(stack.address, "x", "y", {"bpm": 10}).success
    bad = pb.DescribeTask(format_sample=pb.FormatSampleInput(caption="x", bpm=10))
    for address, call in (
        (stack.address, lambda ch: orchestrator_pb2_grpc.MusicGenerationServiceStub(ch).DescribeMusic(
            orchestrator_pb2.DescribeMusicRequest(task=bad))),
        (stack.stack.lm.address, lambda ch: lm_pb2_grpc.LanguageModelServiceStub(ch).Describe(
            lm_pb2.DescribeRequest(task=bad))),
    ):  # fmt: skip
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as info:
            list(call(channel))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "bpm" in info.value.details() and "30 and 300" in info.value.details()


async def test_async_client_reports_progress_and_cancel_frees_the_lm(stack):
    seen: list[float] = []
    async with AsyncAceStepClient(stack.address) as client:
        result = await client.create_sample("q", seed=1, progress=lambda fraction, message: seen.append(fraction),
                                            **SHORT)  # fmt: skip
        assert result.success, result.error
        assert seen and all(0.0 <= f <= 1.0 for f in seen)
        lm_admission = stack.stack.lm.servicer.admission
        task = asyncio.ensure_future(client.understand_music(CODES, seed=2))  # up to 4,032 tokens
        while not lm_admission.running:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    deadline = time.monotonic() + 10
    while lm_admission.running and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert lm_admission.running == 0, "the LM kept decoding after the client went away"


def test_dit_only_deployment_says_the_lm_is_missing(stack):
    async def start():
        args = build_parser().parse_args(["--port", "0", "--dit", stack.stack.dit.address])
        return await start_orchestrator(args, announce=lambda line: None)

    orchestrator = stack.run(start())
    try:
        result = understand_music(f"127.0.0.1:{orchestrator.port}", CODES)
        assert not result.success
        assert result.error.startswith("FAILED_PRECONDITION") and "no" in result.error and "--lm" in result.error
    finally:
        stack.run(orchestrator.stop())


def test_cli_prints_the_result_as_json(stack, capsys):
    code = cli.main(["understand", "--target", stack.address, "--codes", CODES, "--seed", "3",
                     "--max-new-tokens", "40"])  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["success"] and "seed 3" in printed["status_message"]
    assert cli.main(["format", "--target", stack.address, "--bpm", "12"]) == 2
    assert "bpm" in capsys.readouterr().err
