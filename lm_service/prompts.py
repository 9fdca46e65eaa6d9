"""Phase-1 / Phase-2 prompt text, rendered exactly as upstream's Qwen3 chat template renders it.

The strings are built directly (not through ``apply_chat_template``) so that the prompt does not depend
on which template a checkpoint ships; ``tests/lm`` checks they equal the template rendering.

What reaches the LM (as upstream's generate flow): caption and lyrics in the user turn, verbatim.
User metadata (bpm, keyscale, timesignature, duration) never enters the prompt text; it is injected
verbatim into the CoT by the constrained decoder (Phase 1) or written into the CoT (Phase 2).
``instrumental`` and ``vocal_language`` do not change the LM prompt (upstream passes them only to the DiT).
"""

from __future__ import annotations

from .vocab import IM_END, IM_START

LM_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
UNDERSTAND_INSTRUCTION = "Understand the given musical conditions and describe the audio semantics accordingly:"
INSPIRED_INSTRUCTION = "Expand the user's input into a more detailed and specific musical description:"
REWRITE_INSTRUCTION = "Format the user's input into a more detailed and specific musical description:"
DEFAULT_NEGATIVE_PROMPT = "NO USER INPUT"
EMPTY_COT = "<think>\n\n</think>"


def has_meaningful_negative_prompt(negative_prompt: str) -> bool:
    """Upstream treats the default text, empty and whitespace as 'no negative prompt'."""
    return bool(negative_prompt and negative_prompt.strip() and negative_prompt.strip() != DEFAULT_NEGATIVE_PROMPT)


def _turn(role: str, content: str) -> str:
    return f"{IM_START}{role}\n{content}{IM_END}\n"


def _system(instruction: str = LM_INSTRUCTION) -> str:
    return _turn("system", f"# Instruction\n{instruction}\n\n")


def _user(caption: str | None, lyrics: str) -> str:
    if caption is None:
        return _turn("user", f"# Lyric\n{lyrics}\n")
    return _turn("user", f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n")


GENERATION_PROMPT = f"{IM_START}assistant\n"


def phase1_prompt(caption: str, lyrics: str) -> str:
    """Conditional CoT prompt (P1c): the model continues after ``<|im_start|>assistant\\n``."""
    return _system() + _user(caption, lyrics) + GENERATION_PROMPT


def _closed_assistant_turn(cot_text: str) -> str:
    """The Qwen3 template's rendering of an assistant message holding ``<think>..</think>``."""
    reasoning = cot_text.split("</think>")[0].split("<think>")[-1].strip("\n")
    rest = cot_text.split("</think>")[-1].lstrip("\n")
    return f"{IM_START}assistant\n<think>\n{reasoning}\n</think>\n\n{rest}{IM_END}\n"


def phase2_prompt(caption: str, lyrics: str, cot_text: str) -> str:
    """Codes prompt (P2c): the CoT sits in a closed assistant turn; codes follow ``<|im_end|>\\n``."""
    return _system() + _user(caption, lyrics) + _closed_assistant_turn(cot_text)


def phase2_negative_prompt(caption: str, lyrics: str, negative_prompt: str) -> str:
    """Unconditional codes prompt: empty CoT; the caption is swapped only for a custom negative prompt."""
    used_caption = negative_prompt if has_meaningful_negative_prompt(negative_prompt) else caption
    return _system() + _user(used_caption, lyrics) + _closed_assistant_turn(EMPTY_COT)


def understand_prompt(audio_codes: str) -> str:
    """Codes -> metadata + lyrics (PU): the code string is the whole user turn."""
    return _system(UNDERSTAND_INSTRUCTION) + _turn("user", audio_codes) + GENERATION_PROMPT


def inspiration_prompt(query: str, instrumental: bool) -> str:
    """Free-text query -> a complete sample (PI, upstream's "simple mode")."""
    flag = "true" if instrumental else "false"
    return _system(INSPIRED_INSTRUCTION) + _turn("user", f"{query}\n\ninstrumental: {flag}") + GENERATION_PROMPT


def format_prompt(caption: str, lyrics: str) -> str:
    """Caption + lyrics -> enhanced caption, metadata, formatted lyrics (PF: no newline after the lyrics)."""
    user = _turn("user", f"# Caption\n{caption}\n\n# Lyric\n{lyrics}")
    return _system(REWRITE_INSTRUCTION) + user + GENERATION_PROMPT
