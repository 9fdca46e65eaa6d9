"""Errors shared by the SDK, the model cores and the servers.

Model code raises these plain Python exceptions; the servers map them onto gRPC status codes, so the
model packages never import grpc.
"""

from __future__ import annotations


class AceStepError(Exception):
    """Base class of every error this project raises on purpose."""


class InvalidArgument(AceStepError, ValueError):
    """A request field is out of range or inconsistent. Maps to INVALID_ARGUMENT.

    The message always names the field and what is allowed, e.g. ``bpm must be in 30-300, got 12``.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class FailedPrecondition(AceStepError):
    """The request is valid but this deployment cannot serve it (e.g. lego on a turbo model)."""


class NotFound(AceStepError):
    """A named model, checkpoint file or state-dict key does not exist."""


class Cancelled(AceStepError):
    """The caller cancelled, or its deadline passed; the work stopped between steps."""


class ResourceExhausted(AceStepError):
    """A bounded queue is full or memory ran out."""
