"""Operational behaviour of the servers: health, reflection, metrics, queue limits, API keys, chunking."""

from __future__ import annotations

import argparse
import asyncio
import threading
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from acestep_client import AceStepClient, GenerationConfig, GenerationParams
from acestep_client.convert import params_to_proto
from acestep_client.proto.acestep.v1 import dit_pb2, dit_pb2_grpc
from acestep_serving.flags import add_model_flags, add_server_flags
from acestep_serving.metrics import ServiceMetrics
from acestep_serving.runner import start_model_server
from dit_service import server as dit_server
from orchestrator.server import build_parser, start_orchestrator

FAST = GenerationParams(caption="x", thinking=False, duration=10, bpm=100, keyscale="D minor", timesignature="4")


def _health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


def _services(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        return {s.name for r in responses for s in r.list_services_response.service}


def test_health_is_not_serving_until_the_model_is_loaded():
    release = threading.Event()
    parser = argparse.ArgumentParser()
    add_server_flags(parser, 0)
    add_model_flags(parser, "m")
    args = parser.parse_args(["--port", "0", "--device", "cpu"])

    async def scenario():
        running = await start_model_server(
            args, "test", "acestep.v1.DiffusionService", dit_pb2_grpc.add_DiffusionServiceServicer_to_server,
            dit_pb2_grpc.DiffusionServiceServicer(), ServiceMetrics("test"), lambda device, dtype: release.wait(30),
            announce=lambda line: None)
        address = f"127.0.0.1:{running.port}"
        loop = asyncio.get_running_loop()
        before = await loop.run_in_executor(None, _health, address, "acestep.v1.DiffusionService")
        release.set()
        await running.loaded
        after = await loop.run_in_executor(None, _health, address)
        await running.stop()
        return before, after

    before, after = asyncio.run(scenario())
    assert before == health_pb2.HealthCheckResponse.NOT_SERVING
    assert after == health_pb2.HealthCheckResponse.SERVING


def test_every_server_serves_health_and_reflection(stack):
    expected = {
        stack.stack.dit.address: "acestep.v1.DiffusionService",
        stack.stack.lm.address: "acestep.v1.LanguageModelService",
        stack.address: "acestep.v1.MusicGenerationService",
    }
    for address, service in expected.items():
        assert _health(address, service) == health_pb2.HealthCheckResponse.SERVING
        assert {service, "grpc.health.v1.Health"} <= _services(address)


def test_metrics_are_real_prometheus_text(stack):
    with AceStepClient(stack.address) as client:
        assert client.generate(FAST, GenerationConfig(batch_size=1)).success
    url = f"http://127.0.0.1:{stack.stack.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    generations = {tuple(sorted(s.labels.items())): s.value for s in families["acestep_generations"].samples
                   if s.name == "acestep_generations_total"}
    assert generations[(("code", "OK"), ("component", "orchestrator"), ("task_type", "text2music"))] >= 1
    assert "acestep_time_to_first_audio_seconds" in families
    assert "acestep_real_time_factor_ratio" in families
    # `serve all` exposes every service on one endpoint, told apart by the component label.
    ready = {s.labels["component"]: s.value for s in families["acestep_model_ready"].samples}
    assert ready == {"orchestrator": 1.0, "lm": 1.0, "dit": 1.0}
    assert "acestep_lm_batch_rows" in families and "acestep_dit_batch_items" in families
    assert "acestep_lm_kv_cache_usage_ratio" in families and "acestep_lm_time_to_first_token_seconds" in families
    queued = {s.labels["component"] for s in families["acestep_queue_time_seconds"].samples}
    assert queued == {"orchestrator", "lm", "dit"}


def _synthesize_request(duration: float) -> dit_pb2.SynthesizeRequest:
    return dit_pb2.SynthesizeRequest(params=params_to_proto(GenerationParams(caption="x", duration=duration)),
                                     seeds=[1])


def test_full_queue_answers_resource_exhausted_and_chunks_stay_small(tiny_root):
    args = dit_server.build_parser().parse_args(
        ["--checkpoints", str(tiny_root), "--device", "cpu", "--dtype", "float32", "--port", "0",
         "--queue-size", "0", "--max-concurrency", "1"])

    async def scenario():
        running = await dit_server.start(args, announce=lambda line: None)
        await running.loaded
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = dit_pb2_grpc.DiffusionServiceStub(channel)
            long_call = stub.Synthesize(_synthesize_request(600))
            first = await long_call.read()  # the long request holds the only slot now
            with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                await stub.Synthesize(_synthesize_request(10)).read()
            bad = _synthesize_request(10)
            bad.stream_encoding = 99
            with pytest.raises(grpc.aio.AioRpcError) as refused_bad:  # checked before the queue: no slot needed
                await stub.Synthesize(bad).read()
            assert refused_bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused_bad.value.details()
            long_call.cancel()
            for _ in range(200):  # the cancelled call frees its slot once its worker stops between steps
                if running.servicer.admission.running == 0:
                    break
                await asyncio.sleep(0.05)
            freed = running.servicer.admission.running == 0
            sizes = []
            async for response in stub.Synthesize(_synthesize_request(30)):
                if response.WhichOneof("event") == "audio_chunk":
                    sizes.append(len(response.audio_chunk.pcm_f32le))
        await running.stop()
        return first, excinfo.value, freed, sizes

    first, error, freed, sizes = asyncio.run(scenario())
    assert first.WhichOneof("event") == "progress"
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "busy" in error.details()
    assert freed, "cancelling the running request did not free its slot"
    assert sum(sizes) == 30 * 48_000 * 2 * 4  # 30 s of stereo float32, nothing lost or repeated
    assert max(sizes) <= 1 << 20


def test_a_full_orchestrator_still_answers_bad_requests_invalid_argument(stack):
    """Everything checkable without a backend call is checked before a queue slot is taken."""
    from acestep_client.convert import config_to_proto
    from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
    from acestep_client.proto.acestep.v1 import orchestrator_pb2, orchestrator_pb2_grpc

    def request(params: GenerationParams, **fields) -> orchestrator_pb2.GenerateMusicRequest:
        return orchestrator_pb2.GenerateMusicRequest(params=params_to_proto(params),
                                                     config=config_to_proto(GenerationConfig(batch_size=1)), **fields)

    bad = {
        "params": request(GenerationParams(caption="x", bpm=500)),
        "stream encoding": request(FAST, stream_encoding=99),
        "upload": request(GenerationParams(caption="x", task_type="cover", thinking=False),
                          src_audio=gen_pb2.AudioInput(data=b"not audio at all")),
    }
    bad_describe = orchestrator_pb2.DescribeMusicRequest(task=gen_pb2.DescribeTask(
        create_sample=gen_pb2.CreateSampleInput(query="x"), sampling=gen_pb2.LmTextSampling(top_k=-1)))

    async def start():
        args = build_parser().parse_args(["--port", "0", "--dit", stack.stack.dit.address, "--lm",
                                          stack.stack.lm.address, "--max-concurrency", "1", "--queue-size", "0"])
        return await start_orchestrator(args, announce=lambda line: None)

    orchestrator = stack.run(start())
    codes = {}
    try:
        with grpc.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            stub = orchestrator_pb2_grpc.MusicGenerationServiceStub(channel)
            long_call = stub.GenerateMusic(request(GenerationParams(caption="very long song", duration=600)))
            next(long_call)  # the first event comes once admitted: the only slot is taken
            for name, message in [*bad.items(), ("a good request", request(FAST))]:
                with pytest.raises(grpc.RpcError) as excinfo:
                    list(stub.GenerateMusic(message, timeout=30))
                codes[name] = excinfo.value.code()
            with pytest.raises(grpc.RpcError) as excinfo:
                list(stub.DescribeMusic(bad_describe, timeout=30))
            codes["describe"] = excinfo.value.code()
            long_call.cancel()
    finally:
        stack.run(orchestrator.stop())
    assert codes.pop("a good request") == grpc.StatusCode.RESOURCE_EXHAUSTED  # the server is full
    assert codes == dict.fromkeys(codes, grpc.StatusCode.INVALID_ARGUMENT)


def test_api_keys_guard_the_front_door(stack):
    async def start():
        args = build_parser().parse_args(["--port", "0", "--dit", stack.stack.dit.address, "--api-keys", "k1,k2"])
        return await start_orchestrator(args, announce=lambda line: None)

    orchestrator = stack.run(start())
    address = f"127.0.0.1:{orchestrator.port}"
    try:
        params = GenerationParams(caption="x", thinking=False, use_cot_metas=False, duration=10)
        with AceStepClient(address) as client:
            denied = client.generate(params, GenerationConfig(batch_size=1))
        with AceStepClient(address, api_key="k2") as client:
            allowed = client.generate(params, GenerationConfig(batch_size=1))
        assert not denied.success and "UNAUTHENTICATED" in denied.error
        assert allowed.success, allowed.error
        assert _health(address) == health_pb2.HealthCheckResponse.SERVING  # probes need no key
    finally:
        stack.run(orchestrator.stop())


@pytest.mark.parametrize("service", ["lm", "dit"])
def test_a_server_that_cannot_load_exits_with_the_reason(service, tmp_path, caplog):
    from lm_service import server as lm_server

    main = lm_server.main if service == "lm" else dit_server.main
    with pytest.raises(SystemExit) as info:
        main(["--checkpoints", str(tmp_path / "missing"), "--port", "0", "--device", "cpu"])
    assert info.value.code == 1
    assert "cannot serve" in caplog.text and "missing" in caplog.text
