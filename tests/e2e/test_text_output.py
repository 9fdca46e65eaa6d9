"""Text-mode output through the real servers is complete, clean and valid generate input (issue 10, 1-2).

SDK -> orchestrator -> LM on the tiny random checkpoints; seed 1281621263 is the one that lost the
user's metadata at small budgets.
"""

from __future__ import annotations

import dataclasses
import re

import grpc
import pytest

from acestep_client import AceStepClient, format_sample
from acestep_client.describe import format_sample_task, sampling_message
from acestep_client.proto.acestep.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from acestep_client.types import GenerationConfig, GenerationParams

ISSUE_SEED = 1281621263
FIXED = {"bpm": 100, "duration": 95.5, "keyscale": "Am", "timesignature": "3/4", "language": "es"}
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _describe(address: str, task) -> orchestrator_pb2.DescribeMusicResponse:
    with grpc.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.MusicGenerationServiceStub(channel)
        events = list(stub.DescribeMusic(orchestrator_pb2.DescribeMusicRequest(task=task)))
    return events[-1].description


def test_fixed_metadata_survive_a_small_budget_and_the_cuts_are_reported(stack):
    task = format_sample_task("latin pop", "[Verse]\nhola", FIXED, sampling_message(seed=ISSUE_SEED, max_new_tokens=40))
    description = _describe(stack.address, task)
    values = (description.bpm, description.duration, description.keyscale, description.timesignature,
              description.language)  # fmt: skip
    assert values == (100, 95.5, "A minor", "3", "es")
    lyrics_warnings = " | ".join(w.message for w in description.warnings if w.field == "lyrics")
    assert "cut at sampling.max_new_tokens=40" in lyrics_warnings  # the budget ended the lyrics: said, not silent
    assert "the input lyrics stand in" in lyrics_warnings and description.lyrics == "[Verse]\nhola"
    assert not any(CONTROL.search(text) for text in (description.caption, description.lyrics, description.raw_text))


def test_the_sdk_result_says_what_was_cut(stack):
    result = format_sample(stack.address, "latin pop", "[Verse]\nhola", FIXED, seed=ISSUE_SEED, max_new_tokens=40)
    assert result.success, result.error
    assert (result.bpm, result.duration, result.keyscale, result.timesignature, result.language) == (
        100, 95.5, "A minor", "3", "es"
    )  # fmt: skip
    assert "\nwarning (lyrics): cut at sampling.max_new_tokens=40" in result.status_message


def test_a_budget_too_small_for_the_fixed_values_fails_naming_the_minimum(stack):
    result = format_sample(stack.address, "latin pop", "[Verse]\nhola", FIXED, seed=ISSUE_SEED, max_new_tokens=16)
    assert not result.success
    assert result.error.startswith("INVALID_ARGUMENT: sampling.max_new_tokens")
    assert re.search(r"at least \d+ .* got 16", result.error)


@pytest.mark.parametrize("seed", [1, 2])
def test_create_and_format_output_goes_straight_into_generate(stack, tmp_path, seed):
    with AceStepClient(stack.address) as client:
        created = client.create_sample("a sad waltz about rain", seed=seed, max_new_tokens=120)
        formatted = client.format_sample("latin pop", "[Verse]\nhola", {"bpm": 100}, seed=seed, max_new_tokens=120)
        for result in (created, formatted):
            assert result.success, result.error
            params = GenerationParams(caption=result.caption, lyrics=result.lyrics, bpm=result.bpm,
                                      duration=result.duration or -1.0, keyscale=result.keyscale,
                                      timesignature=result.timesignature,
                                      vocal_language=result.language or "unknown")  # fmt: skip
            params.validate()
        # One real generate of the formatted sample (10 s, DiT only, so the test stays short).
        quick = dataclasses.replace(params, duration=10.0, thinking=False, use_cot_metas=False, inference_steps=2)
        generated = client.generate(quick, GenerationConfig(batch_size=1), save_dir=str(tmp_path))
    assert generated.success, generated.error
