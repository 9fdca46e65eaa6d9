"""acestep-grpc client SDK: the ACE-Step 1.5 API types, validation, audio I/O and gRPC clients."""

from acestep_client.errors import (
    AceStepError,
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from acestep_client.types import GenerationConfig, GenerationParams, GenerationResult

__all__ = [
    "AceStepError",
    "Cancelled",
    "FailedPrecondition",
    "GenerationConfig",
    "GenerationParams",
    "GenerationResult",
    "InvalidArgument",
    "NotFound",
    "ResourceExhausted",
]
