"""JSON sidecars: each written item's params and audio codes beside its audio (``<key>.json`` next to ``<key>.flac``).

Upstream keeps a result's params and codes this way, and a sidecar is what makes a result reusable:
``acestep understand --codes @outputs/<key>.json``, ``acestep generate --audio-codes @<key>.json``
(a cover from the codes) and ``acestep generate --from-json <key>.json`` (the same request again).

Decisions:
- Written by the CLI only. ``generate_music(save_dir=...)`` writes audio only, as upstream's does.
- The keys are the API's field names (every GenerationParams field, final values: the seed used, the
  LM's codes, cot_* filled) plus ``key``, ``audio_file``, ``sample_rate``, ``num_frames`` and the item's
  ``lm_metadata``; ``--from-json`` reads them back and skips the bookkeeping keys.
- All or nothing: each file is written to a temporary name and renamed; if any fails, the sidecars
  already written are removed and the error raised, so no partial sidecar is ever left.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from acestep_client.errors import InvalidArgument
from acestep_client.types import GenerationResult

SIDECAR_SUFFIX = ".json"


def sidecar_path(audio_path: str | Path) -> Path:
    return Path(audio_path).with_suffix(SIDECAR_SUFFIX)


def _absolute(path: str) -> str:
    """``path`` made absolute, so the sidecar still points at it from elsewhere; as given when it is no path
    (the params come back from the server, which may send any text: a NUL byte, 10,000 characters)."""
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, ValueError, RuntimeError):
        return path


def sidecar_data(audio: dict[str, Any], lm_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """One item's sidecar content (JSON-ready)."""
    params = dict(audio["params"])
    for name in ("src_audio", "reference_audio"):
        if params.get(name):
            params[name] = _absolute(params[name])
    tensor = audio["tensor"]
    data: dict[str, Any] = {
        "key": audio["key"],
        "audio_file": Path(audio["path"]).name if audio.get("path") else None,
        "sample_rate": audio["sample_rate"],
        "num_frames": int(tensor.shape[-1]),
        **params,
    }
    if lm_metadata:
        data["lm_metadata"] = lm_metadata
    return data


def write_sidecars(result: GenerationResult) -> list[Path]:
    """A sidecar beside every written audio file; returns their paths. All or nothing (see module doc)."""
    by_item = result.extra_outputs.get("lm_metadata_by_item") or []
    written: list[Path] = []
    try:
        for index, audio in enumerate(result.audios):
            if not audio.get("path"):
                continue  # silent items have no file to sit beside
            lm = by_item[index] if index < len(by_item) else None
            path = sidecar_path(audio["path"])
            temporary = path.with_name(f".{path.name}.partial")
            try:
                temporary.write_text(json.dumps(sidecar_data(audio, lm), ensure_ascii=False, indent=2) + "\n",
                                     encoding="utf-8")
                os.replace(temporary, path)
            finally:
                temporary.unlink(missing_ok=True)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def codes_from_text(field: str, text: str, source: str = "") -> str:
    """Audio codes from a codes string, or from a sidecar's (any JSON object's) ``audio_codes``."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return text
    where = source or "the JSON text"
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(field, f"{where} is not valid JSON: {exc}") from None
    codes = data.get("audio_codes") if isinstance(data, dict) else None
    if isinstance(codes, list):
        codes = "".join(str(code) for code in codes)
    if not isinstance(codes, str) or not codes.strip():
        raise InvalidArgument(field, f"{where} has no audio_codes (a sidecar that `acestep generate` wrote has)")
    return codes
