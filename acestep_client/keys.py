"""Deterministic audio keys, computed like the reference so files are named the same way."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from acestep_client.types import GenerationParams

# The one form audio_key gives: the only text the SDK names an output file after (the server's key is untrusted).
AUDIO_KEY_FORM = "36 characters, 8-4-4-4-12 lowercase hex digits"
_AUDIO_KEY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# GenerationParams fields added after the spec (upstream's later options: every field declared after the spec's
# last, cot_lyrics). At their default they are left out of the key, so a request that does not use them keeps
# the key (the file name) it had before they existed; any other value changes it.
_FIELDS = dataclasses.fields(GenerationParams)
_SPEC_END = [f.name for f in _FIELDS].index("cot_lyrics") + 1
LATER_DEFAULTS: dict[str, Any] = {
    f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    for f in _FIELDS[_SPEC_END:]
}


def _keyed(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` without the later fields that hold their default (an empty list counts as None)."""
    def at_default(name: str, value: Any) -> bool:
        default = LATER_DEFAULTS[name]
        return value == default or (default is None and isinstance(value, (list, tuple)) and not value)

    return {k: v for k, v in params.items() if k not in LATER_DEFAULTS or not at_default(k, v)}


def audio_key(params: dict[str, Any]) -> str:
    """SHA-256 of the params' sorted JSON, first 32 hex digits shaped 8-4-4-4-12."""
    text = json.dumps(_keyed(params), sort_keys=True, ensure_ascii=False)
    h = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def is_audio_key(text: object) -> bool:
    """True for a string of exactly :func:`audio_key`'s form (so it is a safe file name: no separator, no dots)."""
    return isinstance(text, str) and _AUDIO_KEY.fullmatch(text) is not None
