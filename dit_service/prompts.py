"""Prompt templates and task instructions (model-dit.md §3.2, §5)."""

from __future__ import annotations

from acestep_client.constants import DEFAULT_INSTRUCTION

COVER_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
REPAINT_INSTRUCTION = "Repaint the mask area based on the given conditions:"

TASK_INSTRUCTIONS = {
    "text2music": DEFAULT_INSTRUCTION,
    "cover": COVER_INSTRUCTION,
    "repaint": REPAINT_INSTRUCTION,
    "lego": "Generate the track based on the audio context:",
    "extract": "Extract the track from the audio:",
    "complete": "Complete the input track:",
    "cover-nofsq": COVER_INSTRUCTION,  # upstream gives it cover's instruction
}


def lego_instruction(track: str) -> str:
    return f"Generate the {track.upper()} track based on the audio context:"


def extract_instruction(track: str) -> str:
    return f"Extract the {track.upper()} track from the audio:"


def complete_instruction(tracks: list[str]) -> str:
    return f"Complete the input track with {' | '.join(t.upper() for t in tracks)}:"


def normalise_instruction(instruction: str) -> str:
    """The reference appends ':' when the instruction lacks it."""
    instruction = instruction.strip()
    return instruction if instruction.endswith(":") else instruction + ":"


def metas_string(bpm: int | None, timesignature: str, keyscale: str, duration_seconds: float | None) -> str:
    bpm_text = str(int(bpm)) if bpm else "N/A"
    duration_text = f"{int(duration_seconds)} seconds" if duration_seconds else "30 seconds"
    return (
        f"- bpm: {bpm_text}\n"
        f"- timesignature: {timesignature or 'N/A'}\n"
        f"- keyscale: {keyscale or 'N/A'}\n"
        f"- duration: {duration_text}\n"
    )


def caption_prompt(instruction: str, caption: str, metas: str) -> str:
    instruction = normalise_instruction(instruction)
    return f"# Instruction\n{instruction}\n\n# Caption\n{caption}\n\n# Metas\n{metas}<|endoftext|>\n"


def lyric_prompt(language: str, lyrics: str) -> str:
    return f"# Languages\n{language}\n\n# Lyric\n{lyrics}<|endoftext|>"


def is_cover_instruction(instruction: str) -> bool:
    lowered = instruction.lower()
    return "generate audio semantic tokens" in lowered and "based on the given conditions" in lowered
