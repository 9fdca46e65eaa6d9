"""Map the project's exceptions onto gRPC status codes, once, for every server."""

from __future__ import annotations

import logging
import traceback

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


# grpc-message travels percent-encoded in a header; clients drop headers over 8-16 KiB, which would turn a clear
# INVALID_ARGUMENT that echoes a 100 KB value into RESOURCE_EXHAUSTED. 1,000 UTF-8 bytes stay under 3 KiB encoded.
MAX_DETAILS_BYTES = 1000


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees; unexpected errors hide their traceback.

    A downstream call's status (the orchestrator calling LM/DiT) passes through unchanged.
    """
    code, message = _status_for(exc)
    return code, short_details(message)


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code(), exc.details() or exc.code().name
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code, str(exc)
    if _is_out_of_memory(exc):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "out of accelerator memory; retry with a smaller batch or duration"
    log.exception("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


def short_details(message: str) -> str:
    """``message`` cut to :data:`MAX_DETAILS_BYTES` of UTF-8 (on a character boundary), saying how much was cut."""
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_DETAILS_BYTES:
        return message
    kept = data[: MAX_DETAILS_BYTES - 40].decode("utf-8", "ignore")
    return f"{kept}... ({len(message) - len(kept)} more characters cut)"


def release_frames(exc: BaseException) -> None:
    """Drop the locals of the finished frames ``exc`` (and its causes) passed through.

    A traceback keeps every frame it crossed alive, and with them an upload's samples, latents and activations
    (gigabytes for a long source); frames and traceback form cycles that only a full collection frees, so a
    failed request's memory would stay held until then.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def _is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException, outcome: dict | None = None) -> None:
    """End the RPC with the status for ``exc``; records the code in a metrics ``outcome`` too."""
    code, message = status_for(exc)
    release_frames(exc)
    if outcome is not None:
        outcome["code"] = code
    await context.abort(code, message)
