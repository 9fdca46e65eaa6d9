"""The API's dataclasses, with exactly the field names, types and defaults of inference-api.md, plus the
fields upstream added since (6d467e4), under its names and defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from acestep_client.constants import DEFAULT_INSTRUCTION


@dataclass
class GenerationParams:
    """Everything about one piece of music; see inference-api.md for each field."""

    # Task & instruction
    task_type: str = "text2music"
    instruction: str = DEFAULT_INSTRUCTION
    # Audio uploads
    reference_audio: str | None = None
    src_audio: str | None = None
    # LM codes hints
    audio_codes: str = ""
    # Text inputs
    caption: str = ""
    lyrics: str = ""
    instrumental: bool = False
    # Metadata
    vocal_language: str = "unknown"
    bpm: int | None = None
    keyscale: str = ""
    timesignature: str = ""
    duration: float = -1.0
    # Advanced settings
    inference_steps: int = 8
    seed: int = -1
    guidance_scale: float = 7.0
    use_adg: bool = False
    cfg_interval_start: float = 0.0
    cfg_interval_end: float = 1.0
    repainting_start: float = 0.0
    repainting_end: float = -1
    audio_cover_strength: float = 1.0
    # 5 Hz language model
    thinking: bool = True
    lm_temperature: float = 0.85
    lm_cfg_scale: float = 2.0
    lm_top_k: int = 0
    lm_top_p: float = 0.9
    lm_negative_prompt: str = "NO USER INPUT"
    use_cot_metas: bool = True
    use_cot_caption: bool = True
    use_cot_lyrics: bool = False
    use_cot_language: bool = True
    use_constrained_decoding: bool = True
    # CoT generated values (filled in by the LM)
    cot_bpm: int | None = None
    cot_keyscale: str = ""
    cot_timesignature: str = ""
    cot_duration: float | None = None
    cot_vocal_language: str = "unknown"
    cot_caption: str = ""
    cot_lyrics: str = ""
    # Sampling (upstream 6d467e4's names and defaults; ranges in acestep_client.validation)
    shift: float = 3.0
    infer_method: str = "ode"
    timesteps: list[float] | None = None  # a custom schedule; overrides inference_steps and shift
    sampler_mode: str = "euler"
    velocity_norm_threshold: float = 0.0
    velocity_ema_factor: float = 0.0
    dcw_enabled: bool = True
    dcw_mode: str = "double"
    dcw_scaler: float = 0.05
    dcw_high_scaler: float = 0.02
    dcw_wavelet: str = "haar"
    # Output (upstream 6d467e4's names and defaults): latents * latent_rescale + latent_shift before the VAE;
    # on the decoded audio, peak normalisation to normalization_db dBFS, then linear fades (seconds).
    fade_in_duration: float = 0.0
    fade_out_duration: float = 0.0
    enable_normalization: bool = True
    normalization_db: float = -1.0
    latent_shift: float = 0.0
    latent_rescale: float = 1.0
    # Editing (upstream 6d467e4's names; defaults keep this project's repaint rule, see dit_service/edit_options.py).
    retake_seed: int = -1  # -1: derived from each item's seed; only used when retake_variance > 0
    retake_variance: float = 0.0  # 0-1: how far the initial noise moves toward the retake seed's noise
    repaint_mode: str = "balanced"  # conservative / balanced / aggressive: how long the source is injected
    repaint_strength: float = 0.5  # balanced only: 1 - fraction of steps that inject the source
    repaint_latent_crossfade_frames: int = 10  # 25 Hz frames blended inside each edge of the repainted span
    repaint_wav_crossfade_sec: float = 0.0  # decoded audio: source samples outside the span, crossfaded this long
    chunk_mask_mode: str = "explicit"  # explicit: mask = the span; auto: all ones (upstream's default)
    cover_noise_strength: float = 0.0  # > 0: start from the source renoised to t ≈ 1 - strength
    global_caption: str = ""  # SFT-stems models: the song-level "Global:" caption
    # Flow edit (upstream #1156): morph src_audio toward caption/lyrics; the source_* fields describe src_audio.
    flow_edit_morph: bool = False
    flow_edit_source_caption: str = ""
    flow_edit_source_lyrics: str = ""
    flow_edit_n_min: float = 0.0  # fraction of the schedule skipped before the edit
    flow_edit_n_max: float = 1.0  # fraction where the edit stops; the target alone denoises the rest
    flow_edit_n_avg: int = 1  # noise draws averaged per edit step
    # Models per request (logical names from ListModels; "" = the deployment's default).
    dit_model: str = ""
    lm_model: str = ""
    adapter: str = ""  # a LoRA/LoKr adapter of the DiT; "" = none
    adapter_scale: float = 1.0  # 0-1: the adapter's strength; 0 gives the base model's audio

    def validate(self) -> None:
        """Raise InvalidArgument naming the first field out of range."""
        from acestep_client.validation import validate_params

        validate_params(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationConfig:
    """Batch and output settings of one call."""

    batch_size: int = 2
    allow_lm_batch: bool = False
    use_random_seed: bool = True
    seeds: list[int] | int | None = None
    lm_batch_chunk_size: int = 8
    constrained_decoding_debug: bool = False
    audio_format: str = "flac"
    mp3_bitrate: str = "128k"  # mp3 files only
    mp3_sample_rate: int = 48000  # mp3 files only; 44100 resamples

    def validate(self) -> None:
        from acestep_client.validation import validate_config

        validate_config(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationResult:
    """What generate_music returns; ``audios[i]`` has path, tensor, key, sample_rate, params, silent."""

    audios: list[dict[str, Any]] = field(default_factory=list)
    status_message: str = ""
    extra_outputs: dict[str, Any] = field(default_factory=dict)
    success: bool = True
    error: str | None = None


@dataclass
class _SampleText:
    """Fields shared by the LM's text modes (the reference's understand/create/format results)."""

    caption: str = ""
    lyrics: str = ""
    bpm: int | None = None
    duration: float | None = None
    keyscale: str = ""
    language: str = ""
    timesignature: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class UnderstandResult(_SampleText):
    """What ``understand_music`` returns: the song described by its audio codes."""

    status_message: str = ""
    success: bool = True
    error: str | None = None


@dataclass
class CreateSampleResult(_SampleText):
    """What ``create_sample`` returns: a complete sample written from a free-text query."""

    instrumental: bool = False
    status_message: str = ""
    success: bool = True
    error: str | None = None


@dataclass
class FormatSampleResult(_SampleText):
    """What ``format_sample`` returns: the user's caption and lyrics, enhanced and with metadata."""

    status_message: str = ""
    success: bool = True
    error: str | None = None


@dataclass
class ModelInfo:
    """One model or adapter a deployment serves, as ``list_models()`` reports it (the ListModels message)."""

    name: str
    kind: str  # "dit", "lm" or "adapter"
    task_types: list[str] = field(default_factory=list)  # the tasks it runs (API names, e.g. "text2music")
    min_inference_steps: int = 0  # DiT: allowed diffusion steps (0 = not reported)
    max_inference_steps: int = 0
    default_inference_steps: int = 0
    is_turbo: bool = False
    loaded: bool = False  # in memory and ready on at least one replica
    max_duration_s: float = 0.0
    max_batch_size: int = 0
    base_model: str = ""  # adapter: the DiT model it applies to
    adapter_format: str = ""  # adapter: "lora" or "lokr"
    replicas: list[str] = field(default_factory=list)  # the backend addresses serving it
    is_default: bool = False  # what a request naming no model of its kind gets

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
