"""Deterministic audio keys, computed like the reference so files are named the same way."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def audio_key(params: dict[str, Any]) -> str:
    """SHA-256 of the params' sorted JSON, first 32 hex digits shaped 8-4-4-4-12."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
    h = digest[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
