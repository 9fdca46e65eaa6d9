from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_TYPE_UNSPECIFIED: _ClassVar[TaskType]
    TASK_TYPE_TEXT2MUSIC: _ClassVar[TaskType]
    TASK_TYPE_COVER: _ClassVar[TaskType]
    TASK_TYPE_REPAINT: _ClassVar[TaskType]
    TASK_TYPE_LEGO: _ClassVar[TaskType]
    TASK_TYPE_EXTRACT: _ClassVar[TaskType]
    TASK_TYPE_COMPLETE: _ClassVar[TaskType]
    TASK_TYPE_COVER_NOFSQ: _ClassVar[TaskType]

class AudioFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_FORMAT_UNSPECIFIED: _ClassVar[AudioFormat]
    AUDIO_FORMAT_FLAC: _ClassVar[AudioFormat]
    AUDIO_FORMAT_WAV: _ClassVar[AudioFormat]
    AUDIO_FORMAT_MP3: _ClassVar[AudioFormat]
    AUDIO_FORMAT_OPUS: _ClassVar[AudioFormat]
    AUDIO_FORMAT_AAC: _ClassVar[AudioFormat]
    AUDIO_FORMAT_WAV32: _ClassVar[AudioFormat]

class StreamEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_ENCODING_UNSPECIFIED: _ClassVar[StreamEncoding]
    STREAM_ENCODING_PCM_F32LE: _ClassVar[StreamEncoding]
    STREAM_ENCODING_PCM_S16LE: _ClassVar[StreamEncoding]
    STREAM_ENCODING_FLAC: _ClassVar[StreamEncoding]
    STREAM_ENCODING_OPUS: _ClassVar[StreamEncoding]

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_DIT: _ClassVar[ModelKind]
    MODEL_KIND_LM: _ClassVar[ModelKind]
    MODEL_KIND_ADAPTER: _ClassVar[ModelKind]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_QUEUED: _ClassVar[Stage]
    STAGE_ENCODE: _ClassVar[Stage]
    STAGE_LM_PHASE1: _ClassVar[Stage]
    STAGE_LM_PHASE2: _ClassVar[Stage]
    STAGE_DIFFUSION: _ClassVar[Stage]
    STAGE_DECODE: _ClassVar[Stage]
    STAGE_DONE: _ClassVar[Stage]
    STAGE_LM_DESCRIBE: _ClassVar[Stage]
TASK_TYPE_UNSPECIFIED: TaskType
TASK_TYPE_TEXT2MUSIC: TaskType
TASK_TYPE_COVER: TaskType
TASK_TYPE_REPAINT: TaskType
TASK_TYPE_LEGO: TaskType
TASK_TYPE_EXTRACT: TaskType
TASK_TYPE_COMPLETE: TaskType
TASK_TYPE_COVER_NOFSQ: TaskType
AUDIO_FORMAT_UNSPECIFIED: AudioFormat
AUDIO_FORMAT_FLAC: AudioFormat
AUDIO_FORMAT_WAV: AudioFormat
AUDIO_FORMAT_MP3: AudioFormat
AUDIO_FORMAT_OPUS: AudioFormat
AUDIO_FORMAT_AAC: AudioFormat
AUDIO_FORMAT_WAV32: AudioFormat
STREAM_ENCODING_UNSPECIFIED: StreamEncoding
STREAM_ENCODING_PCM_F32LE: StreamEncoding
STREAM_ENCODING_PCM_S16LE: StreamEncoding
STREAM_ENCODING_FLAC: StreamEncoding
STREAM_ENCODING_OPUS: StreamEncoding
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_DIT: ModelKind
MODEL_KIND_LM: ModelKind
MODEL_KIND_ADAPTER: ModelKind
STAGE_UNSPECIFIED: Stage
STAGE_QUEUED: Stage
STAGE_ENCODE: Stage
STAGE_LM_PHASE1: Stage
STAGE_LM_PHASE2: Stage
STAGE_DIFFUSION: Stage
STAGE_DECODE: Stage
STAGE_DONE: Stage
STAGE_LM_DESCRIBE: Stage

class GenerationParams(_message.Message):
    __slots__ = ("task_type", "instruction", "reference_audio", "src_audio", "audio_codes", "caption", "lyrics", "instrumental", "vocal_language", "bpm", "keyscale", "timesignature", "duration", "inference_steps", "seed", "guidance_scale", "use_adg", "cfg_interval_start", "cfg_interval_end", "repainting_start", "repainting_end", "audio_cover_strength", "thinking", "lm_temperature", "lm_cfg_scale", "lm_top_k", "lm_top_p", "lm_negative_prompt", "use_cot_metas", "use_cot_caption", "use_cot_lyrics", "use_cot_language", "use_constrained_decoding", "cot_bpm", "cot_keyscale", "cot_timesignature", "cot_duration", "cot_vocal_language", "cot_caption", "cot_lyrics", "shift", "infer_method", "timesteps", "sampler_mode", "velocity_norm_threshold", "velocity_ema_factor", "dcw_enabled", "dcw_mode", "dcw_scaler", "dcw_high_scaler", "dcw_wavelet", "fade_in_duration", "fade_out_duration", "enable_normalization", "normalization_db", "latent_shift", "latent_rescale", "retake_seed", "retake_variance", "repaint_mode", "repaint_strength", "repaint_latent_crossfade_frames", "repaint_wav_crossfade_sec", "chunk_mask_mode", "cover_noise_strength", "global_caption", "flow_edit_morph", "flow_edit_source_caption", "flow_edit_source_lyrics", "flow_edit_n_min", "flow_edit_n_max", "flow_edit_n_avg", "dit_model", "lm_model", "adapter", "adapter_scale")
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_AUDIO_FIELD_NUMBER: _ClassVar[int]
    SRC_AUDIO_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CODES_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    LYRICS_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENTAL_FIELD_NUMBER: _ClassVar[int]
    VOCAL_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    BPM_FIELD_NUMBER: _ClassVar[int]
    KEYSCALE_FIELD_NUMBER: _ClassVar[int]
    TIMESIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    USE_ADG_FIELD_NUMBER: _ClassVar[int]
    CFG_INTERVAL_START_FIELD_NUMBER: _ClassVar[int]
    CFG_INTERVAL_END_FIELD_NUMBER: _ClassVar[int]
    REPAINTING_START_FIELD_NUMBER: _ClassVar[int]
    REPAINTING_END_FIELD_NUMBER: _ClassVar[int]
    AUDIO_COVER_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    THINKING_FIELD_NUMBER: _ClassVar[int]
    LM_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    LM_CFG_SCALE_FIELD_NUMBER: _ClassVar[int]
    LM_TOP_K_FIELD_NUMBER: _ClassVar[int]
    LM_TOP_P_FIELD_NUMBER: _ClassVar[int]
    LM_NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    USE_COT_METAS_FIELD_NUMBER: _ClassVar[int]
    USE_COT_CAPTION_FIELD_NUMBER: _ClassVar[int]
    USE_COT_LYRICS_FIELD_NUMBER: _ClassVar[int]
    USE_COT_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    USE_CONSTRAINED_DECODING_FIELD_NUMBER: _ClassVar[int]
    COT_BPM_FIELD_NUMBER: _ClassVar[int]
    COT_KEYSCALE_FIELD_NUMBER: _ClassVar[int]
    COT_TIMESIGNATURE_FIELD_NUMBER: _ClassVar[int]
    COT_DURATION_FIELD_NUMBER: _ClassVar[int]
    COT_VOCAL_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    COT_CAPTION_FIELD_NUMBER: _ClassVar[int]
    COT_LYRICS_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    INFER_METHOD_FIELD_NUMBER: _ClassVar[int]
    TIMESTEPS_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_MODE_FIELD_NUMBER: _ClassVar[int]
    VELOCITY_NORM_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    VELOCITY_EMA_FACTOR_FIELD_NUMBER: _ClassVar[int]
    DCW_ENABLED_FIELD_NUMBER: _ClassVar[int]
    DCW_MODE_FIELD_NUMBER: _ClassVar[int]
    DCW_SCALER_FIELD_NUMBER: _ClassVar[int]
    DCW_HIGH_SCALER_FIELD_NUMBER: _ClassVar[int]
    DCW_WAVELET_FIELD_NUMBER: _ClassVar[int]
    FADE_IN_DURATION_FIELD_NUMBER: _ClassVar[int]
    FADE_OUT_DURATION_FIELD_NUMBER: _ClassVar[int]
    ENABLE_NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_DB_FIELD_NUMBER: _ClassVar[int]
    LATENT_SHIFT_FIELD_NUMBER: _ClassVar[int]
    LATENT_RESCALE_FIELD_NUMBER: _ClassVar[int]
    RETAKE_SEED_FIELD_NUMBER: _ClassVar[int]
    RETAKE_VARIANCE_FIELD_NUMBER: _ClassVar[int]
    REPAINT_MODE_FIELD_NUMBER: _ClassVar[int]
    REPAINT_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    REPAINT_LATENT_CROSSFADE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    REPAINT_WAV_CROSSFADE_SEC_FIELD_NUMBER: _ClassVar[int]
    CHUNK_MASK_MODE_FIELD_NUMBER: _ClassVar[int]
    COVER_NOISE_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_CAPTION_FIELD_NUMBER: _ClassVar[int]
    FLOW_EDIT_MORPH_FIELD_NUMBER: _ClassVar[int]
    FLOW_EDIT_SOURCE_CAPTION_FIELD_NUMBER: _ClassVar[int]
    FLOW_EDIT_SOURCE_LYRICS_FIELD_NUMBER: _ClassVar[int]
    FLOW_EDIT_N_MIN_FIELD_NUMBER: _ClassVar[int]
    FLOW_EDIT_N_MAX_FIELD_NUMBER: _ClassVar[int]
    FLOW_EDIT_N_AVG_FIELD_NUMBER: _ClassVar[int]
    DIT_MODEL_FIELD_NUMBER: _ClassVar[int]
    LM_MODEL_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_SCALE_FIELD_NUMBER: _ClassVar[int]
    task_type: TaskType
    instruction: str
    reference_audio: str
    src_audio: str
    audio_codes: str
    caption: str
    lyrics: str
    instrumental: bool
    vocal_language: str
    bpm: int
    keyscale: str
    timesignature: str
    duration: float
    inference_steps: int
    seed: int
    guidance_scale: float
    use_adg: bool
    cfg_interval_start: float
    cfg_interval_end: float
    repainting_start: float
    repainting_end: float
    audio_cover_strength: float
    thinking: bool
    lm_temperature: float
    lm_cfg_scale: float
    lm_top_k: int
    lm_top_p: float
    lm_negative_prompt: str
    use_cot_metas: bool
    use_cot_caption: bool
    use_cot_lyrics: bool
    use_cot_language: bool
    use_constrained_decoding: bool
    cot_bpm: int
    cot_keyscale: str
    cot_timesignature: str
    cot_duration: float
    cot_vocal_language: str
    cot_caption: str
    cot_lyrics: str
    shift: float
    infer_method: str
    timesteps: _containers.RepeatedScalarFieldContainer[float]
    sampler_mode: str
    velocity_norm_threshold: float
    velocity_ema_factor: float
    dcw_enabled: bool
    dcw_mode: str
    dcw_scaler: float
    dcw_high_scaler: float
    dcw_wavelet: str
    fade_in_duration: float
    fade_out_duration: float
    enable_normalization: bool
    normalization_db: float
    latent_shift: float
    latent_rescale: float
    retake_seed: int
    retake_variance: float
    repaint_mode: str
    repaint_strength: float
    repaint_latent_crossfade_frames: int
    repaint_wav_crossfade_sec: float
    chunk_mask_mode: str
    cover_noise_strength: float
    global_caption: str
    flow_edit_morph: bool
    flow_edit_source_caption: str
    flow_edit_source_lyrics: str
    flow_edit_n_min: float
    flow_edit_n_max: float
    flow_edit_n_avg: int
    dit_model: str
    lm_model: str
    adapter: str
    adapter_scale: float
    def __init__(self, task_type: _Optional[_Union[TaskType, str]] = ..., instruction: _Optional[str] = ..., reference_audio: _Optional[str] = ..., src_audio: _Optional[str] = ..., audio_codes: _Optional[str] = ..., caption: _Optional[str] = ..., lyrics: _Optional[str] = ..., instrumental: _Optional[bool] = ..., vocal_language: _Optional[str] = ..., bpm: _Optional[int] = ..., keyscale: _Optional[str] = ..., timesignature: _Optional[str] = ..., duration: _Optional[float] = ..., inference_steps: _Optional[int] = ..., seed: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., use_adg: _Optional[bool] = ..., cfg_interval_start: _Optional[float] = ..., cfg_interval_end: _Optional[float] = ..., repainting_start: _Optional[float] = ..., repainting_end: _Optional[float] = ..., audio_cover_strength: _Optional[float] = ..., thinking: _Optional[bool] = ..., lm_temperature: _Optional[float] = ..., lm_cfg_scale: _Optional[float] = ..., lm_top_k: _Optional[int] = ..., lm_top_p: _Optional[float] = ..., lm_negative_prompt: _Optional[str] = ..., use_cot_metas: _Optional[bool] = ..., use_cot_caption: _Optional[bool] = ..., use_cot_lyrics: _Optional[bool] = ..., use_cot_language: _Optional[bool] = ..., use_constrained_decoding: _Optional[bool] = ..., cot_bpm: _Optional[int] = ..., cot_keyscale: _Optional[str] = ..., cot_timesignature: _Optional[str] = ..., cot_duration: _Optional[float] = ..., cot_vocal_language: _Optional[str] = ..., cot_caption: _Optional[str] = ..., cot_lyrics: _Optional[str] = ..., shift: _Optional[float] = ..., infer_method: _Optional[str] = ..., timesteps: _Optional[_Iterable[float]] = ..., sampler_mode: _Optional[str] = ..., velocity_norm_threshold: _Optional[float] = ..., velocity_ema_factor: _Optional[float] = ..., dcw_enabled: _Optional[bool] = ..., dcw_mode: _Optional[str] = ..., dcw_scaler: _Optional[float] = ..., dcw_high_scaler: _Optional[float] = ..., dcw_wavelet: _Optional[str] = ..., fade_in_duration: _Optional[float] = ..., fade_out_duration: _Optional[float] = ..., enable_normalization: _Optional[bool] = ..., normalization_db: _Optional[float] = ..., latent_shift: _Optional[float] = ..., latent_rescale: _Optional[float] = ..., retake_seed: _Optional[int] = ..., retake_variance: _Optional[float] = ..., repaint_mode: _Optional[str] = ..., repaint_strength: _Optional[float] = ..., repaint_latent_crossfade_frames: _Optional[int] = ..., repaint_wav_crossfade_sec: _Optional[float] = ..., chunk_mask_mode: _Optional[str] = ..., cover_noise_strength: _Optional[float] = ..., global_caption: _Optional[str] = ..., flow_edit_morph: _Optional[bool] = ..., flow_edit_source_caption: _Optional[str] = ..., flow_edit_source_lyrics: _Optional[str] = ..., flow_edit_n_min: _Optional[float] = ..., flow_edit_n_max: _Optional[float] = ..., flow_edit_n_avg: _Optional[int] = ..., dit_model: _Optional[str] = ..., lm_model: _Optional[str] = ..., adapter: _Optional[str] = ..., adapter_scale: _Optional[float] = ...) -> None: ...

class SeedList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class GenerationConfig(_message.Message):
    __slots__ = ("batch_size", "allow_lm_batch", "use_random_seed", "seed_list", "single_seed", "lm_batch_chunk_size", "constrained_decoding_debug", "audio_format", "mp3_bitrate", "mp3_sample_rate")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_LM_BATCH_FIELD_NUMBER: _ClassVar[int]
    USE_RANDOM_SEED_FIELD_NUMBER: _ClassVar[int]
    SEED_LIST_FIELD_NUMBER: _ClassVar[int]
    SINGLE_SEED_FIELD_NUMBER: _ClassVar[int]
    LM_BATCH_CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINED_DECODING_DEBUG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    MP3_BITRATE_FIELD_NUMBER: _ClassVar[int]
    MP3_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    allow_lm_batch: bool
    use_random_seed: bool
    seed_list: SeedList
    single_seed: int
    lm_batch_chunk_size: int
    constrained_decoding_debug: bool
    audio_format: AudioFormat
    mp3_bitrate: str
    mp3_sample_rate: int
    def __init__(self, batch_size: _Optional[int] = ..., allow_lm_batch: _Optional[bool] = ..., use_random_seed: _Optional[bool] = ..., seed_list: _Optional[_Union[SeedList, _Mapping]] = ..., single_seed: _Optional[int] = ..., lm_batch_chunk_size: _Optional[int] = ..., constrained_decoding_debug: _Optional[bool] = ..., audio_format: _Optional[_Union[AudioFormat, str]] = ..., mp3_bitrate: _Optional[str] = ..., mp3_sample_rate: _Optional[int] = ...) -> None: ...

class AudioInput(_message.Message):
    __slots__ = ("data", "server_path", "format", "filename")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SERVER_PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    server_path: str
    format: AudioFormat
    filename: str
    def __init__(self, data: _Optional[bytes] = ..., server_path: _Optional[str] = ..., format: _Optional[_Union[AudioFormat, str]] = ..., filename: _Optional[str] = ...) -> None: ...

class EncodedAudio(_message.Message):
    __slots__ = ("frames", "channels", "latents_f32le", "codes", "duration_s", "num_samples")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    LATENTS_F32LE_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    frames: int
    channels: int
    latents_f32le: bytes
    codes: _containers.RepeatedScalarFieldContainer[int]
    duration_s: float
    num_samples: int
    def __init__(self, frames: _Optional[int] = ..., channels: _Optional[int] = ..., latents_f32le: _Optional[bytes] = ..., codes: _Optional[_Iterable[int]] = ..., duration_s: _Optional[float] = ..., num_samples: _Optional[int] = ...) -> None: ...

class LmMetadata(_message.Message):
    __slots__ = ("bpm", "caption", "duration", "keyscale", "language", "timesignature", "cot_text", "item_index")
    BPM_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    KEYSCALE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESIGNATURE_FIELD_NUMBER: _ClassVar[int]
    COT_TEXT_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    bpm: int
    caption: str
    duration: float
    keyscale: str
    language: str
    timesignature: str
    cot_text: str
    item_index: int
    def __init__(self, bpm: _Optional[int] = ..., caption: _Optional[str] = ..., duration: _Optional[float] = ..., keyscale: _Optional[str] = ..., language: _Optional[str] = ..., timesignature: _Optional[str] = ..., cot_text: _Optional[str] = ..., item_index: _Optional[int] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("item_index", "start_frame", "sample_rate_hz", "channels", "pcm_f32le", "encoding", "data", "num_frames", "scale")
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    START_FRAME_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PCM_F32LE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    item_index: int
    start_frame: int
    sample_rate_hz: int
    channels: int
    pcm_f32le: bytes
    encoding: StreamEncoding
    data: bytes
    num_frames: int
    scale: float
    def __init__(self, item_index: _Optional[int] = ..., start_frame: _Optional[int] = ..., sample_rate_hz: _Optional[int] = ..., channels: _Optional[int] = ..., pcm_f32le: _Optional[bytes] = ..., encoding: _Optional[_Union[StreamEncoding, str]] = ..., data: _Optional[bytes] = ..., num_frames: _Optional[int] = ..., scale: _Optional[float] = ...) -> None: ...

class Warning(_message.Message):
    __slots__ = ("field", "message")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    field: str
    message: str
    def __init__(self, field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "kind", "task_types", "min_inference_steps", "max_inference_steps", "default_inference_steps", "is_turbo", "loaded", "max_duration_s", "max_batch_size", "base_model", "adapter_format", "replicas", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPES_FIELD_NUMBER: _ClassVar[int]
    MIN_INFERENCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_INFERENCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_INFERENCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    IS_TURBO_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FORMAT_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ModelKind
    task_types: _containers.RepeatedScalarFieldContainer[TaskType]
    min_inference_steps: int
    max_inference_steps: int
    default_inference_steps: int
    is_turbo: bool
    loaded: bool
    max_duration_s: float
    max_batch_size: int
    base_model: str
    adapter_format: str
    replicas: _containers.RepeatedScalarFieldContainer[str]
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., task_types: _Optional[_Iterable[_Union[TaskType, str]]] = ..., min_inference_steps: _Optional[int] = ..., max_inference_steps: _Optional[int] = ..., default_inference_steps: _Optional[int] = ..., is_turbo: _Optional[bool] = ..., loaded: _Optional[bool] = ..., max_duration_s: _Optional[float] = ..., max_batch_size: _Optional[int] = ..., base_model: _Optional[str] = ..., adapter_format: _Optional[str] = ..., replicas: _Optional[_Iterable[str]] = ..., is_default: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("stage", "fraction", "step", "total_steps", "message")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    fraction: float
    step: int
    total_steps: int
    message: str
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., fraction: _Optional[float] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class TimeCosts(_message.Message):
    __slots__ = ("seconds",)
    class SecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    seconds: _containers.ScalarMap[str, float]
    def __init__(self, seconds: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ItemCodes(_message.Message):
    __slots__ = ("item_index", "codes")
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    item_index: int
    codes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, item_index: _Optional[int] = ..., codes: _Optional[_Iterable[int]] = ...) -> None: ...

class DescribeTask(_message.Message):
    __slots__ = ("understand", "create_sample", "format_sample", "sampling")
    UNDERSTAND_FIELD_NUMBER: _ClassVar[int]
    CREATE_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    understand: UnderstandInput
    create_sample: CreateSampleInput
    format_sample: FormatSampleInput
    sampling: LmTextSampling
    def __init__(self, understand: _Optional[_Union[UnderstandInput, _Mapping]] = ..., create_sample: _Optional[_Union[CreateSampleInput, _Mapping]] = ..., format_sample: _Optional[_Union[FormatSampleInput, _Mapping]] = ..., sampling: _Optional[_Union[LmTextSampling, _Mapping]] = ...) -> None: ...

class UnderstandInput(_message.Message):
    __slots__ = ("audio_codes",)
    AUDIO_CODES_FIELD_NUMBER: _ClassVar[int]
    audio_codes: str
    def __init__(self, audio_codes: _Optional[str] = ...) -> None: ...

class CreateSampleInput(_message.Message):
    __slots__ = ("query", "instrumental", "vocal_language")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENTAL_FIELD_NUMBER: _ClassVar[int]
    VOCAL_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    query: str
    instrumental: bool
    vocal_language: str
    def __init__(self, query: _Optional[str] = ..., instrumental: _Optional[bool] = ..., vocal_language: _Optional[str] = ...) -> None: ...

class FormatSampleInput(_message.Message):
    __slots__ = ("caption", "lyrics", "bpm", "duration", "keyscale", "timesignature", "language")
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    LYRICS_FIELD_NUMBER: _ClassVar[int]
    BPM_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    KEYSCALE_FIELD_NUMBER: _ClassVar[int]
    TIMESIGNATURE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    caption: str
    lyrics: str
    bpm: int
    duration: float
    keyscale: str
    timesignature: str
    language: str
    def __init__(self, caption: _Optional[str] = ..., lyrics: _Optional[str] = ..., bpm: _Optional[int] = ..., duration: _Optional[float] = ..., keyscale: _Optional[str] = ..., timesignature: _Optional[str] = ..., language: _Optional[str] = ...) -> None: ...

class LmTextSampling(_message.Message):
    __slots__ = ("temperature", "top_k", "top_p", "use_constrained_decoding", "constrained_decoding_debug", "seed", "max_new_tokens")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    USE_CONSTRAINED_DECODING_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINED_DECODING_DEBUG_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_k: int
    top_p: float
    use_constrained_decoding: bool
    constrained_decoding_debug: bool
    seed: int
    max_new_tokens: int
    def __init__(self, temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., use_constrained_decoding: _Optional[bool] = ..., constrained_decoding_debug: _Optional[bool] = ..., seed: _Optional[int] = ..., max_new_tokens: _Optional[int] = ...) -> None: ...

class SampleDescription(_message.Message):
    __slots__ = ("caption", "lyrics", "bpm", "duration", "keyscale", "language", "timesignature", "instrumental", "raw_text", "seed", "generated_tokens", "lm_time_seconds", "warnings")
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    LYRICS_FIELD_NUMBER: _ClassVar[int]
    BPM_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    KEYSCALE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESIGNATURE_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENTAL_FIELD_NUMBER: _ClassVar[int]
    RAW_TEXT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LM_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    caption: str
    lyrics: str
    bpm: int
    duration: float
    keyscale: str
    language: str
    timesignature: str
    instrumental: bool
    raw_text: str
    seed: int
    generated_tokens: int
    lm_time_seconds: float
    warnings: _containers.RepeatedCompositeFieldContainer[Warning]
    def __init__(self, caption: _Optional[str] = ..., lyrics: _Optional[str] = ..., bpm: _Optional[int] = ..., duration: _Optional[float] = ..., keyscale: _Optional[str] = ..., language: _Optional[str] = ..., timesignature: _Optional[str] = ..., instrumental: _Optional[bool] = ..., raw_text: _Optional[str] = ..., seed: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., lm_time_seconds: _Optional[float] = ..., warnings: _Optional[_Iterable[_Union[Warning, _Mapping]]] = ...) -> None: ...
