"""W3C trace context over gRPC metadata, through OpenTelemetry when it is installed.

OpenTelemetry is optional (``pip install 'acestep-grpc[tracing]'``): without it every function here is a
no-op, the SDK sends no trace headers and nothing else changes. With it, each SDK call is a CLIENT span
whose context travels in the ``traceparent`` / ``tracestate`` metadata, so the servers' spans join the
caller's trace. Spans are exported only where the application configured an OpenTelemetry SDK (the
servers: ``--otlp-endpoint``); the API alone records nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the SDK works the same without it
    trace = None  # type: ignore[assignment]

TRACER_NAME = "acestep"
Metadata = tuple[tuple[str, str], ...]
# Codes that say the server (or the way to it) failed, rather than the caller's request (OpenTelemetry's gRPC
# conventions mark a server span's status as an error only for these).
SERVER_ERROR_CODES = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE",
                                "DATA_LOSS"})


def enabled() -> bool:
    return trace is not None


def _tracer():
    return trace.get_tracer(TRACER_NAME)


def inject(metadata: Sequence[tuple[str, str]], span: Any = None) -> Metadata:
    """``metadata`` plus the trace context of ``span`` (else of the current span), as gRPC metadata."""
    if trace is None:
        return tuple(metadata)
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span) if span is not None else None)
    return (*metadata, *carrier.items())


def extract(metadata: Iterable[tuple[str, Any]] | None) -> Any:
    """The caller's trace context from its gRPC metadata (an empty context when it sent none)."""
    if trace is None:
        return None
    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    return propagate.extract(carrier)


def rpc_attributes(full_method: str, target: str = "") -> dict[str, Any]:
    """OpenTelemetry's RPC attributes of ``/package.Service/Method`` (or ``package.Service/Method``)."""
    service, _, method = full_method.strip("/").rpartition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    if target:
        attributes["server.address"] = target
    return attributes


def start_client_span(full_method: str, target: str = "") -> Any:
    """A CLIENT span for one RPC, not made current (it lives as long as the caller iterates the stream);
    None without OpenTelemetry."""
    if trace is None:
        return None
    name = full_method.strip("/")
    return _tracer().start_span(name, kind=SpanKind.CLIENT, attributes=rpc_attributes(name, target))


def end_span(span: Any, code_name: str = "OK", message: str = "") -> None:
    """End an RPC span with its gRPC status (error status for the codes that mean the server failed)."""
    if span is None or not span.is_recording():
        return
    span.set_attribute("rpc.grpc.status_code", _code_number(code_name))
    if code_name in SERVER_ERROR_CODES:
        span.set_status(Status(StatusCode.ERROR, f"{code_name}: {message}" if message else code_name))
    span.end()


def code_of(error: BaseException | None) -> tuple[str, str]:
    """(status code name, message) of how a call ended: OK, its RpcError's code, or CANCELLED when it was
    abandoned (the iterator closed early, the task cancelled)."""
    if error is None:
        return "OK", ""
    code = getattr(error, "code", None)
    if callable(code):
        try:
            return code().name, (error.details() or "") if hasattr(error, "details") else ""
        except Exception:  # an RpcError that is not a call (no code yet)
            pass
    return "CANCELLED", type(error).__name__


def _code_number(name: str) -> int:
    import grpc

    return grpc.StatusCode[name].value[0]


@contextmanager
def stage(name: str, parent: Any = None, **attributes: Any) -> Iterator[Any]:
    """A span for one stage of a request's work, child of ``parent`` (else of the current span). Not made
    current: it may stay open across a generator's yields, which another context may resume."""
    span = start_stage(name, parent, **attributes)
    try:
        yield span
    except Exception as exc:
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        if span is not None:
            span.end()


def start_stage(name: str, parent: Any = None, start_ns: int | None = None, **attributes: Any) -> Any:
    if trace is None:
        return None
    context = trace.set_span_in_context(parent) if parent is not None else None
    return _tracer().start_span(name, context=context, attributes=attributes, start_time=start_ns)


def record_stage(name: str, start_ns: int, end_ns: int | None = None, parent: Any = None, **attributes: Any) -> None:
    """A finished stage measured by the caller (wall-clock nanoseconds, ``time.time_ns()``), recorded at once:
    model loops time their stages anyway, and need no span open across their yields."""
    span = start_stage(name, parent, start_ns, **attributes)
    if span is not None:
        span.end(end_time=end_ns if end_ns is not None else time.time_ns())
