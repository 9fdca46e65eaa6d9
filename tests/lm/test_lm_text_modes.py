"""The LM's text modes (understand, create sample, format) on the tiny random checkpoint.

Random weights write garbage text, so the tests check what the constrained decoder guarantees:
prompts, a parseable CoT with every value in range, user metadata kept verbatim, ``</think>`` then
lyrics without audio codes, reproducibility from the seed, and cancellation.
"""

from __future__ import annotations

import pytest

from acestep_client.errors import Cancelled
from lm_service import prompts
from lm_service.cot import extract_lyrics, parse_cot
from lm_service.describe import DESCRIBE_PHASE, DescribeRequest, Description, prompt_for
from lm_service.planner import PhaseProgress, Planner
from lm_service.vocab import BPM_MAX, BPM_MIN, DURATION_MAX, DURATION_MIN, KEYSCALES, LANGUAGES, TIME_SIGNATURES

MAX_TOKENS = 80


def _system(instruction: str) -> str:
    return f"<|im_start|>system\n# Instruction\n{instruction}\n\n<|im_end|>\n"


def _describe(planner: Planner, **fields) -> tuple[list, Description]:
    events = list(planner.describe(DescribeRequest(max_new_tokens=MAX_TOKENS, **fields)))
    assert isinstance(events[-1], Description)
    return events[:-1], events[-1]


@pytest.mark.parametrize(
    ("req", "instruction", "user"),
    [
        (DescribeRequest("understand", audio_codes="<|audio_code_7|><|audio_code_1|>"),
         prompts.UNDERSTAND_INSTRUCTION, "<|audio_code_7|><|audio_code_1|>"),
        (DescribeRequest("understand"), prompts.UNDERSTAND_INSTRUCTION, "NO USER INPUT"),
        (DescribeRequest("create_sample", query="a soft love song", instrumental=True),
         prompts.INSPIRED_INSTRUCTION, "a soft love song\n\ninstrumental: true"),
        (DescribeRequest("create_sample", query="  "),
         prompts.INSPIRED_INSTRUCTION, "NO USER INPUT\n\ninstrumental: false"),
        (DescribeRequest("format_sample", caption="latin pop", lyrics="[Verse]\nhola"),
         prompts.REWRITE_INSTRUCTION, "# Caption\nlatin pop\n\n# Lyric\n[Verse]\nhola"),
        (DescribeRequest("format_sample"),
         prompts.REWRITE_INSTRUCTION, "# Caption\nNO USER INPUT\n\n# Lyric\n[Instrumental]"),
    ],
)  # fmt: skip
def test_prompts_equal_the_chat_template(planner: Planner, req: DescribeRequest, instruction: str, user: str) -> None:
    rendered = planner.tokenizer.apply_chat_template(
        [{"role": "system", "content": f"# Instruction\n{instruction}\n\n"}, {"role": "user", "content": user}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt_for(req) == rendered
    assert rendered == _system(instruction) + f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("mode", ["understand", "create_sample", "format_sample"])
def test_constrained_output_is_a_full_cot_then_lyrics_without_codes(planner: Planner, mode: str, seed: int) -> None:
    progress, result = _describe(planner, mode=mode, audio_codes="<|audio_code_3|>", query="q", seed=seed)
    assert progress and all(isinstance(p, PhaseProgress) and p.phase == DESCRIBE_PHASE for p in progress)
    text = result.raw_text
    assert text.startswith("<think>\n") and "</think>" in text
    cot = parse_cot(text)
    assert list(cot) == ["bpm", "caption", "duration", "keyscale", "language", "timesignature"]
    assert BPM_MIN <= result.bpm <= BPM_MAX and result.bpm == cot["bpm"]
    assert DURATION_MIN <= result.duration <= DURATION_MAX
    assert result.keyscale in KEYSCALES and result.language in LANGUAGES
    assert result.timesignature in TIME_SIGNATURES
    assert "<|audio_code_" not in text.partition("</think>")[2]
    assert result.lyrics == extract_lyrics(text) and result.seed == seed
    assert 0 < result.generated_tokens <= MAX_TOKENS


def test_format_sample_keeps_user_metadata_verbatim(planner: Planner) -> None:
    _, result = _describe(planner, mode="format_sample", caption="latin pop", lyrics="[Verse]\nhola", bpm=100,
                          duration=95.5, keyscale="Am", timesignature="3/4", language="es", seed=4)  # fmt: skip
    # 'Am' and '3/4' are written in the LM's canonical spelling; the CoT holds whole seconds, the result
    # the user's duration as given.
    assert "bpm: 100\n" in result.raw_text and "duration: 95\n" in result.raw_text
    assert (result.bpm, result.duration, result.keyscale, result.timesignature, result.language) == (
        100, 95.5, "A minor", "3", "es"
    )  # fmt: skip


def test_create_sample_writes_the_requested_language_and_instrumental_placeholder(planner: Planner) -> None:
    for seed in range(3):
        _, result = _describe(planner, mode="create_sample", query="q", vocal_language="bn", instrumental=True,
                              seed=seed)  # fmt: skip
        assert result.language == "bn" and result.instrumental
        assert result.lyrics  # the model's lyrics, or "[Instrumental]" when it wrote none


def test_same_seed_same_text_other_seed_other_text(planner: Planner) -> None:
    first = _describe(planner, mode="understand", audio_codes="<|audio_code_5|>", seed=11)[1]
    again = _describe(planner, mode="understand", audio_codes="<|audio_code_5|>", seed=11)[1]
    other = _describe(planner, mode="understand", audio_codes="<|audio_code_5|>", seed=12)[1]
    assert first.raw_text == again.raw_text
    assert first.raw_text != other.raw_text


def test_unconstrained_decoding_forces_nothing(planner: Planner) -> None:
    runs = [_describe(planner, mode="understand", use_constrained_decoding=False, seed=s)[1] for s in range(3)]
    texts = {run.raw_text for run in runs}
    assert not any(text.startswith("<think>\nbpm:") for text in texts)


def test_should_stop_cancels(planner: Planner) -> None:
    calls = {"n": 0}

    def stop_after_a_few() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(Cancelled):
        list(planner.describe(DescribeRequest("create_sample", query="q"), stop_after_a_few))


@pytest.mark.parametrize(
    ("text", "lyrics"),
    [
        ("<think>\nbpm: 90\n</think>\n\n# Lyric\n[Verse]\nla la<|im_end|>", "[Verse]\nla la"),
        ("<think>\n</think># Lyrics\nhello\n<|im_end|>\n", "hello"),
        ("<think>\nbpm: 90\n</think>\n\n", ""),
        ("bpm: 90 with no closing tag", ""),
    ],
)
def test_lyrics_are_what_follows_the_cot(text: str, lyrics: str) -> None:
    assert extract_lyrics(text) == lyrics
