"""Request validation: every rule names the field and its allowed range.

Runs in the SDK before anything is sent and again in every server before any GPU work, so a bad
request costs nothing and a client in another language gets the same messages.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import TYPE_CHECKING

from acestep_client import constants as c
from acestep_client.errors import InvalidArgument

_MODEL_NAME = re.compile(c.MODEL_NAME_PATTERN)

if TYPE_CHECKING:
    from acestep_client.types import GenerationConfig, GenerationParams

_KEYSCALE = re.compile(r"^[A-Ga-g][#b♯♭]?\s*(major|minor|maj|min|m)?$", re.IGNORECASE)
_AUDIO_CODES = re.compile(r"^(\s*<\|audio_code_(\d+)\|>)*\s*$")
_CODE = re.compile(r"<\|audio_code_(\d+)\|>")
_MAX_CODE_DIGITS = len(str(c.AUDIO_CODE_MAX))  # more digits (past leading zeros) cannot be a code


def _number(name: str, value: object, *, integer: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise InvalidArgument(name, f"must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise InvalidArgument(name, f"must be finite, got {value!r}")
    return value


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters: a refused value may be megabytes long."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} items" if isinstance(value, (list, tuple)) else (
        f"{len(value) if isinstance(value, str) else len(text)} characters")
    return f"{text[:limit]}... ({size})"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check_range(name: str, value: object, low: float, high: float, *, integer: bool = False) -> None:
    number = _number(name, value, integer=integer)
    if not low <= number <= high:
        raise InvalidArgument(name, f"must be between {_fmt(low)} and {_fmt(high)}, got {value!r}")


def check_max_chars(name: str, value: object, limit: int) -> None:
    if not isinstance(value, str):
        raise InvalidArgument(name, f"must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidArgument(name, f"must be at most {limit} characters, got {len(value)}")


def _bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidArgument(name, f"must be true or false, got {value!r}")


def _seed(name: str, value: object) -> None:
    check_range(name, value, -1, c.SEED_MAX, integer=True)


def normalize_timesignature(value: str) -> str:
    """'4/4' -> '4'; the LM and DiT speak the numerator only."""
    value = value.strip()
    return c.TIME_SIGNATURE_FRACTIONS.get(value, value)


def normalize_keyscale(value: str) -> str:
    """'Am' -> 'A minor', 'F#maj' -> 'F# major'; 'C Major' stays as written (the LM matches case-blind)."""
    value = value.strip()
    match = _KEYSCALE.match(value)
    if not match or (match.group(1) or "").lower() in {"major", "minor"}:
        return value
    mode = "minor" if (match.group(1) or "").lower() in {"m", "min"} else "major"
    note = value[: len(value) - len(match.group(1) or "")].strip()
    return f"{note[0].upper()}{note[1:]} {mode}"


def check_keyscale(name: str, value: object) -> None:
    check_max_chars(name, value, 32)
    if value.strip() and not _KEYSCALE.match(value.strip()):
        raise InvalidArgument(name, f"must be a key like 'C major', 'F# minor' or 'Am' (or empty), got {shown(value)}")


def check_timesignature(name: str, value: object) -> None:
    check_max_chars(name, value, 8)
    if value.strip() and normalize_timesignature(value) not in c.TIME_SIGNATURES:
        allowed = ", ".join([*c.TIME_SIGNATURES, *c.TIME_SIGNATURE_FRACTIONS])
        raise InvalidArgument(name, f"must be one of {allowed} (or empty), got {shown(value)}")


def check_language(name: str, value: object, *, allow_empty: bool) -> None:
    check_max_chars(name, value, 16)
    if not (allow_empty and value == "") and value not in c.VOCAL_LANGUAGES:
        empty = " (or empty)" if allow_empty else ""
        raise InvalidArgument(name, f"must be one of {' '.join(c.VOCAL_LANGUAGES)}{empty}, got {shown(value)}")


def check_audio_codes(name: str, text: object, max_codes: int | None = None) -> None:
    """A string of ``<|audio_code_N|>`` tokens, N in 0-65534; ``max_codes`` caps their count."""
    check_max_chars(name, text, 600 * c.CODES_PER_SECOND * 24)
    if not text.strip():
        return
    if not _AUDIO_CODES.match(text):
        raise InvalidArgument(name, "must be a string of <|audio_code_N|> tokens, N in 0-65534")
    values = parse_audio_codes(text, name)
    if max_codes is not None and len(values) > max_codes:
        raise InvalidArgument(name, f"at most {max_codes} codes, got {len(values)}")
    bad = [n for n in values if n > c.AUDIO_CODE_MAX]
    if bad:
        raise InvalidArgument(name, f"code values must be in 0-{c.AUDIO_CODE_MAX}, got {bad[0]}")


def parse_audio_codes(text: str, name: str = "audio_codes") -> list[int]:
    """'<|audio_code_12|><|audio_code_7|>' -> [12, 7].

    A number too long to be a code is InvalidArgument naming ``name``, before ``int()`` meets it: Python refuses to
    convert strings over 4,300 digits (ValueError), and a long one costs quadratic time below that.
    """
    values = []
    for digits in _CODE.findall(text):
        significant = digits.lstrip("0")
        if len(significant) > _MAX_CODE_DIGITS:
            raise InvalidArgument(name, f"code values must be in 0-{c.AUDIO_CODE_MAX}, got a {len(significant)}-digit "
                                        f"number")
        values.append(int(significant or "0"))
    return values


def named_tracks(instruction: str) -> list[str]:
    """The known track names an instruction mentions, longest first so backing_vocals wins over vocals."""
    text = instruction.lower().replace(" ", "_")
    found = []
    for track in sorted(c.TRACK_NAMES, key=len, reverse=True):
        if track in text:
            found.append(track)
            text = text.replace(track, "")
    return found


def validate_params(p: GenerationParams) -> None:
    if p.task_type not in c.TASK_TYPES:
        raise InvalidArgument("task_type", f"must be one of {', '.join(c.TASK_TYPES)}, got {p.task_type!r}")
    check_max_chars("instruction", p.instruction, c.MAX_INSTRUCTION_CHARS)
    check_max_chars("caption", p.caption, c.MAX_CAPTION_CHARS)
    check_max_chars("lyrics", p.lyrics, c.MAX_LYRICS_CHARS)
    check_max_chars("lm_negative_prompt", p.lm_negative_prompt, c.MAX_NEGATIVE_PROMPT_CHARS)
    for name in ("cot_caption", "cot_keyscale", "cot_timesignature", "cot_vocal_language"):
        check_max_chars(name, getattr(p, name), c.MAX_CAPTION_CHARS)
    check_max_chars("cot_lyrics", p.cot_lyrics, c.MAX_LYRICS_CHARS)
    for name in ("reference_audio", "src_audio"):
        value = getattr(p, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidArgument(name, f"must be a non-empty file path or None, got {shown(value)}")
        if value is not None and "\x00" in value:
            raise InvalidArgument(name, f"must be a file path without NUL characters, got {shown(value)}")
    for name in ("instrumental", "use_adg", "thinking", "use_cot_metas", "use_cot_caption",
                 "use_cot_lyrics", "use_cot_language", "use_constrained_decoding"):
        _bool(name, getattr(p, name))

    if p.task_type == "text2music" and not (p.caption.strip() or p.lyrics.strip() or p.audio_codes.strip()):
        raise InvalidArgument("caption", "text2music needs a caption or lyrics (at least one), both are empty")
    codes_stand_in_for_source = p.task_type == "cover" and p.audio_codes.strip()
    if p.task_type in c.TASKS_NEEDING_SOURCE and not p.src_audio and not codes_stand_in_for_source:
        raise InvalidArgument("src_audio", f"task_type={p.task_type} needs a source audio file, got none")
    if p.task_type in c.TASKS_NAMING_TRACKS and not named_tracks(p.instruction):
        raise InvalidArgument(
            "instruction",
            f"task_type={p.task_type} needs an instruction naming a track, one of {', '.join(c.TRACK_NAMES)}; "
            f"got {shown(p.instruction)}",
        )

    check_language("vocal_language", p.vocal_language, allow_empty=False)
    if p.bpm is not None:
        check_range("bpm", p.bpm, *c.BPM_RANGE, integer=True)
    if p.cot_bpm is not None:
        check_range("cot_bpm", p.cot_bpm, *c.BPM_RANGE, integer=True)
    check_keyscale("keyscale", p.keyscale)
    check_timesignature("timesignature", p.timesignature)
    duration = _number("duration", p.duration)
    if duration > 0 and not c.DURATION_RANGE[0] <= duration <= c.DURATION_RANGE[1]:
        raise InvalidArgument("duration", f"must be between 10 and 600 seconds, or <= 0 for auto, got {p.duration!r}")
    if p.cot_duration is not None:
        check_range("cot_duration", p.cot_duration, *c.DURATION_RANGE)

    check_range("inference_steps", p.inference_steps, *c.INFERENCE_STEPS_RANGE, integer=True)
    _seed("seed", p.seed)
    check_range("guidance_scale", p.guidance_scale, *c.GUIDANCE_SCALE_RANGE)
    check_range("cfg_interval_start", p.cfg_interval_start, 0.0, 1.0)
    check_range("cfg_interval_end", p.cfg_interval_end, 0.0, 1.0)
    if p.cfg_interval_start > p.cfg_interval_end:
        raise InvalidArgument(
            "cfg_interval_start",
            f"must be <= cfg_interval_end ({p.cfg_interval_end:g}), got {p.cfg_interval_start:g}",
        )
    check_repainting(p.repainting_start, p.repainting_end)
    check_range("audio_cover_strength", p.audio_cover_strength, 0.0, 1.0)

    check_range("lm_temperature", p.lm_temperature, *c.LM_TEMPERATURE_RANGE)
    check_range("lm_cfg_scale", p.lm_cfg_scale, *c.LM_CFG_SCALE_RANGE)
    check_range("lm_top_k", p.lm_top_k, 0, c.LM_TOP_K_MAX, integer=True)
    check_range("lm_top_p", p.lm_top_p, *c.LM_TOP_P_RANGE)

    check_audio_codes("audio_codes", p.audio_codes)
    validate_sampling(p)
    validate_output(p)
    validate_editing(p)


def check_repainting(start: object, end: object, source_seconds: float | None = None) -> None:
    """The repainted audio is at most 600 s: the source, with silence before it for a negative ``start`` and after
    it for an ``end`` past its end, as the DiT pads it (the spec's maximum length).

    Without the source's length only what the span alone implies is checked.
    """
    limit = c.DURATION_RANGE[1]
    check_range("repainting_start", start, -limit, limit)
    end = _number("repainting_end", end)
    before = max(-start, 0.0)
    if end != -1 and not start < end <= limit - before:
        padding = f" with the {before:g} s of silence a negative repainting_start adds" if before else ""
        raise InvalidArgument(
            "repainting_end",
            f"must be -1 (end of audio) or in ({start:g}, {limit - before:g}] seconds: after repainting_start, and at "
            f"most {limit:g} s of audio{padding}; got {end!r}",
        )
    if source_seconds is not None and before + source_seconds > limit:  # the span alone fits: the source does not
        raise InvalidArgument("repainting_start", (
            f"must be at least {min(source_seconds - limit, 0):g} s with this {source_seconds:g} s source: the "
            f"repainted audio would be {before + source_seconds:g} s with the {before:g} s of silence before it, over "
            f"the {limit:g} s limit"))


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidArgument(name, f"must be one of {', '.join(allowed)}, got {shown(value)}")


def check_timesteps(name: str, value: object, max_steps: int = c.MAX_TIMESTEPS_BASE) -> None:
    """None or [] (no custom schedule), else numbers in 0-1, strictly decreasing, 1-``max_steps`` steps.

    A final 0 is optional and not counted as a step (the sampler ends at 0 either way).
    """
    if value is None:
        return
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InvalidArgument(name, f"must be a list of numbers in 0-1, e.g. [0.9, 0.6, 0.3], got {value!r}")
    for item in value:
        if not 0.0 <= _number(name, item) <= 1.0:
            raise InvalidArgument(name, f"values must be between 0 and 1, got {item!r}")
    if any(later >= earlier for earlier, later in itertools.pairwise(value)):
        raise InvalidArgument(name, f"values must be strictly decreasing, got {shown(list(value))}")
    steps = timestep_steps(value)
    if value and not 1 <= steps <= max_steps:
        raise InvalidArgument(name, f"must have 1-{max_steps} steps (values above the final 0), got {steps}")


def timestep_steps(timesteps: list[float] | tuple[float, ...] | None) -> int:
    """Steps a custom schedule runs: its values above the final 0 (0 when there is none)."""
    if not timesteps:
        return 0
    return len(timesteps) - (1 if timesteps[-1] == 0 else 0)


def validate_sampling(p: GenerationParams) -> None:
    """The sampler options; the turbo models' 20-step limit on timesteps is checked where the model is known."""
    check_range("shift", p.shift, *c.SHIFT_RANGE)
    check_choice("infer_method", p.infer_method, c.INFER_METHODS)
    check_timesteps("timesteps", p.timesteps)
    check_choice("sampler_mode", p.sampler_mode, c.SAMPLER_MODES)
    check_range("velocity_norm_threshold", p.velocity_norm_threshold, *c.VELOCITY_NORM_THRESHOLD_RANGE)
    check_range("velocity_ema_factor", p.velocity_ema_factor, *c.VELOCITY_EMA_FACTOR_RANGE)
    _bool("dcw_enabled", p.dcw_enabled)
    check_choice("dcw_mode", p.dcw_mode, c.DCW_MODES)
    check_range("dcw_scaler", p.dcw_scaler, *c.DCW_SCALER_RANGE)
    check_range("dcw_high_scaler", p.dcw_high_scaler, *c.DCW_HIGH_SCALER_RANGE)
    check_choice("dcw_wavelet", p.dcw_wavelet, c.DCW_WAVELETS)


def validate_output(p: GenerationParams) -> None:
    """Latent post-processing, normalisation and fades: upstream's UI ranges (its Python API checks none)."""
    check_range("fade_in_duration", p.fade_in_duration, *c.FADE_DURATION_RANGE)
    check_range("fade_out_duration", p.fade_out_duration, *c.FADE_DURATION_RANGE)
    _bool("enable_normalization", p.enable_normalization)
    check_range("normalization_db", p.normalization_db, *c.NORMALIZATION_DB_RANGE)
    check_range("latent_shift", p.latent_shift, *c.LATENT_SHIFT_RANGE)
    check_range("latent_rescale", p.latent_rescale, *c.LATENT_RESCALE_RANGE)



def validate_editing(p: GenerationParams) -> None:
    """Retake, repaint, chunk-mask and cover-noise options: upstream's names; ranges of its REST server and UI."""
    _seed("retake_seed", p.retake_seed)
    check_range("retake_variance", p.retake_variance, *c.RETAKE_VARIANCE_RANGE)
    check_choice("repaint_mode", p.repaint_mode, c.REPAINT_MODES)
    check_range("repaint_strength", p.repaint_strength, *c.REPAINT_STRENGTH_RANGE)
    check_range("repaint_latent_crossfade_frames", p.repaint_latent_crossfade_frames,
                *c.REPAINT_LATENT_CROSSFADE_FRAMES_RANGE, integer=True)
    check_choice("chunk_mask_mode", p.chunk_mask_mode, c.CHUNK_MASK_MODES)
    check_range("cover_noise_strength", p.cover_noise_strength, *c.COVER_NOISE_STRENGTH_RANGE)
    check_max_chars("global_caption", p.global_caption, c.GLOBAL_CAPTION_MAX_CHARS)
    check_range("repaint_wav_crossfade_sec", p.repaint_wav_crossfade_sec, *c.REPAINT_WAV_CROSSFADE_SEC_RANGE)
    validate_flow_edit(p)
    validate_models(p)


def validate_models(p: GenerationParams) -> None:
    """Model and adapter names are logical names, never paths; the scale is upstream's 0-1."""
    for name in ("dit_model", "lm_model", "adapter"):
        value = getattr(p, name)
        if not isinstance(value, str):
            raise InvalidArgument(name, f"must be a string, got {type(value).__name__}")
        if value and not _MODEL_NAME.fullmatch(value):
            raise InvalidArgument(name, f"must be a model name as ListModels reports it (letters, digits, '.', '_', "
                                        f"'-'; at most 128 characters; no paths), got {value[:64]!r}")
    check_range("adapter_scale", p.adapter_scale, *c.ADAPTER_SCALE_RANGE)


def validate_flow_edit(p: GenerationParams) -> None:
    """Flow edit: the window [n_min, n_max] inside 0-1, 1-8 draws, and a source to morph."""
    _bool("flow_edit_morph", p.flow_edit_morph)
    check_max_chars("flow_edit_source_caption", p.flow_edit_source_caption, c.MAX_CAPTION_CHARS)
    check_max_chars("flow_edit_source_lyrics", p.flow_edit_source_lyrics, c.MAX_LYRICS_CHARS)
    check_range("flow_edit_n_min", p.flow_edit_n_min, *c.FLOW_EDIT_N_RANGE)
    check_range("flow_edit_n_max", p.flow_edit_n_max, *c.FLOW_EDIT_N_RANGE)
    if p.flow_edit_n_max < p.flow_edit_n_min:
        raise InvalidArgument("flow_edit_n_max", f"must be >= flow_edit_n_min ({p.flow_edit_n_min}) and <= 1, "
                                                 f"got {p.flow_edit_n_max!r}")
    check_range("flow_edit_n_avg", p.flow_edit_n_avg, *c.FLOW_EDIT_N_AVG_RANGE, integer=True)
    if p.flow_edit_morph and p.task_type in c.FLOW_EDIT_TASKS and not p.src_audio:
        raise InvalidArgument("src_audio", f"flow_edit_morph=True morphs a source audio file; task_type="
                                           f"{p.task_type} got none")


def validate_config(cfg: GenerationConfig) -> None:
    check_range("batch_size", cfg.batch_size, *c.BATCH_SIZE_RANGE, integer=True)
    check_range("lm_batch_chunk_size", cfg.lm_batch_chunk_size, 1, c.BATCH_SIZE_RANGE[1], integer=True)
    for name in ("allow_lm_batch", "use_random_seed", "constrained_decoding_debug"):
        _bool(name, getattr(cfg, name))
    if cfg.audio_format not in c.AUDIO_FORMATS:
        raise InvalidArgument("audio_format",
                              f"must be one of {', '.join(c.AUDIO_FORMATS)}, got {shown(cfg.audio_format)}")
    if cfg.mp3_bitrate not in c.MP3_BITRATES:
        raise InvalidArgument("mp3_bitrate",
                              f"must be one of {', '.join(c.MP3_BITRATES)}, got {shown(cfg.mp3_bitrate)}")
    if isinstance(cfg.mp3_sample_rate, bool) or cfg.mp3_sample_rate not in c.MP3_SAMPLE_RATES:
        allowed = " or ".join(str(rate) for rate in c.MP3_SAMPLE_RATES)
        raise InvalidArgument("mp3_sample_rate", f"must be {allowed} (Hz), got {cfg.mp3_sample_rate!r}")
    seeds = cfg.seeds
    if seeds is None:
        return
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        _seed("seeds", seeds)
        return
    if not isinstance(seeds, (list, tuple)):
        raise InvalidArgument("seeds", f"must be a list of integers, an integer or None, got {type(seeds).__name__}")
    if len(seeds) > 64:
        raise InvalidArgument("seeds", f"must list at most 64 seeds, got {len(seeds)}")
    for i, seed in enumerate(seeds):
        _seed(f"seeds[{i}]", seed)


def validate_request(params: GenerationParams, config: GenerationConfig) -> None:
    validate_params(params)
    validate_config(config)
