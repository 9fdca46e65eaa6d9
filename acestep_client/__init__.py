"""acestep-grpc client SDK: the ACE-Step 1.5 API types, validation, audio I/O and gRPC clients."""

from acestep_client.constants import STREAM_ENCODINGS
from acestep_client.errors import (
    AceStepError,
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from acestep_client.types import (
    CreateSampleResult,
    FormatSampleResult,
    GenerationConfig,
    GenerationParams,
    GenerationResult,
    ModelInfo,
    UnderstandResult,
)

# The clients pull in grpc; model code imports acestep_client.errors/types and must not, so these
# names load on first use.
_LAZY = {
    "AceStepClient": "acestep_client.client",
    "AsyncAceStepClient": "acestep_client.client",
    "generate_music": "acestep_client.api",
    "understand_music": "acestep_client.text_modes",
    "create_sample": "acestep_client.text_modes",
    "format_sample": "acestep_client.text_modes",
    "RemoteDiT": "acestep_client.handles",
    "RemoteLM": "acestep_client.handles",
    "RemoteOrchestrator": "acestep_client.handles",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'acestep_client' has no attribute {name!r}")


__all__ = [
    "STREAM_ENCODINGS",
    "AceStepClient",
    "AceStepError",
    "AsyncAceStepClient",
    "Cancelled",
    "CreateSampleResult",
    "FailedPrecondition",
    "FormatSampleResult",
    "GenerationConfig",
    "GenerationParams",
    "GenerationResult",
    "InvalidArgument",
    "ModelInfo",
    "NotFound",
    "RemoteDiT",
    "RemoteLM",
    "RemoteOrchestrator",
    "ResourceExhausted",
    "UnderstandResult",
    "create_sample",
    "format_sample",
    "generate_music",
    "understand_music",
]
