"""Health checks and /metrics answer at once while the model works (issue 14 point 4).

A kubelet probe with a 1-5 s timeout restarts a pod whose health check waits: nothing that takes time may
run on the event loop. Measured through real server processes on tiny checkpoints, on CPU; the bound (1 s)
is generous on purpose: a blocked loop shows as seconds (decoding and resampling a 2-minute upload on the
loop took 5-9 s here), a free one as milliseconds.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from acestep_client.convert import params_to_proto
from acestep_client.proto.acestep.v1 import dit_pb2, dit_pb2_grpc, lm_pb2, lm_pb2_grpc
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.types import GenerationParams

from .conftest import ServerProcess, model_flags, start_server, wav_bytes

BOUND_S = 1.0
UPLOAD_CHUNK = 1 << 20


def probe_while(busy: Callable[[], bool], server: ServerProcess, metrics: bool = False,
                at_most: int = 60) -> dict[str, list[float]]:
    """Health (and /metrics) latencies, one probe every 0.1 s while ``busy()``."""
    seen: dict[str, list[float]] = {"health": [], "metrics": []}
    while busy() and len(seen["health"]) < at_most:
        start = time.perf_counter()
        server.health(timeout=30)
        seen["health"].append(time.perf_counter() - start)
        if metrics:
            start = time.perf_counter()
            server.metrics()
            seen["metrics"].append(time.perf_counter() - start)
        time.sleep(0.1)
    return seen


def report(label: str, seen: dict[str, list[float]]) -> None:
    for name, latencies in seen.items():
        if latencies:
            print(f"{label} {name}: p50 {statistics.median(latencies) * 1000:.1f} ms, "
                  f"max {max(latencies) * 1000:.1f} ms over {len(latencies)} probes")


def in_background(call: Callable[[], object]) -> tuple[threading.Thread, list]:
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(call())
        except grpc.RpcError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.fixture(scope="module")
def dit(tiny_root, tmp_path_factory) -> Iterator[ServerProcess]:
    server = start_server("dit_service", tmp_path_factory.mktemp("dit"), *model_flags(tiny_root))
    try:
        server.wait_serving()
        yield server
    finally:
        server.stop()


def test_health_answers_while_the_dit_decodes_and_encodes_a_long_upload(dit):
    data = wav_bytes(120)  # 44.1 kHz: decoded and resampled to 48 kHz on the server before the VAE encode

    def requests() -> Iterator[dit_pb2.EncodeAudioRequest]:
        for offset in range(0, len(data), UPLOAD_CHUNK):
            yield dit_pb2.EncodeAudioRequest(format=gen_pb2.AUDIO_FORMAT_WAV, data=data[offset:offset + UPLOAD_CHUNK])

    stub = dit_pb2_grpc.DiffusionServiceStub(grpc.insecure_channel(dit.address))
    thread, outcome = in_background(lambda: stub.EncodeAudio(requests(), timeout=600))
    seen = probe_while(thread.is_alive, dit, at_most=10_000)
    thread.join()
    report("EncodeAudio (120 s upload)", seen)
    assert isinstance(outcome[0], dit_pb2.EncodeAudioResponse), outcome
    assert outcome[0].encoded.duration_s == pytest.approx(120, abs=0.01)  # the work really ran meanwhile
    assert len(seen["health"]) >= 5
    assert max(seen["health"]) < BOUND_S


def test_health_and_metrics_answer_while_the_dit_synthesises(dit):
    request = dit_pb2.SynthesizeRequest(
        params=params_to_proto(GenerationParams(caption="x", duration=600)), seeds=[1, 2], request_id="load-1")
    stub = dit_pb2_grpc.DiffusionServiceStub(grpc.insecure_channel(dit.address))
    call = stub.Synthesize(request, timeout=600)
    first = next(call)  # the request runs from here on
    seen = probe_while(lambda: True, dit, metrics=True, at_most=40)
    running = dit.gauge("acestep_in_flight_requests")
    call.cancel()
    report("Synthesize (600 s, 2 items)", seen)
    assert first.WhichOneof("event") in ("progress", "warning")
    assert running == 1  # still synthesising when the last probe was answered
    assert max(seen["health"]) < BOUND_S and max(seen["metrics"]) < BOUND_S


def test_health_answers_while_the_lm_plans(tiny_root, servers, tmp_path):
    lm = start_server("lm_service", tmp_path, *model_flags(tiny_root))
    servers.append(lm)
    lm.wait_serving()
    request = lm_pb2.PlanRequest(params=params_to_proto(GenerationParams(caption="x", duration=600)),
                                 seeds=[1, 2], generate_codes=True, request_id="load-2")
    call = lm_pb2_grpc.LanguageModelServiceStub(grpc.insecure_channel(lm.address)).Plan(request, timeout=600)
    next(call)
    seen = probe_while(lambda: True, lm, metrics=True, at_most=40)
    running = lm.gauge("acestep_in_flight_requests")
    call.cancel()
    report("LM Plan (600 s, 2 items)", seen)
    assert running == 1
    assert max(seen["health"]) < BOUND_S and max(seen["metrics"]) < BOUND_S
