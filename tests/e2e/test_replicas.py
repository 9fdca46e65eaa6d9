"""The orchestrator over several LM / DiT replicas (real servers, tiny checkpoints, CPU) when one of them is lost,
full or draining: a lost plan runs again elsewhere with the same result, a synthesis lost before any audio too,
one lost after audio ends UNAVAILABLE naming the replica, a full or draining replica's request goes elsewhere."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest

from acestep_client import GenerationConfig, GenerationParams
from acestep_client.constants import DEFAULT_LM_MODEL
from acestep_client.convert import config_to_proto, params_to_proto
from acestep_client.proto.acestep.v1 import dit_pb2, dit_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from dit_service import server as dit_server
from lm_service import server as lm_server
from orchestrator.server import build_parser, start_orchestrator

SEEDS = GenerationConfig(batch_size=1, seeds=[5], use_random_seed=False)
# Metadata given, so the LM goes straight to its codes: 30 s = 150 codes, seconds on the tiny LM.
PLANNED = GenerationParams(caption="x", duration=30, bpm=100, keyscale="D minor", timesignature="4")
# No LM; the base model's 50 steps leave seconds between the first step and the first audio.
SLOW_STEPS = GenerationParams(caption="x", duration=20, thinking=False, use_cot_metas=False, inference_steps=50)
# 60 s is four VAE windows of audio, decoded one after the other: audio keeps coming for seconds.
LONG_AUDIO = GenerationParams(caption="x", duration=60, thinking=False, use_cot_metas=False, inference_steps=8)
SHORT = GenerationParams(caption="x", duration=10, thinking=False, use_cot_metas=False)


@dataclass
class Outcome:
    """What a client of GenerateMusic saw."""

    messages: list[str] = field(default_factory=list)
    lm_metadata: list[bytes] = field(default_factory=list)
    audio: dict[int, list[np.ndarray]] = field(default_factory=dict)
    results: list[bytes] = field(default_factory=list)
    error: grpc.RpcError | None = None

    def pcm(self, item: int) -> np.ndarray:
        return np.concatenate(self.audio[item], axis=1)


def _generate(address: str, params: GenerationParams, on_event: Callable[[orchestrator_pb2.GenerateMusicResponse],
              None] = lambda event: None) -> Outcome:
    request = orchestrator_pb2.GenerateMusicRequest(params=params_to_proto(params), config=config_to_proto(SEEDS))
    outcome = Outcome()
    with grpc.insecure_channel(address) as channel:
        try:
            for event in orchestrator_pb2_grpc.MusicGenerationServiceStub(channel).GenerateMusic(request, timeout=240):
                kind = event.WhichOneof("event")
                if kind == "progress":
                    outcome.messages.append(event.progress.message)
                elif kind == "lm_metadata":
                    outcome.lm_metadata.append(event.lm_metadata.SerializeToString(deterministic=True))
                elif kind == "audio_chunk":
                    chunk = event.audio_chunk
                    pcm = np.frombuffer(chunk.pcm_f32le, "<f4").reshape(-1, chunk.channels).T
                    outcome.audio.setdefault(chunk.item_index, []).append(pcm)
                elif kind == "item_result":
                    outcome.results.append(event.item_result.SerializeToString(deterministic=True))
                on_event(event)
        except grpc.RpcError as exc:
            outcome.error = exc
    return outcome


class Replicas:
    """Model servers and orchestrators started on the test stack's event loop, all stopped at the end."""

    def __init__(self, stack, tiny_root):
        self.stack, self.root = stack, tiny_root
        self.servers: list = []
        self.orchestrators: list = []
        self.stopped: list = []

    def start(self, service: str, count: int, model: str, flags: Sequence[str] = ()) -> list:
        module = lm_server if service == "lm" else dit_server

        async def start_one():
            args = module.build_parser().parse_args(
                ["--checkpoints", str(self.root), "--model", model, "--device", "cpu", "--dtype", "float32",
                 "--port", "0", *flags])
            running = await module.start(args, announce=lambda line: None)
            await running.loaded
            return running

        started = [self.stack.run(start_one()) for _ in range(count)]
        self.servers += started
        return started

    def orchestrator(self, lm: Sequence, dit: Sequence, flags: Sequence[str] = ()) -> str:
        args = build_parser().parse_args(["--port", "0", "--lm", ",".join(r.address for r in lm),
                                          "--dit", ",".join(r.address for r in dit), *flags])
        running = self.stack.run(start_orchestrator(args, announce=lambda line: None))
        self.orchestrators.append(running)
        return f"127.0.0.1:{running.port}"

    def stop(self, server, grace: float = 0.0) -> None:
        """What a killed replica's clients see: UNAVAILABLE on every call, open streams cut (after ``grace``)."""
        self.stopped.append(server)
        self.stack.run(server.stop(grace))

    def close(self) -> None:
        for running in [*self.orchestrators, *self.servers]:
            if all(running is not s for s in self.stopped):
                self.stack.run(running.stop())


@pytest.fixture
def replicas(stack, tiny_root):
    pool = Replicas(stack, tiny_root)
    yield pool
    pool.close()


def _serving(servers: Sequence) -> object:
    (busy,) = [s for s in servers if s.servicer.admission.running == 1]
    return busy


def test_an_lm_replica_lost_mid_plan_is_replaced_and_the_result_is_unchanged(replicas, stack):
    lm = replicas.start("lm", 2, DEFAULT_LM_MODEL)
    address = replicas.orchestrator(lm, [stack.stack.dit])
    undisturbed = _generate(address, PLANNED)
    assert undisturbed.error is None and len(undisturbed.lm_metadata) == 1

    killed: list = []

    def kill_mid_plan(event) -> None:  # once the metadata is out and the codes are under way
        if not killed and event.WhichOneof("event") == "progress" and "LM phase 2" in event.progress.message:
            killed.append(_serving(lm))
            replicas.stop(killed[0])

    disturbed = _generate(address, PLANNED, kill_mid_plan)
    assert disturbed.error is None, disturbed.error
    assert len(killed) == 1
    assert any(f"LM replica {killed[0].address} was lost mid-plan" in m for m in disturbed.messages)
    assert disturbed.lm_metadata == undisturbed.lm_metadata  # the item's metadata reached the client once
    assert disturbed.results == undisturbed.results  # the same codes, seed, key and params
    assert np.array_equal(disturbed.pcm(0), undisturbed.pcm(0))


def test_a_dit_replica_lost_before_any_audio_is_replaced_and_the_audio_is_unchanged(replicas):
    dit = replicas.start("dit", 2, "acestep-v15-base")
    address = replicas.orchestrator([], dit)
    undisturbed = _generate(address, SLOW_STEPS)
    assert undisturbed.error is None, undisturbed.error

    killed: list = []

    def kill_at_first_step(event) -> None:
        if not killed and event.WhichOneof("event") == "progress" and "diffusion step" in event.progress.message:
            killed.append(_serving(dit))
            replicas.stop(killed[0])

    disturbed = _generate(address, SLOW_STEPS, kill_at_first_step)
    assert disturbed.error is None, disturbed.error
    assert any(f"DiT replica {killed[0].address} was lost before any audio" in m for m in disturbed.messages)
    assert disturbed.results == undisturbed.results
    assert np.array_equal(disturbed.pcm(0), undisturbed.pcm(0))


def test_a_dit_replica_lost_after_audio_ends_unavailable_naming_it(replicas):
    dit = replicas.start("dit", 2, "acestep-v15-turbo")
    address = replicas.orchestrator([], dit)
    killed: list = []

    def kill_at_first_audio(event) -> None:
        if not killed and event.WhichOneof("event") == "audio_chunk":
            killed.append(_serving(dit))
            replicas.stop(killed[0])

    outcome = _generate(address, LONG_AUDIO, kill_at_first_audio)
    assert outcome.error is not None and outcome.error.code() == grpc.StatusCode.UNAVAILABLE
    details = outcome.error.details()
    assert re.search(rf"DiT replica {re.escape(killed[0].address)} was lost after streaming [1-9]\d* audio "
                     r"chunk\(s\) \(0/1 item\(s\) complete\).*retry the request", details), details
    (other,) = [s for s in dit if s is not killed[0]]
    assert _synthesize_calls(other) == {}  # not started over there: the client had audio


def _hold_the_slot(server, params: GenerationParams) -> Callable[[], None]:
    """Start a long Synthesize straight on ``server`` (on a thread); returns once it runs there, with its cancel."""
    channel = grpc.insecure_channel(server.address)
    call = dit_pb2_grpc.DiffusionServiceStub(channel).Synthesize(
        dit_pb2.SynthesizeRequest(params=params_to_proto(params), seeds=[1]), timeout=240)

    def drain() -> None:
        try:
            for _ in call:
                pass
        except grpc.RpcError:
            pass  # cancelled by the test, or cut by the server's stop

    threading.Thread(target=drain, daemon=True).start()
    _wait_until(lambda: server.servicer.admission.running == 1, "the long request never started")

    def cancel() -> None:
        call.cancel()
        channel.close()

    return cancel


def _wait_until(condition: Callable[[], bool], failure: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.02)


def _synthesize_calls(server) -> dict[str, float]:
    """Synthesize calls a DiT replica finished, by status code."""
    return {sample.labels["code"]: sample.value for family in server.servicer.metrics.registry.collect()
            for sample in family.samples if sample.name == "acestep_requests_total"
            and sample.labels["method"] == "Synthesize" and sample.value}


def test_a_full_replica_s_refusal_goes_to_another_replica(replicas):
    full = replicas.start("dit", 1, "acestep-v15-turbo", ["--max-concurrency", "1", "--queue-size", "0"])
    free = replicas.start("dit", 1, "acestep-v15-turbo")
    address = replicas.orchestrator([], [*full, *free])  # round robin: the first request tries `full` first
    cancel = _hold_the_slot(full[0], LONG_AUDIO)
    try:
        outcomes = [_generate(address, SHORT) for _ in range(2)]
    finally:
        cancel()
    assert [o.error for o in outcomes] == [None, None]
    assert _synthesize_calls(full[0]).get("RESOURCE_EXHAUSTED") == 1  # refused there, then served elsewhere
    assert _synthesize_calls(free[0]) == {"OK": 2}


def test_a_draining_replica_s_queued_request_goes_to_another_replica(replicas, stack):
    draining = replicas.start("dit", 1, "acestep-v15-turbo", ["--max-concurrency", "1", "--queue-size", "1"])
    other = replicas.start("dit", 1, "acestep-v15-turbo")
    address = replicas.orchestrator([], [*draining, *other])  # round robin: the first request tries `draining` first
    cancel = _hold_the_slot(draining[0], LONG_AUDIO)
    result: list[Outcome] = []
    queued = threading.Thread(target=lambda: result.append(_generate(address, SHORT)))
    try:
        queued.start()
        _wait_until(lambda: draining[0].servicer.admission.waiting == 1, "the request never queued there")
        replicas.stop(draining[0], grace=1.0)  # SIGTERM's drain: the queue outlasts the grace
        queued.join(120)
    finally:
        cancel()
    (outcome,) = result
    assert outcome.error is None, outcome.error
    assert _synthesize_calls(other[0]) == {"OK": 1}
