"""Tracing (SRE review, issue 12 point 14): one request through the three real servers is one trace, from the
SDK's client span down to the LM phases and the DiT's stages; with an OTLP endpoint a server exports its spans.

Spans are caught with opentelemetry-sdk's InMemorySpanExporter on this process's tracer provider (the stack's
servers run in this process); the OTLP test runs an orchestrator in its own process against a real OTLP/gRPC
receiver. Both skip without the ``tracing`` extra.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from acestep_client import AceStepClient, GenerationConfig, GenerationParams

pytest.importorskip("opentelemetry.sdk.trace", reason="the tracing extra is not installed")
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

ROOT = Path(__file__).resolve().parents[2]
GENERATE = "acestep.v1.MusicGenerationService/GenerateMusic"
PLAN = "acestep.v1.LanguageModelService/Plan"
SYNTHESIZE = "acestep.v1.DiffusionService/Synthesize"
# Only the duration given: the LM writes the CoT (lm.cot) and the codes (lm.codes).
GOOD = GenerationParams(caption="lofi beat", duration=10, thinking=True)


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # once per process; later tests reuse it
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # stops collecting: the provider outlives this module


def _wait_for(condition, failure: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


def test_one_request_is_one_trace_across_the_three_servers(stack, spans):
    spans.clear()
    with AceStepClient(stack.address) as client:
        assert client.generate(GOOD, GenerationConfig(batch_size=1)).success
    expected = {GENERATE, PLAN, SYNTHESIZE, "lm.cot", "lm.codes", "dit.encode", "dit.diffusion",
                "dit.vae_decode", "dit.vae_window"}

    def server_spans_ended() -> bool:
        names = {(s.name, s.kind) for s in spans.get_finished_spans()}
        return {(GENERATE, SpanKind.SERVER), (PLAN, SpanKind.SERVER), (SYNTHESIZE, SpanKind.SERVER)} <= names

    _wait_for(server_spans_ended, "the servers' spans never ended")
    finished = spans.get_finished_spans()
    (root,) = [s for s in finished if s.name == GENERATE and s.kind == SpanKind.CLIENT]
    assert root.parent is None  # the SDK's span starts the trace
    trace_id = root.context.trace_id
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    assert expected <= {s.name for s in in_trace}, expected - {s.name for s in in_trace}
    # Everything this request did is in that one trace (the model-list calls included).
    assert {s.context.trace_id for s in finished} == {trace_id}
    by_id = {s.context.span_id: s for s in in_trace}

    def parent(span):
        return by_id[span.parent.span_id]

    def one(name: str, kind: SpanKind = SpanKind.INTERNAL):
        (span,) = [s for s in in_trace if s.name == name and s.kind == kind]
        return span

    orchestrator = one(GENERATE, SpanKind.SERVER)
    assert parent(orchestrator) is root
    for method, stages in ((PLAN, ("lm.cot", "lm.codes")), (SYNTHESIZE, ("dit.encode", "dit.diffusion",
                                                                         "dit.vae_decode"))):
        call, served = one(method, SpanKind.CLIENT), one(method, SpanKind.SERVER)
        assert parent(call) is orchestrator and parent(served) is call  # the context crossed the wire
        for stage in stages:
            assert parent(one(stage)) is served, stage
        assert served.attributes["rpc.grpc.status_code"] == 0
    windows = [s for s in in_trace if s.name == "dit.vae_window"]
    assert windows and all(parent(w) is one("dit.vae_decode") for w in windows)
    assert one("dit.diffusion").attributes["steps"] == GOOD.inference_steps
    for span in in_trace:  # children lie within their parents
        if span.parent is not None and span.parent.span_id in by_id:
            assert parent(span).start_time <= span.start_time <= span.end_time


def test_a_cancelled_call_ends_its_spans_cancelled(stack, spans):
    spans.clear()
    with AceStepClient(stack.address) as client:
        events = client.stream(GenerationParams(caption="x", duration=60, thinking=False, use_cot_metas=False),
                               GenerationConfig(batch_size=1))
        next(events)
        events.close()  # the SDK cancels the call
    _wait_for(lambda: any(s.name == GENERATE and s.kind == SpanKind.SERVER for s in spans.get_finished_spans()),
              "the orchestrator's span never ended")
    codes = {s.kind: s.attributes["rpc.grpc.status_code"] for s in spans.get_finished_spans() if s.name == GENERATE}
    cancelled = grpc.StatusCode.CANCELLED.value[0]
    assert codes == {SpanKind.CLIENT: cancelled, SpanKind.SERVER: cancelled}


class _Collector:
    """A real OTLP/gRPC trace receiver: what an OpenTelemetry collector receives from the exporter."""

    def __init__(self):
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        received = self.received = []

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                received.append(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def span_names(self) -> set[str]:
        return {span.name for request in self.received for resource in request.resource_spans
                for scope in resource.scope_spans for span in scope.spans}

    def service_names(self) -> set[str]:
        return {attribute.value.string_value for request in self.received for resource in request.resource_spans
                for attribute in resource.resource.attributes if attribute.key == "service.name"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_exports_its_spans_over_otlp_when_given_an_endpoint():
    """An orchestrator with --otlp-endpoint (and no DiT to reach) exports the spans of a call it fails."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc", reason="the tracing extra is not installed")
    collector = _Collector()
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_BSP_SCHEDULE_DELAY": "100"}
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "--port", str(port), "--dit", f"127.0.0.1:{_free_port()}",
         "--otlp-endpoint", f"http://127.0.0.1:{collector.port}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with AceStepClient(f"127.0.0.1:{port}") as client:
            _wait_for(lambda: _serving(f"127.0.0.1:{port}") or process.poll() is not None, "no orchestrator")
            assert process.poll() is None, process.stderr.read()
            result = client.generate(GenerationParams(caption="x", duration=10, thinking=False,
                                                      use_cot_metas=False), GenerationConfig(batch_size=1))
        assert not result.success  # no DiT: UNAVAILABLE
        _wait_for(lambda: {GENERATE, "acestep.v1.DiffusionService/ListModels"} <= collector.span_names(),
                  f"spans exported: {collector.span_names()}")
        assert collector.service_names() == {"acestep-orchestrator"}
    finally:
        process.terminate()
        process.wait(30)
        collector.server.stop(0)


def _serving(address: str) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
