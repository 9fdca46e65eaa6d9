"""Upstream-style request files (JSON) read into GenerationParams / GenerationConfig values.

``acestep generate --from-json FILE`` accepts what upstream ACE-Step 1.5 users already have: its example
files (``{"think": true, "caption": ..., "lyrics": ...}``), request bodies of its REST server (``prompt``,
``audio_duration``, ``key_scale``, ``time_signature``, camelCase spellings, a nested ``metas`` object) and
this project's own sidecars (every GenerationParams field by name, plus the sidecar's bookkeeping keys).

Decisions:
- Every key maps onto one API field (the alias table below); a key this project does not know, or knows
  but cannot honour (``model``, ``lm_backend``...), is left out and named in a warning, never a crash and
  never silently. Upstream's sampler options (``shift``, ``infer_method``, ``timesteps`` as a list or its
  REST server's comma-separated string, ``sampler_mode``, ``dcw_*``...) are fields by the same names, and so
  are its output options (``fade_in_duration``, ``enable_normalization``, ``latent_shift``, ``mp3_bitrate``...)
  and editing options (``retake_seed``, ``retake_variance``, ``repaint_mode``, ``repaint_strength``,
  ``chunk_mask_mode``, ``cover_noise_strength``, ``global_caption``...).
  Bookkeeping keys of this project's own outputs (sidecars, create-sample and format results) are skipped
  without a warning.
- Values are converted leniently where upstream is lenient (``"bpm": "120"``, ``"timesignature": 4``,
  ``"thinking": "true"``); a value that cannot be converted is InvalidArgument naming the file's key.
- ``null`` means "not set". Relative audio paths are read relative to the file's folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from acestep_client.errors import InvalidArgument
from acestep_client.types import GenerationConfig, GenerationParams

_PARAM_FIELDS = {f.name: f for f in fields(GenerationParams)}
_CONFIG_FIELDS = {f.name: f for f in fields(GenerationConfig)}

# Upstream spellings (REST server, example files, v1) -> the API's field names.
ALIASES: dict[str, str] = {
    "prompt": "caption", "tags": "caption",
    "key_scale": "keyscale", "keyScale": "keyscale",
    "time_signature": "timesignature", "timeSignature": "timesignature",
    "audio_duration": "duration", "audioDuration": "duration", "target_duration": "duration",
    "language": "vocal_language", "vocalLanguage": "vocal_language",
    "think": "thinking",
    "taskType": "task_type",
    "infer_step": "inference_steps", "inferenceSteps": "inference_steps",
    "guidanceScale": "guidance_scale",
    "src_audio_path": "src_audio", "srcAudioPath": "src_audio",
    "reference_audio_path": "reference_audio", "referenceAudioPath": "reference_audio",
    "audio_code_string": "audio_codes", "audioCodeString": "audio_codes",
    "repaintingStart": "repainting_start", "repaintingEnd": "repainting_end",
    "audioCoverStrength": "audio_cover_strength",
    "cot_language": "use_cot_language", "cot_metas": "use_cot_metas",  # (cot_caption is a field of its own)
    "constrained_decoding": "use_constrained_decoding", "constrainedDecoding": "use_constrained_decoding",
    "useRandomSeed": "use_random_seed", "batchSize": "batch_size", "audioFormat": "audio_format",
    "lmTemperature": "lm_temperature", "lmCfgScale": "lm_cfg_scale", "lmTopK": "lm_top_k", "lmTopP": "lm_top_p",
    "lmNegativePrompt": "lm_negative_prompt",
}
NESTED = ("metas", "metadata", "user_metadata")  # upstream's REST server accepts metadata in one of these
# Upstream fields this project does not serve: named in the warning as such rather than as unknown.
UNSUPPORTED = frozenset({
    "model", "lm_model_path", "lm_backend", "lm_repetition_penalty",
    "sample_mode", "sample_query", "description", "desc", "use_format", "format", "use_tiled_decode",
    "ai_token",
})
# Keys of this project's sidecars (acestep_client.sidecar) that are facts about a result, not inputs.
SIDECAR_KEYS = frozenset({"key", "audio_file", "sample_rate", "num_frames", "silent", "lm_metadata"})
# Keys of `acestep create-sample` / `format` results (fed back as requests): facts about that call.
RESULT_KEYS = frozenset({"status_message", "success", "error", "warnings", "raw_text", "generated_tokens",
                         "lm_time_seconds"})


@dataclass
class RequestFile:
    """What a request file asked for: API field -> value, and where each came from (for error messages)."""

    path: Path
    params: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # API field -> "FILE: key"
    ignored: list[str] = field(default_factory=list)  # keys left out, for the warning
    unsupported: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        notes = []
        if self.unsupported:
            notes.append(f"{self.path}: ignored upstream field(s) this server does not support: "
                         f"{', '.join(sorted(self.unsupported))}")
        if self.ignored:
            notes.append(f"{self.path}: ignored unknown field(s): {', '.join(sorted(self.ignored))}")
        return notes


def _kind(api_field: str) -> type:
    """bool, int, float or str, from the dataclass annotation ("int | None" -> int)."""
    spec = _PARAM_FIELDS.get(api_field) or _CONFIG_FIELDS[api_field]
    first = str(spec.type).split(" | ")[0].strip()
    return {"bool": bool, "int": int, "float": float}.get(first, str)


def _convert(origin: str, api_field: str, value: Any) -> Any:
    if api_field == "seeds":
        return _seeds(origin, value)
    if api_field == "timesteps":
        return _timesteps(origin, value)
    if api_field == "audio_codes" and isinstance(value, list):  # upstream: one code string per item
        value = "".join(str(v) for v in value)
    kind = _kind(api_field)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.strip().lower() in {"true", "1", "yes"}
        raise InvalidArgument(origin, f"must be true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise InvalidArgument(origin, f"must be a number, got {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value
            if not isinstance(number, (int, float)):
                raise TypeError
        except (TypeError, ValueError):
            raise InvalidArgument(origin, f"must be a number, got {value!r}") from None
        if kind is int:
            if float(number) != int(number):
                raise InvalidArgument(origin, f"must be a whole number, got {value!r}")
            return int(number)
        return float(number)
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # "timesignature": 4
        return str(int(value)) if float(value).is_integer() else str(value)
    if not isinstance(value, str):
        raise InvalidArgument(origin, f"must be a string, got {type(value).__name__}")
    return value


def _seeds(origin: str, value: Any) -> list[int]:
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
    try:
        return [int(str(item).strip()) for item in items if str(item).strip()]
    except ValueError:
        raise InvalidArgument(origin, f"must be a list of integers like [1, 2, 3], got {value!r}") from None


def _timesteps(origin: str, value: Any) -> list[float] | None:
    """Upstream's REST form "0.97,0.76,...,0" or a JSON list; "" is no custom schedule (as upstream)."""
    problem = InvalidArgument(origin, f"must be a list of numbers like [0.9, 0.5, 0] or \"0.9,0.5,0\", got {value!r}")
    if isinstance(value, str):
        items: list[Any] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise problem
    numbers = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float, str)):
            raise problem
        try:
            numbers.append(float(item))
        except ValueError:
            raise problem from None
    return numbers or None


def _flatten(data: dict[str, Any]) -> list[tuple[str, Any]]:
    pairs = []
    for key, value in data.items():
        if key in NESTED and isinstance(value, dict):
            pairs.extend((f"{key}.{inner}", inner_value) for inner, inner_value in value.items())
        else:
            pairs.append((key, value))
    return pairs


def read_request_file(path: str | Path) -> RequestFile:
    """Parse ``path``; raises InvalidArgument naming the file (and key) on anything unreadable."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidArgument("from_json", f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument("from_json", f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument("from_json", f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument("from_json", f"{path} must hold one JSON object, got {type(data).__name__}")
    result = RequestFile(path)
    for key, value in _flatten(data):
        name = key.rsplit(".", 1)[-1]
        api_field = name if name in _PARAM_FIELDS or name in _CONFIG_FIELDS else ALIASES.get(name, name)
        if name in SIDECAR_KEYS or name in RESULT_KEYS:
            continue
        if api_field not in _PARAM_FIELDS and api_field not in _CONFIG_FIELDS:
            (result.unsupported if name in UNSUPPORTED else result.ignored).append(key)
            continue
        if value is None:
            continue
        origin = f"{path.name}: {key}"
        converted = _convert(origin, api_field, value)
        if api_field in ("src_audio", "reference_audio") and not Path(converted).expanduser().is_absolute():
            converted = str(path.parent / converted)
        target = result.params if api_field in _PARAM_FIELDS else result.config
        target[api_field] = converted
        result.origins[api_field] = origin
    return result
