"""Prompt text (vs. the checkpoint's chat template and the documented strings), CoT parse/format."""

from __future__ import annotations

import pytest

from lm_service import prompts
from lm_service.cot import format_cot, parse_cot
from lm_service.planner import codes_to_string

SYS = "<|im_start|>system\n# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n<|im_end|>\n"


@pytest.mark.parametrize(
    ("caption", "lyrics"),
    [("calm piano", "[Verse]\nhello"), ("", ""), ("a: b #c", "line1\n\nline2"), ("中文 caption", "[Instrumental]")],
)
def test_phase1_prompt_equals_chat_template(planner, caption: str, lyrics: str) -> None:
    rendered = planner.tokenizer.apply_chat_template(
        [
            {"role": "system", "content": f"# Instruction\n{prompts.LM_INSTRUCTION}\n\n"},
            {"role": "user", "content": f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompts.phase1_prompt(caption, lyrics) == rendered
    user = f"<|im_start|>user\n# Caption\n{caption}\n\n# Lyric\n{lyrics}\n<|im_end|>\n"
    assert rendered == SYS + user + "<|im_start|>assistant\n"


def _template(tokenizer, user: str) -> str:
    system = {"role": "system", "content": f"# Instruction\n{prompts.LM_INSTRUCTION}\n\n"}
    return tokenizer.apply_chat_template(
        [system, {"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )


def test_phase2_prompt_leaves_the_assistant_turn_open(planner) -> None:
    """Upstream #1126: codes continue the assistant turn right after ``</think>\\n\\n`` (the training layout),
    i.e. the template's rendering of the full assistant message without its closing ``<|im_end|>``."""
    cot = "<think>\nbpm: 120\ncaption: x\n</think>"
    user = "# Caption\ncap\n\n# Lyric\nly\n"
    prompt = prompts.phase2_prompt("cap", "ly", cot)
    assert prompt == _template(planner.tokenizer, user) + cot + "\n\n"
    closed = planner.tokenizer.apply_chat_template(
        [
            {"role": "system", "content": f"# Instruction\n{prompts.LM_INSTRUCTION}\n\n"},
            {"role": "user", "content": user},
            {"role": "assistant", "content": cot},
        ],
        tokenize=False,
    )
    assert closed == prompt + "<|im_end|>\n"
    assert prompt.endswith("<|im_start|>assistant\n<think>\nbpm: 120\ncaption: x\n</think>\n\n")


@pytest.mark.parametrize(
    ("negative", "user"), [("NO USER INPUT", "NO USER INPUT"), ("", "NO USER INPUT"), ("  ", "NO USER INPUT"),
                           ("harsh noise", "harsh noise")]
)  # fmt: skip
def test_phase2_negative_prompt_is_the_bare_negative_prompt(planner, negative: str, user: str) -> None:
    """The CFG uncond carries neither caption nor lyrics; its CoT is the empty one the template renders."""
    prompt = prompts.phase2_negative_prompt(negative)
    assert prompt == _template(planner.tokenizer, user) + "<think>\n\n</think>\n\n"
    assert "# Caption" not in prompt and "# Lyric" not in prompt
    assert format_cot({}) == prompts.EMPTY_COT


def test_special_tokens_are_single_ids(planner) -> None:
    ids = planner.tokenizer.encode(prompts.phase1_prompt("x", "y"), add_special_tokens=False)
    table = planner.table
    im_start = planner.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids[0] == im_start
    assert ids.count(im_start) == 3
    assert ids.count(table.eos_id) == 2
    assert planner.tokenizer.encode("<|audio_code_65534|>", add_special_tokens=False) == [table.audio_code_base + 65534]
    assert len(planner.tokenizer) == planner.backend.vocab_size


def test_parse_cot_upstream_rules() -> None:
    text = (
        "<think>\nbpm: 120\ncaption: A calm piano\n  ballad with strings\nduration: 180\n"
        "keyscale: F# minor\nlanguage: en\ntimesignature: 4\n<|im_end|>"
    )
    meta = parse_cot(text)
    assert meta == {
        "bpm": 120,
        "caption": "A calm piano ballad with strings",
        "duration": 180,
        "keyscale": "F# minor",
        "language": "en",
        "timesignature": "4",
    }
    # The text is cut at the first audio code when there is no </think>.
    assert parse_cot("bpm: 90\n<|audio_code_1|>duration: 30") == {"bpm": 90}
    assert parse_cot("bpm: fast\n")["bpm"] == "fast"


def test_format_cot_yaml_and_roundtrip() -> None:
    meta = {"bpm": 120, "caption": "energetic, catchy chorus: perfect", "duration": "30", "keyscale": "B♭ major",
            "language": "no", "timesignature": "4/4"}  # fmt: skip
    cot = format_cot(meta)
    assert cot.startswith("<think>\nbpm: 120\ncaption: 'energetic, catchy chorus: perfect'\nduration: 30\n")
    assert "keyscale: B♭ major\nlanguage: 'no'\ntimesignature: 4\n</think>" in cot
    assert format_cot({}) == "<think>\n\n</think>"
    long_caption = " ".join(["word"] * 40)
    parsed = parse_cot(format_cot({"caption": long_caption, "bpm": 99}))
    assert parsed["caption"] == long_caption and parsed["bpm"] == 99


def test_codes_to_string() -> None:
    assert codes_to_string([0, 12, 63999]) == "<|audio_code_0|><|audio_code_12|><|audio_code_63999|>"
    assert codes_to_string([]) == ""


def test_an_empty_value_is_no_value() -> None:
    """``caption:`` followed by a blank line: upstream drops the key, so the Phase-2 CoT has no caption line."""
    parsed = parse_cot("<think>\nbpm: 90\ncaption:\n\nduration: 20\nkeyscale: C major\n")
    assert parsed == {"bpm": 90, "duration": 20, "keyscale": "C major"}
    assert "caption" not in format_cot(parsed)
