"""Tracing of the servers: one SERVER span per RPC, continuing the caller's trace (W3C context in the gRPC
metadata), spans per stage below it, and OTLP export when configured.

Off by default. ``--otlp-endpoint`` (env ``ACESTEP_OTLP_ENDPOINT``), else OpenTelemetry's own
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``, turns export on; it needs the
``tracing`` extra (opentelemetry-sdk and the OTLP gRPC exporter). Without an exporter the spans cost next to
nothing (OpenTelemetry's no-op tracer), and without OpenTelemetry installed they do not exist at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from acestep_client import tracing as client_tracing
from acestep_serving.preflight import StartupError

log = logging.getLogger(__name__)

_exporting_to: set[str] = set()


def otlp_endpoint(flag_value: str = "") -> str:
    """The OTLP/gRPC endpoint spans go to: the flag, else OpenTelemetry's variables; empty = off."""
    return (flag_value or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")).strip()


def configure_tracing(service_name: str, flag_value: str = "") -> str:
    """Export this process's spans over OTLP when an endpoint is configured; returns it ("" = off).

    Once per endpoint and process (``acestep serve all`` runs three servers in one process: one provider).
    Raises StartupError when an endpoint is set but the ``tracing`` extra is missing.
    """
    endpoint = otlp_endpoint(flag_value)
    if not endpoint or endpoint in _exporting_to:
        return endpoint
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise StartupError(
            f"--otlp-endpoint {endpoint}: tracing needs OpenTelemetry: pip install 'acestep-grpc[tracing]'"
        ) from None
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first configuration of this process
        name = os.environ.get("OTEL_SERVICE_NAME", service_name)
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        trace.set_tracer_provider(provider)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    _exporting_to.add(endpoint)
    log.info("exporting traces to %s", endpoint)
    return endpoint


@contextmanager
def server_span(full_method: str, context: grpc.aio.ServicerContext) -> Iterator[Any]:
    """The SERVER span of one RPC, current while the handler runs (so the calls it makes and the stages it
    runs become its children), child of the trace context the caller sent; None without OpenTelemetry.
    The caller ends it with :func:`finish`."""
    if not client_tracing.enabled():
        yield None
        return
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    parent = client_tracing.extract(context.invocation_metadata())
    span = trace.get_tracer(client_tracing.TRACER_NAME).start_span(
        full_method.strip("/"), context=parent, kind=SpanKind.SERVER,
        attributes=client_tracing.rpc_attributes(full_method),
    )  # fmt: skip
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        otel_context.detach(token)


def finish(span: Any, code: grpc.StatusCode) -> None:
    client_tracing.end_span(span, code.name)
