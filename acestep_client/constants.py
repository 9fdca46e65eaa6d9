"""Values and limits of the ACE-Step 1.5 API, shared by the SDK, the services and the tests."""

from __future__ import annotations

SAMPLE_RATE = 48_000
CHANNELS = 2

TASK_TYPES = ("text2music", "cover", "repaint", "lego", "extract", "complete", "cover-nofsq")
TASKS_NEEDING_SOURCE = ("cover", "repaint", "lego", "extract", "complete", "cover-nofsq")
# The models a deployment serves unless told otherwise: upstream's defaults (its LM download is 1.7B since 2026-04).
DEFAULT_DIT_MODEL = "acestep-v15-turbo"
DEFAULT_LM_MODEL = "acestep-5Hz-lm-1.7B"
TASKS_BASE_MODEL_ONLY = ("lego", "extract", "complete")
# How to get a model that runs them (named in FAILED_PRECONDITION messages, so the fix is one copy away).
BASE_MODEL_HINT = (
    "serve a base model: `acestep serve all --dit-model acestep-v15-base` "
    "(or `acestep serve dit --model acestep-v15-base`)"
)
TASKS_NAMING_TRACKS = ("lego", "extract", "complete")
# Files the SDK writes (GenerationConfig.audio_format), upstream's six; acestep_client.audio_io says which library
# encodes each. wav32 is a 32-bit float WAV (extension .wav).
AUDIO_FORMATS = ("flac", "wav", "mp3", "opus", "aac", "wav32")
# How audio chunks travel (GenerateMusicRequest.stream_encoding); only pcm_f32le is exact. Files on disk
# follow AUDIO_FORMATS whatever this is.
STREAM_ENCODINGS = ("pcm_f32le", "pcm_s16le", "flac", "opus")

TRACK_NAMES = (
    "vocals", "backing_vocals", "drums", "bass", "guitar", "keyboard",
    "percussion", "strings", "synth", "fx", "brass", "woodwinds",
)

DEFAULT_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"

# The languages the LM's constrained decoder may write (ISO 639-1, plus yue and "unknown").
VOCAL_LANGUAGES = (
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr", "he", "hi", "hr",
    "ht", "hu", "id", "is", "it", "ja", "ko", "la", "lt", "ms", "ne", "nl", "no", "pa", "pl", "pt", "ro",
    "ru", "sa", "sk", "sr", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "yue", "zh", "unknown",
)
TIME_SIGNATURES = ("2", "3", "4", "6")
# Also accepted from users: the spec's fraction spellings.
TIME_SIGNATURE_FRACTIONS = {"2/4": "2", "3/4": "3", "4/4": "4", "6/8": "6"}

BPM_RANGE = (30, 300)
DURATION_RANGE = (10.0, 600.0)
BATCH_SIZE_RANGE = (1, 8)
# Upstream documents 512 but cuts to what the models read instead of refusing; captions of its own
# examples and of create/format_sample run longer. The DiT reads the first 256 tokens of its caption
# prompt and reports a cut as a warning (GenerationDone.warnings).
MAX_CAPTION_CHARS = 4096
MAX_LYRICS_CHARS = 4096
MAX_INSTRUCTION_CHARS = 512
MAX_NEGATIVE_PROMPT_CHARS = 512
INFERENCE_STEPS_RANGE = (1, 100)  # turbo models allow 1-8; the DiT service checks that
TURBO_MAX_STEPS = 8
GUIDANCE_SCALE_RANGE = (1.0, 15.0)
LM_CFG_SCALE_RANGE = (1.0, 10.0)
LM_TEMPERATURE_RANGE = (0.0, 2.0)
LM_TOP_P_RANGE = (0.0, 1.0)
LM_TOP_K_MAX = 1000
SEED_MAX = 2**32 - 1
AUDIO_CODE_MAX = 65_534  # the LM has 65,535 code tokens; the DiT clamps to its 64,000-entry codebook
CODES_PER_SECOND = 5

# Sampling options (upstream 6d467e4's names, defaults and ranges; dit_service/sampling_options.py runs them).
# Kept here too so the SDK checks them without torch; tests/dit/test_sampling_contract.py pins the two equal.
SHIFT_RANGE = (1.0, 5.0)
INFER_METHODS = ("ode", "sde")
SAMPLER_MODES = ("euler", "heun")
VELOCITY_NORM_THRESHOLD_RANGE = (0.0, 5.0)
VELOCITY_EMA_FACTOR_RANGE = (0.0, 0.5)
DCW_MODES = ("low", "high", "double", "pix")
DCW_SCALER_RANGE = (0.0, 0.1)
DCW_HIGH_SCALER_RANGE = (0.0, 0.1)
DCW_WAVELETS = ("haar", "db2", "db4", "sym4", "sym8", "coif2")
MAX_TIMESTEPS_TURBO = 20  # steps of a custom schedule (values above the final 0) on turbo models
MAX_TIMESTEPS_BASE = 200  # ... on base/sft models

# Output options (upstream 6d467e4's names, defaults and ranges: the ranges of its UI; its Python API checks none).
FADE_DURATION_RANGE = (0.0, 10.0)  # fade_in_duration / fade_out_duration, seconds
NORMALIZATION_DB_RANGE = (-10.0, 0.0)  # normalization_db, dBFS peak
LATENT_SHIFT_RANGE = (-0.2, 0.2)
LATENT_RESCALE_RANGE = (0.5, 1.5)
MP3_BITRATES = ("128k", "192k", "256k", "320k")
MP3_SAMPLE_RATES = (44_100, 48_000)

# Editing options (upstream 6d467e4's names and defaults; dit_service/edit_options.py says where we differ).
RETAKE_VARIANCE_RANGE = (0.0, 1.0)
REPAINT_MODES = ("conservative", "balanced", "aggressive")
REPAINT_STRENGTH_RANGE = (0.0, 1.0)
REPAINT_LATENT_CROSSFADE_FRAMES_RANGE = (0, 100)  # 25 Hz latent frames (4 s)
CHUNK_MASK_MODES = ("explicit", "auto")
COVER_NOISE_STRENGTH_RANGE = (0.0, 1.0)
GLOBAL_CAPTION_MAX_CHARS = 4096  # as caption
REPAINT_WAV_CROSSFADE_SEC_RANGE = (0.0, 1.0)  # upstream checks none; its derived widths stay under 0.05 s
FLOW_EDIT_TASKS = ("text2music", "cover", "cover-nofsq")  # upstream's flow-edit overlay v1
FLOW_EDIT_N_RANGE = (0.0, 1.0)
FLOW_EDIT_N_AVG_RANGE = (1, 8)  # upstream's UI slider
# Logical model and adapter names (never paths): what a checkpoint folder or adapter file may be called.
MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
ADAPTER_SCALE_RANGE = (0.0, 1.0)  # upstream's /v1/lora/scale

# Uploaded audio (src_audio, reference_audio): what a file's header may declare, checked before the file is decoded in
# full, so a few bytes cannot expand into minutes of audio and gigabytes of server memory (acestep_client/uploads.py).
LATENT_FRAMES_PER_SECOND = 25  # the VAE's latent rate: one frame per 1,920 samples at 48 kHz
UPLOAD_SAMPLE_RATE_RANGE = (8_000, 192_000)  # Hz
UPLOAD_MAX_CHANNELS = 8  # the first two are used (a mono file is doubled), as upstream does
UPLOAD_MAX_SECONDS = DURATION_RANGE[1]
# The shortest source the VAE encodes: one latent frame. Shorter ones would give no latents at all (upstream fails
# there too); a reference is repeated to 30 s first (as upstream), so any length of it works.
MIN_SOURCE_SAMPLES = SAMPLE_RATE // LATENT_FRAMES_PER_SECOND
