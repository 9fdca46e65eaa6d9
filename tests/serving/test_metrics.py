"""What the services export (SRE review, issue 12 points 10-13): every series from startup at 0, the status a
call is counted under is what happened to it, process metrics in every exposition, no `service` label."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from acestep_serving.metrics import STATUS_CODES, ServiceMetrics, merged_registry
from acestep_serving.rpc import guarded_stream
from dit_service.server import DiTMetrics
from lm_service.server import LMMetrics
from orchestrator.server import OrchestratorMetrics

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def families(registry) -> dict:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def samples(registry, name: str) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for f in families(registry).values() for s in f.samples
            if s.name == name}


@pytest.mark.parametrize(("metrics", "methods"), [(LMMetrics, ("Plan", "Describe")),
                                                  (DiTMetrics, ("Synthesize", "EncodeAudio")),
                                                  (OrchestratorMetrics, ("GenerateMusic", "DescribeMusic"))])
def test_every_method_and_status_code_is_a_series_at_zero_from_startup(metrics, methods):
    """increase() sees a counter's first errors only when its series existed (at 0) before them."""
    m = metrics()
    counted = samples(m.registry, "acestep_requests_total")
    expected = {(("code", code), ("component", m.component), ("method", method))
                for method in methods for code in STATUS_CODES}
    assert set(counted) == expected and set(counted.values()) == {0.0}
    latency = samples(m.registry, "acestep_request_duration_seconds_count")
    assert set(latency) == {(("component", m.component), ("method", method)) for method in methods}
    for family in families(m.registry).values():
        for sample in family.samples:
            assert "service" not in sample.labels, sample  # the Prometheus Operator's label


def test_the_orchestrator_counts_backends_and_generations_by_every_code_from_startup():
    m = OrchestratorMetrics()
    backend = samples(m.registry, "acestep_backend_requests_total")
    assert (("backend", "lm"), ("code", "UNAVAILABLE"), ("component", "orchestrator"), ("method", "Plan")) in backend
    assert len(backend) == (3 + 3) * len(STATUS_CODES)
    assert len(samples(m.registry, "acestep_backend_no_replica_total")) == 6 * 2
    generations = samples(m.registry, "acestep_generations_total")
    assert (("code", "INTERNAL"), ("component", "orchestrator"), ("task_type", "text2music")) in generations
    assert len(generations) == 8 * len(STATUS_CODES)  # 7 task types and "unknown"


def test_lm_phases_are_named_and_throughput_is_a_counter():
    m = LMMetrics()
    phases = {dict(labels)["phase"] for labels in samples(m.registry, "acestep_lm_generated_tokens_total")}
    assert phases == {"cot", "codes", "text"}
    assert "acestep_lm_tokens_per_second" not in families(m.registry)  # the last request's value, forever
    m.phase_done("codes", seconds=2.0, generated=50, prompt=300)
    per_token = samples(m.registry, "acestep_lm_time_per_output_token_seconds_sum")
    assert per_token[(("component", "lm"), ("phase", "codes"))] == pytest.approx(0.04)
    assert samples(m.registry, "acestep_lm_request_prompt_tokens_sum")[(("component", "lm"), ("phase", "codes"))] == 300
    assert samples(m.registry, "acestep_lm_generated_tokens_total")[(("component", "lm"), ("phase", "codes"))] == 50


def test_latency_buckets_reach_an_hour():
    buckets = {dict(labels)["le"] for labels in samples(OrchestratorMetrics().registry,
                                                         "acestep_generation_duration_seconds_bucket")}
    assert {"600.0", "1800.0", "3600.0", "+Inf"} <= buckets


def test_build_info_model_info_and_load_time():
    m = DiTMetrics()
    (build,) = samples(m.registry, "acestep_build_info")
    assert dict(build)["component"] == "dit" and dict(build)["version"]
    assert samples(m.registry, "acestep_model_ready") == {(("component", "dit"),): 0.0}
    assert samples(m.registry, "acestep_model_info") == {}
    m.model_loaded("acestep-v15-turbo", "cpu", "float32", 12.5)
    assert samples(m.registry, "acestep_model_info") == {
        (("component", "dit"), ("device", "cpu"), ("dtype", "float32"), ("model", "acestep-v15-turbo")): 1.0}
    assert samples(m.registry, "acestep_model_load_duration_seconds") == {(("component", "dit"),): 12.5}
    assert samples(m.registry, "acestep_model_ready") == {(("component", "dit"),): 1.0}


def test_admission_limits_are_exported_with_the_load():
    m = ServiceMetrics("lm")
    admission = m.admission(max_running=3, max_waiting=7)
    assert admission.max_running == 3
    assert samples(m.registry, "acestep_concurrency_limit") == {(("component", "lm"),): 3.0}
    assert samples(m.registry, "acestep_queue_capacity") == {(("component", "lm"),): 7.0}


def test_one_exposition_of_three_services_has_process_metrics_once():
    """`acestep serve all`: the process's own metrics (CPU, memory, GC) appear once, the services' by component."""
    registries = [LMMetrics().registry, DiTMetrics().registry, OrchestratorMetrics().registry]
    merged = families(merged_registry(registries))  # the parser rejects a duplicate sample
    cpu = [s for s in merged["process_cpu_seconds"].samples if s.name == "process_cpu_seconds_total"]
    assert len(cpu) == 1 and cpu[0].value > 0
    assert len(merged["process_resident_memory_bytes"].samples) == 1
    assert "python_info" in merged and "python_gc_objects_collected" in merged
    ready = {s.labels["component"] for s in merged["acestep_model_ready"].samples}
    assert ready == {"lm", "dit", "orchestrator"}


def test_accelerator_memory_only_where_cuda_runs():
    import torch

    exported = families(ServiceMetrics("dit").registry)
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        assert not [name for name in exported if name.startswith("acestep_accelerator_memory")]
        return
    allocated = exported["acestep_accelerator_memory_allocated_bytes"].samples
    assert {s.labels["device"] for s in allocated} == {f"cuda:{i}" for i in range(torch.cuda.device_count())}


# --- the status a call is counted under -------------------------------------------------------------------------


class _Streams(health_pb2_grpc.HealthServicer):
    """Health.Watch as a stand-in streaming RPC through guarded_stream: the request's `service` picks the stream.

    "final": its final response, then nothing (a server that has not closed the stream yet);
    "progress": a response that is not final, then nothing; "silent": nothing at all.
    """

    def __init__(self, metrics: ServiceMetrics):
        self.metrics = metrics
        self.admission = metrics.admission(4, 4)
        self.ended: list[grpc.StatusCode] = []

    async def Watch(self, request, context):
        async def responses():
            if request.service == "final":
                yield health_pb2.HealthCheckResponse(status=SERVING)
            elif request.service == "progress":
                yield health_pb2.HealthCheckResponse(status=NOT_SERVING)
            await asyncio.Event().wait()

        async for response in guarded_stream(context, self.metrics, "Watch", self.admission, responses,
                                             self.ended.append, is_final=lambda r: r.status == SERVING):
            yield response


@pytest.fixture
async def server():
    metrics = ServiceMetrics("test", ("Watch",))
    servicer = _Streams(metrics)
    grpc_server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield health_pb2_grpc.HealthStub(channel), servicer
    await grpc_server.stop(0)


async def _counted(servicer: _Streams) -> str:
    deadline = time.monotonic() + 10
    while not servicer.ended:
        assert time.monotonic() < deadline, "the call was never counted"
        await asyncio.sleep(0.01)
    counts = {dict(k)["code"]: v for k, v in samples(servicer.metrics.registry, "acestep_requests_total").items() if v}
    assert counts == {servicer.ended[0].name: 1.0}
    return servicer.ended[0].name


async def test_a_call_cancelled_after_its_final_response_succeeded(server):
    stub, servicer = server
    call = stub.Watch(health_pb2.HealthCheckRequest(service="final"), timeout=60)
    assert (await call.read()).status == SERVING
    call.cancel()
    assert await _counted(servicer) == "OK"


async def test_a_call_cancelled_before_its_final_response_was_cancelled(server):
    stub, servicer = server
    call = stub.Watch(health_pb2.HealthCheckRequest(service="progress"), timeout=60)
    assert (await call.read()).status == NOT_SERVING
    call.cancel()
    assert await _counted(servicer) == "CANCELLED"


async def test_a_call_past_the_caller_s_deadline_is_deadline_exceeded(server):
    stub, servicer = server
    call = stub.Watch(health_pb2.HealthCheckRequest(service="silent"), timeout=0.3)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call.read()
    assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await _counted(servicer) == "DEADLINE_EXCEEDED"
