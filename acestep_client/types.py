"""The API's dataclasses, with exactly the field names, types and defaults of inference-api.md."""

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
