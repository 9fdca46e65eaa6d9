"""Phase-1 / Phase-2 prompt text, rendered exactly as upstream's Qwen3 chat template renders it.

The strings are built directly (not through ``apply_chat_template``) so that the prompt does not depend
on which template a checkpoint ships; ``tests/lm`` checks they equal the template rendering.

What reaches the LM (as upstream's generate flow): caption and lyrics in the user turn, verbatim.
User metadata (bpm, keyscale, timesignature, duration) never enters the prompt text; it is injected
verbatim into the CoT by the constrained decoder (Phase 1) or written into the CoT (Phase 2).
``instrumental`` and ``vocal_language`` do not change the LM prompt (upstream passes them only to the DiT).

Phase 2 follows upstream's CFG prompt fix (#1126, 2026-04-22): both codes prompts leave the assistant turn
open and end with ``{cot}\n\n`` so the first code follows ``</think>\n\n`` as in training, and the
unconditional user turn is the bare negative prompt (no caption, no lyrics), with the empty CoT.
Upstream's pre-fix uncond (caption and lyrics kept) survives there only as a Gradio debug toggle
(``use_legacy_cfg_prompt``, off), so it is not offered here.
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


def _user(caption: str, lyrics: str) -> str:
    return _turn("user", f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n")


GENERATION_PROMPT = f"{IM_START}assistant\n"


def phase1_prompt(caption: str, lyrics: str) -> str:
    """Conditional CoT prompt (P1c): the model continues after ``<|im_start|>assistant\\n``."""
    return _system() + _user(caption, lyrics) + GENERATION_PROMPT


def _open_assistant_turn(cot_text: str) -> str:
    """The CoT inside a still-open assistant turn, then the ``\\n\\n`` the template puts after ``</think>``."""
    return f"{GENERATION_PROMPT}{cot_text}\n\n"


def phase2_prompt(caption: str, lyrics: str, cot_text: str) -> str:
    """Codes prompt (P2c): ``cot_text`` (``format_cot``) sits in the open assistant turn; codes follow it."""
    return _system() + _user(caption, lyrics) + _open_assistant_turn(cot_text)


def phase2_negative_prompt(negative_prompt: str) -> str:
    """Unconditional codes prompt: the user turn is only the negative prompt (default text when it is not
    meaningful), with the empty CoT, so CFG pushes along the caption, lyrics and CoT together."""
    user = negative_prompt if has_meaningful_negative_prompt(negative_prompt) else DEFAULT_NEGATIVE_PROMPT
    return _system() + _turn("user", user) + _open_assistant_turn(EMPTY_COT)


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
