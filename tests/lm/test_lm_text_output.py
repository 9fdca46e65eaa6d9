"""What the text modes return is clean, keeps the user's values and is valid generate input (issue 10, 1-2).

Random weights write any token they like: NUL bytes, chat tags, captions cut by a small token budget.
The checks are on what a caller relies on, whatever the weights: user values survive (or the call fails
naming ``max_new_tokens`` and its minimum), no control characters, each cut is a warning, and every
create_sample / format_sample description feeds ``generate`` without a validation error.
"""

from __future__ import annotations

import re

import pytest
import torch

from acestep_client.errors import InvalidArgument
from acestep_client.types import GenerationParams
from lm_service.constraints import CotStateMachine, strip_control_characters
from lm_service.decoding import apply_rule
from lm_service.describe import DescribeRequest, Description, check_request
from lm_service.planner import Planner

ISSUE_SEED = 1281621263  # dropped the user's duration, key, language and time signature at small budgets
FIXED = dict(bpm=100, duration=95.5, keyscale="Am", timesignature="3/4", language="es")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _describe(planner: Planner, **fields) -> Description:
    result = list(planner.describe(DescribeRequest(**fields)))[-1]
    assert isinstance(result, Description)
    return result


def _format_minimum(planner: Planner) -> int:
    machine = CotStateMachine(planner.cot_vocab, {"bpm": "100", "duration": "95", "keyscale": "A minor",
                                                  "timesignature": "3", "language": "es"},
                              skip_caption=False, skip_language=False, describe=True)  # fmt: skip
    return machine.minimum_tokens()


def _as_generate_input(result: Description) -> GenerationParams:
    return GenerationParams(
        caption=result.caption, lyrics=result.lyrics, bpm=result.bpm,
        duration=result.duration if result.duration is not None else -1.0, keyscale=result.keyscale,
        timesignature=result.timesignature, vocal_language=result.language or "unknown",
        instrumental=result.instrumental,
    )  # fmt: skip


@pytest.mark.parametrize("extra", [0, 1, 6, 20, 60])
def test_fixed_metadata_survive_every_budget_from_the_minimum(planner: Planner, extra: int) -> None:
    budget = _format_minimum(planner) + extra
    result = _describe(planner, mode="format_sample", caption="latin pop", lyrics="[Verse]\nhola", seed=ISSUE_SEED,
                       max_new_tokens=budget, **FIXED)  # fmt: skip
    assert (result.bpm, result.duration, result.keyscale, result.timesignature, result.language) == (
        100, 95.5, "A minor", "3", "es"
    )  # fmt: skip
    # The CoT itself holds them: the caption ended early enough for every fixed line to be written.
    cot = result.raw_text.partition("</think>")[0]
    for line in ("bpm: 100", "duration: 95", "keyscale: A minor", "language: es", "timesignature: 3"):
        assert f"\n{line}\n" in cot
    assert result.generated_tokens <= budget
    fields = {name for name, _ in result.warnings}
    assert ("lyrics" in fields) == (not result.raw_text.endswith("<|im_end|>"))  # a cut is reported
    _as_generate_input(result).validate()


def test_a_budget_below_the_minimum_fails_naming_it_before_any_model_work(planner: Planner) -> None:
    minimum = _format_minimum(planner)
    req = DescribeRequest("format_sample", caption="latin pop", seed=ISSUE_SEED, max_new_tokens=minimum - 1, **FIXED)
    with pytest.raises(InvalidArgument) as info:
        check_request(planner, req)
    assert info.value.field == "sampling.max_new_tokens"
    assert f"at least {minimum}" in str(info.value) and f"got {minimum - 1}" in str(info.value)
    with pytest.raises(InvalidArgument, match=r"sampling\.max_new_tokens"):
        list(planner.describe(req))


def test_unconstrained_decoding_still_returns_the_fixed_values(planner: Planner) -> None:
    result = _describe(planner, mode="format_sample", caption="latin pop", seed=ISSUE_SEED, max_new_tokens=20,
                       use_constrained_decoding=False, **FIXED)  # fmt: skip
    assert (result.bpm, result.duration, result.keyscale, result.timesignature, result.language) == (
        100, 95.5, "A minor", "3", "es"
    )  # fmt: skip
    assert result.caption == "latin pop"  # the LM wrote no usable caption: the input stands in, reported
    assert ("caption", "the LM wrote no caption; the input caption stands in") in result.warnings


def test_a_small_budget_without_fixed_values_reports_which_fields_it_cut(planner: Planner) -> None:
    result = _describe(planner, mode="understand", audio_codes="<|audio_code_3|>", seed=3, max_new_tokens=12)
    assert result.generated_tokens == 12
    (message,) = [text for name, text in result.warnings if name == "sampling.max_new_tokens"]
    assert "sampling.max_new_tokens=12 ended the metadata block before" in message and "timesignature" in message
    # Only whole lines count: a value the budget cut in the middle is left out, never reported short.
    assert result.timesignature == "" and result.language == ""
    if result.duration is not None:
        assert f"duration: {int(result.duration)}\n" in result.raw_text


def test_caption_and_lyrics_never_hold_control_tokens(planner: Planner) -> None:
    vocab = planner.cot_vocab
    (nul,) = planner.tokenizer.encode("\x00", add_special_tokens=False)
    assert nul in vocab.caption_block_ids and nul in vocab.text_block_ids
    machine = CotStateMachine(vocab, {}, skip_caption=False, skip_language=False, describe=True)
    machine.forced.clear()
    machine.in_free_text = True  # the lyrics, after </think>
    logits = torch.zeros(planner.backend.vocab_size)
    masked = apply_rule(logits, machine.rule(logits), vocab.caption_block_tensor, vocab.text_block_tensor)
    assert masked[nul] == float("-inf") and masked[planner.table.think_start_id] == float("-inf")
    assert masked[planner.table.eos_id] == 0.0  # the lyrics still end at EOS


@pytest.mark.parametrize("constrained", [True, False])
def test_returned_text_has_no_control_characters(planner: Planner, constrained: bool) -> None:
    # Seed 26 unconstrained writes a 0x0f byte token: the decoded text is cleaned, whatever the mask.
    for seed in (26, 27):
        result = _describe(planner, mode="format_sample", caption="x", seed=seed, max_new_tokens=80,
                           use_constrained_decoding=constrained)  # fmt: skip
        for text in (result.caption, result.lyrics, result.keyscale, result.language, result.raw_text):
            assert not CONTROL.search(text)
    assert strip_control_characters("a\x00b\tc\nd\r\x1b[0m\x7f\x85") == "ab\tc\nd[0m"


@pytest.mark.parametrize("constrained", [True, False])
@pytest.mark.parametrize("mode", ["create_sample", "format_sample"])
def test_every_description_is_valid_generate_input(planner: Planner, mode: str, constrained: bool) -> None:
    inputs = {"create_sample": dict(query="a sad waltz about rain", instrumental=False),
              "format_sample": dict(caption="latin pop", lyrics="[Verse]\nhola")}[mode]  # fmt: skip
    for seed, budget in ((0, 40), (1, 96), (2, 60), (3, 96)):
        result = _describe(planner, mode=mode, seed=seed, max_new_tokens=budget,
                           use_constrained_decoding=constrained, **inputs)  # fmt: skip
        _as_generate_input(result).validate()
        assert result.caption or result.lyrics
