"""Values and limits of the ACE-Step 1.5 API, shared by the SDK, the services and the tests."""

from __future__ import annotations

SAMPLE_RATE = 48_000
CHANNELS = 2

TASK_TYPES = ("text2music", "cover", "repaint", "lego", "extract", "complete")
TASKS_NEEDING_SOURCE = ("cover", "repaint", "lego", "extract", "complete")
TASKS_BASE_MODEL_ONLY = ("lego", "extract", "complete")
# How to get a model that runs them (named in FAILED_PRECONDITION messages, so the fix is one copy away).
BASE_MODEL_HINT = (
    "serve a base model: `acestep serve all --dit-model acestep-v15-base` "
    "(or `acestep serve dit --model acestep-v15-base`)"
)
TASKS_NAMING_TRACKS = ("lego", "extract", "complete")
AUDIO_FORMATS = ("flac", "wav", "mp3")
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
