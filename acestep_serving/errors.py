"""Map the project's exceptions onto gRPC status codes, once, for every server."""

from __future__ import annotations

import logging

import grpc

from acestep_client.errors import (
    AceStepError,
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

log = logging.getLogger(__name__)

_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Cancelled, grpc.StatusCode.CANCELLED),
]


class Unavailable(AceStepError):
    """The server is loading or draining; a client may retry elsewhere."""


_CODES.append((Unavailable, grpc.StatusCode.UNAVAILABLE))


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees; unexpected errors hide their traceback.

    A downstream call's status (the orchestrator calling LM/DiT) passes through unchanged.
    """
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code(), exc.details() or exc.code().name
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code, str(exc)
    if _is_out_of_memory(exc):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "out of accelerator memory; retry with a smaller batch or duration"
    log.exception("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


def _is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException, outcome: dict | None = None) -> None:
    """End the RPC with the status for ``exc``; records the code in a metrics ``outcome`` too."""
    code, message = status_for(exc)
    if outcome is not None:
        outcome["code"] = code
    await context.abort(code, message)
