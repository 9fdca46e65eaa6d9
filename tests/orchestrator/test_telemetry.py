"""The orchestrator's record of its calls to replicas (orchestrator/telemetry.py through ReplicaPool): each
attempt's code and time, retries, calls no replica took, and the trace context each attempt sends.

Real gRPC servers (grpc.health.v1, which needs no model) stand in for replicas; a port nobody listens on is a
replica that is down.
"""

from __future__ import annotations

import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from acestep_client import tracing
from acestep_serving.metrics import ServiceMetrics
from orchestrator.replicas import ReplicaPool
from orchestrator.telemetry import BackendMetrics, BackendTelemetry


class _Replica(health_pb2_grpc.HealthServicer):
    """Answers Watch once (SERVING) and ends; keeps the metadata of each call."""

    def __init__(self):
        self.metadata: list[dict[str, str]] = []

    async def Watch(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
async def replica():
    servicer = _Replica()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(0)


def _down() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def _counts(metrics: ServiceMetrics, name: str) -> dict[tuple, float]:
    return {tuple(s.labels[k] for k in ("backend", "method", "code")): s.value
            for family in metrics.registry.collect() for s in family.samples if s.name == name and s.value}


async def _watch(pool: ReplicaPool) -> list:
    return [r async for r in pool.stream("Watch", health_pb2.HealthCheckRequest(), timeout=10)]


async def test_a_refusing_replica_is_counted_retried_and_the_next_one_answers(replica):
    address, _ = replica
    metrics = ServiceMetrics("orchestrator")
    pool = ReplicaPool([_down(), address], health_pb2_grpc.HealthStub,
                       telemetry=BackendTelemetry("lm", BackendMetrics(metrics)))
    try:
        assert len(await _watch(pool)) == 1  # the rotation starts at the down replica
    finally:
        await pool.close()
    assert _counts(metrics, "acestep_backend_requests_total") == {("lm", "Watch", "UNAVAILABLE"): 1.0,
                                                                  ("lm", "Watch", "OK"): 1.0}
    assert _counts(metrics, "acestep_backend_retries_total") == {("lm", "Watch", "UNAVAILABLE"): 1.0}
    assert _counts(metrics, "acestep_backend_no_replica_total") == {}
    latency = [s for f in metrics.registry.collect() for s in f.samples
               if s.name == "acestep_backend_request_duration_seconds_count" and s.labels["method"] == "Watch"]
    assert [s.value for s in latency] == [2.0]


async def test_a_call_no_replica_takes_is_counted_as_such():
    metrics = ServiceMetrics("orchestrator")
    pool = ReplicaPool([_down(), _down()], health_pb2_grpc.HealthStub,
                       telemetry=BackendTelemetry("dit", BackendMetrics(metrics)))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await _watch(pool)
    finally:
        await pool.close()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _counts(metrics, "acestep_backend_requests_total") == {("dit", "Watch", "UNAVAILABLE"): 2.0}
    assert _counts(metrics, "acestep_backend_retries_total") == {("dit", "Watch", "UNAVAILABLE"): 1.0}  # not the last
    assert _counts(metrics, "acestep_backend_no_replica_total") == {("dit", "Watch", "UNAVAILABLE"): 1.0}


async def test_an_abandoned_stream_is_counted_cancelled(replica):
    address, _ = replica
    metrics = ServiceMetrics("orchestrator")
    pool = ReplicaPool([address], health_pb2_grpc.HealthStub, telemetry=BackendTelemetry("lm", BackendMetrics(metrics)))
    try:
        stream = pool.stream("Watch", health_pb2.HealthCheckRequest(), timeout=10)
        await stream.__anext__()
        await stream.aclose()  # the caller went away mid-stream
    finally:
        await pool.close()
    assert _counts(metrics, "acestep_backend_requests_total") == {("lm", "Watch", "CANCELLED"): 1.0}


async def test_each_attempt_sends_its_own_span_s_trace_context(replica):
    """The replica's server span becomes the attempt span's child: W3C ``traceparent`` naming that span."""
    pytest.importorskip("opentelemetry.sdk.trace", reason="the tracing extra is not installed")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    if not isinstance(trace.get_tracer_provider(), TracerProvider):  # once per process
        trace.set_tracer_provider(TracerProvider())
    spans = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(spans))
    address, servicer = replica
    pool = ReplicaPool([address], health_pb2_grpc.HealthStub, telemetry=BackendTelemetry("lm"))
    try:
        await _watch(pool)
    finally:
        await pool.close()
        spans.shutdown()
    (span,) = [s for s in spans.get_finished_spans() if s.name == "acestep.v1.LanguageModelService/Watch"]
    context = span.get_span_context()
    version, trace_id, parent_id, _flags = servicer.metadata[0]["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert span.attributes["rpc.grpc.status_code"] == 0 and span.attributes["server.address"] == address
    assert tracing.enabled()
