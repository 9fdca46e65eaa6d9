"""SIGTERM: drain, then stop at the grace deadline, then exit cleanly (issue 14 points 6-7, issue 15 point 8).

Through real server processes: the queue is refused at once (UNAVAILABLE before any response, so the
orchestrator retries elsewhere), health says NOT_SERVING and the ready gauge 0 while running requests
finish; at the grace deadline they end UNAVAILABLE with a message saying why, the model threads stop
within a layer, and the process exits 0 with a log and no tracebacks.
"""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from acestep_client.convert import config_to_proto, params_to_proto
from acestep_client.proto.acestep.v1 import (
    dit_pb2,
    dit_pb2_grpc,
    lm_pb2,
    lm_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
)
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.types import GenerationConfig, GenerationParams
from acestep_serving.server import SHUTDOWN_MARGIN_S

from .conftest import ServerProcess, model_flags, start_server, wav_bytes

# Interpreter teardown after the server stopped (torch, transformers) and a busy test machine.
EXIT_SLACK_S = 20.0
UPLOAD_CHUNK = 1 << 20


def synth_request(request_id: str, duration: float = 600, items: int = 2) -> dit_pb2.SynthesizeRequest:
    return dit_pb2.SynthesizeRequest(params=params_to_proto(GenerationParams(caption="x", duration=duration)),
                                     seeds=list(range(1, items + 1)), request_id=request_id)


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def read_to_end(call) -> tuple[list, grpc.RpcError | None]:
    events = []
    try:
        for response in call:
            events.append(response)
    except grpc.RpcError as exc:
        return events, exc
    return events, None


def exit_after_sigterm(server: ServerProcess, grace: float) -> float:
    """SIGTERM was sent; the seconds until the process was gone (it must go by grace + margin + slack)."""
    start = time.monotonic()
    server.process.wait(timeout=grace + SHUTDOWN_MARGIN_S + EXIT_SLACK_S)
    return time.monotonic() - start


def assert_clean_exit(server: ServerProcess) -> str:
    out = server.output()
    assert server.process.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "CancelledError" not in out, out[-3000:]
    assert "Cancelling all calls" not in out
    assert "still running at the stop deadline" not in out  # the model threads stopped by themselves
    assert "stopped" in out.splitlines()[-1]
    return out


def test_sigterm_refuses_the_queue_at_once_and_stops_running_requests_at_the_grace_deadline(
    tiny_root, servers, tmp_path
):
    grace = 3.0
    dit = start_server("dit_service", tmp_path, *model_flags(tiny_root), "--max-concurrency", "1",
                       "--queue-size", "4", "--grace-seconds", str(grace))
    servers.append(dit)
    dit.wait_serving()
    stub = dit_pb2_grpc.DiffusionServiceStub(grpc.insecure_channel(dit.address))
    running = stub.Synthesize(synth_request("running-1"), timeout=600)
    next(running)
    queued = stub.Synthesize(synth_request("queued-1"), timeout=600)
    wait_for(lambda: dit.gauge("acestep_queue_depth") == 1, "the second request to queue")

    signalled = time.monotonic()
    dit.terminate()
    with pytest.raises(grpc.RpcError) as refused:
        next(queued)
    # Draining, not yet stopped: health answers NOT_SERVING, the gauge says not ready, the first request runs on.
    wait_for(lambda: dit.health() == health_pb2.HealthCheckResponse.NOT_SERVING, "NOT_SERVING")
    ready, in_flight = dit.gauge("acestep_model_ready"), dit.gauge("acestep_in_flight_requests")
    with pytest.raises(grpc.RpcError) as late:
        next(stub.Synthesize(synth_request("late-1", duration=10, items=1), timeout=60))
    events, cut = read_to_end(running)
    exit_seconds = time.monotonic() - signalled + exit_after_sigterm(dit, grace)
    print(f"DiT exit {exit_seconds:.1f} s after SIGTERM (grace {grace:g} s)")

    for error in (refused.value, late.value):
        assert error.code() == grpc.StatusCode.UNAVAILABLE and "draining" in error.details()
    assert (ready, in_flight) == (0, 1)
    assert any(e.WhichOneof("event") == "progress" for e in events)
    assert not any(e.WhichOneof("event") == "item_done" for e in events)  # cut before the song was done
    assert cut is not None and cut.code() == grpc.StatusCode.UNAVAILABLE
    assert f"{grace:g} s grace period ended" in cut.details() and "retry on another replica" in cut.details()
    out = assert_clean_exit(dit)
    assert "Synthesize request_id=running-1 stopped by the shutdown" in out
    assert "at diffusion step" in out and "0/2 item(s) done" in out
    assert "Synthesize request_id=queued-1 refused: the replica is draining" in out


def test_sigterm_lets_a_request_in_flight_finish_within_the_grace(tiny_root, servers, tmp_path):
    grace = 120.0
    dit = start_server("dit_service", tmp_path, *model_flags(tiny_root), "--grace-seconds", str(grace))
    servers.append(dit)
    dit.wait_serving()
    call = dit_pb2_grpc.DiffusionServiceStub(grpc.insecure_channel(dit.address)).Synthesize(
        synth_request("short-1", duration=10, items=1), timeout=120)
    next(call)
    signalled = time.monotonic()
    dit.terminate()
    events, error = read_to_end(call)
    dit.process.wait(timeout=60)  # gone once the request is done: it does not sit out the 120 s grace
    print(f"DiT exit {time.monotonic() - signalled:.1f} s after SIGTERM with a request finishing (grace {grace:g} s)")
    assert error is None
    assert [e.item_done.item_index for e in events if e.WhichOneof("event") == "item_done"] == [0]
    assert sum(len(e.audio_chunk.pcm_f32le) for e in events if e.WhichOneof("event") == "audio_chunk") \
        == 10 * 48_000 * 2 * 4
    out = assert_clean_exit(dit)
    assert "short-1" not in out  # it finished: nothing to report


def test_sigterm_stops_a_long_upload_encode_within_a_vae_layer(tiny_root, servers, tmp_path):
    """The VAE encode of a long upload is one forward of many seconds (here ~20 s): it stops at a stop point
    (a convolution), not at its end, so the process needs no hard exit at the deadline."""
    grace = 1.0
    dit = start_server("dit_service", tmp_path, *model_flags(tiny_root), "--grace-seconds", str(grace))
    servers.append(dit)
    dit.wait_serving()
    data = wav_bytes(90, rate=48_000)  # no resampling: the time goes to the VAE encode

    def requests():
        for offset in range(0, len(data), UPLOAD_CHUNK):
            yield dit_pb2.EncodeAudioRequest(format=gen_pb2.AUDIO_FORMAT_WAV, data=data[offset:offset + UPLOAD_CHUNK])

    future = dit_pb2_grpc.DiffusionServiceStub(grpc.insecure_channel(dit.address)).EncodeAudio.future(
        requests(), timeout=600)
    wait_for(lambda: future.done() or dit.gauge("acestep_in_flight_requests") == 1, "the encode to start")
    assert not future.done(), future.exception()
    dit.terminate()
    exit_seconds = exit_after_sigterm(dit, grace)
    print(f"DiT exit {exit_seconds:.1f} s after SIGTERM during a 90 s upload's VAE encode (grace {grace:g} s)")
    error = future.exception(timeout=10)
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE, error
    out = assert_clean_exit(dit)
    assert "EncodeAudio request_id=- stopped by the shutdown" in out and "VAE encoding 90.0 s of audio" in out


def test_sigterm_stops_an_lm_plan_at_the_grace_deadline(tiny_root, servers, tmp_path):
    grace = 1.0
    lm = start_server("lm_service", tmp_path, *model_flags(tiny_root), "--grace-seconds", str(grace))
    servers.append(lm)
    lm.wait_serving()
    request = lm_pb2.PlanRequest(params=params_to_proto(GenerationParams(caption="x", duration=600)),
                                 seeds=[1, 2], generate_codes=True, request_id="plan-1")
    call = lm_pb2_grpc.LanguageModelServiceStub(grpc.insecure_channel(lm.address)).Plan(request, timeout=600)
    next(call)
    lm.terminate()
    exit_seconds = exit_after_sigterm(lm, grace)
    print(f"LM exit {exit_seconds:.1f} s after SIGTERM mid-plan (grace {grace:g} s)")
    _, error = read_to_end(call)
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE and "grace period" in error.details()
    out = assert_clean_exit(lm)
    assert "Plan request_id=plan-1 stopped by the shutdown" in out and "at LM phase" in out


def test_sigterm_on_the_orchestrator_ends_its_stream_cleanly_and_stops_the_dit_work(tiny_root, servers, tmp_path):
    grace = 2.0
    dit = start_server("dit_service", tmp_path, *model_flags(tiny_root))
    servers.append(dit)
    dit.wait_serving()
    front = start_server("orchestrator", tmp_path, "--dit", dit.address, "--grace-seconds", str(grace))
    servers.append(front)
    front.wait_serving()
    request = orchestrator_pb2.GenerateMusicRequest(
        params=params_to_proto(GenerationParams(caption="x", duration=600, thinking=False, use_cot_metas=False)),
        config=config_to_proto(GenerationConfig(batch_size=2)), request_id="gen-1")
    stub = orchestrator_pb2_grpc.MusicGenerationServiceStub(grpc.insecure_channel(front.address))
    call = stub.GenerateMusic(request, timeout=600)
    wait_for(lambda: next(call).WhichOneof("event") == "progress" and dit.gauge("acestep_in_flight_requests") == 1,
             "diffusion to start")
    front.terminate()
    exit_seconds = exit_after_sigterm(front, grace)
    print(f"orchestrator exit {exit_seconds:.1f} s after SIGTERM mid-generation (grace {grace:g} s)")
    _, error = read_to_end(call)
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE and "grace period" in error.details()
    out = assert_clean_exit(front)
    assert "GenerateMusic request_id=gen-1 stopped by the shutdown" in out and "diffusion step" in out
    # The DiT saw the orchestrator's call go away, logged it and freed its slot.
    wait_for(lambda: "Synthesize request_id=gen-1 cancelled by the client" in dit.output(), "the DiT's log line")
    wait_for(lambda: dit.gauge("acestep_in_flight_requests") == 0, "the DiT to stop synthesising")
