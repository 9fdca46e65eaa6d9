"""CoT text <-> metadata dict: upstream's parse rules and its yaml.dump based formatting."""

from __future__ import annotations

import re
from typing import Any

import yaml

from .vocab import COT_FIELDS

_AUDIO_CODE_RE = re.compile(r"<\|audio_code_(\d{1,9})\|>")  # longer cannot be a code (nor pass int())
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_LYRIC_HEADER_RE = re.compile(r"^#\s*lyrics?\s*\n", re.IGNORECASE)
_TRAILING_IM_END_RE = re.compile(r"<\|im_end\|>\s*$")


def postprocess_caption(text: str) -> str:
    """Join wrapped caption lines with single spaces (upstream's caption clean-up)."""
    return " ".join(line.strip() for line in text.split("\n") if line.strip())


def extract_codes(text: str) -> list[int]:
    return [int(m) for m in _AUDIO_CODE_RE.findall(text)]


def _reasoning_text(text: str) -> str:
    match = _THINK_RE.search(text)
    if match:
        return match.group(1).strip()
    return text.split("<|audio_code_")[0].strip()


def parse_cot(text: str) -> dict[str, Any]:
    """Parse generated CoT text into ``{bpm:int, caption, duration:int, keyscale, language, timesignature}``.

    Lines starting with ``<`` are ignored (the ``<think>`` tag); a line without leading whitespace that
    contains ``:`` opens a field; indented lines continue the current field (YAML wrapping).
    """
    fields: dict[str, list[str]] = {}
    current: str | None = None
    for line in _reasoning_text(text).split("\n"):
        if line.strip().startswith("<"):
            continue
        if line and not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            current = key.strip().lower()
            fields[current] = [value] if value.strip() else []
        elif current is not None and line[:1] in (" ", "\t"):
            fields[current].append(line)
    metadata: dict[str, Any] = {}
    for key, parts in fields.items():
        if not parts:  # ``caption:`` with nothing after it: no value (upstream drops the key)
            continue
        value = "\n".join(parts)
        if key in ("bpm", "duration"):
            stripped = value.strip()
            metadata[key] = int(stripped) if stripped.isdigit() else stripped
        elif key == "caption":
            metadata[key] = postprocess_caption(value)
        elif key in ("genres", "keyscale", "language", "timesignature"):
            metadata[key] = value.strip()
    return metadata


def format_cot(metadata: dict[str, Any]) -> str:
    """Phase-2 CoT block: ``<think>\\n{yaml of the six fields, sorted}\\n</think>`` (genres dropped)."""
    items: dict[str, Any] = {}
    for key in COT_FIELDS:
        value = metadata.get(key)
        if value is None:
            continue
        if key == "timesignature" and isinstance(value, str) and value.endswith("/4"):
            value = value.split("/")[0]
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        items[key] = value
    body = yaml.dump(items, allow_unicode=True, sort_keys=True).strip() if items else ""
    return f"<think>\n{body}\n</think>"


def extract_lyrics(text: str) -> str:
    """The text modes' lyrics: what follows ``</think>``, minus a leading ``# Lyric`` / ``# Lyrics`` header and a
    trailing ``<|im_end|>`` (upstream's header pattern is a typo that keeps ``# Lyrics``; both strip ``# Lyric``)."""
    _, found, after = text.partition("</think>")
    if not found:
        return ""
    after = _LYRIC_HEADER_RE.sub("", after.strip())
    return _TRAILING_IM_END_RE.sub("", after).strip()
