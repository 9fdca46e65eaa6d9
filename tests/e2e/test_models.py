"""Models per request through real servers (tiny checkpoints, CPU): two DiT services serving different models
behind one orchestrator, one LM service serving two LM models, and the inventory the orchestrator lists.

Where a request ran is read from each server's own Prometheus registry (Synthesize / EncodeAudio calls) and,
for the LM, from the KV pools of its two engines (a pool that served a request holds written keys).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator, Sequence

import grpc
import numpy as np
import pytest

from acestep_client import AceStepClient, GenerationConfig, GenerationParams, cli
from acestep_client.audio_io import encode_audio
from acestep_client.constants import DEFAULT_LM_MODEL
from acestep_client.convert import config_to_proto, params_to_proto
from acestep_client.proto.acestep.v1 import dit_pb2, dit_pb2_grpc, lm_pb2, lm_pb2_grpc, orchestrator_pb2_grpc
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.proto.acestep.v1 import orchestrator_pb2 as orch_pb2
from dit_service import server as dit_server
from lm_service import server as lm_server
from lm_service.tiny_checkpoint import write_tiny_lm_checkpoint
from orchestrator.server import build_parser, start_orchestrator
from orchestrator.stack import write_tiny_checkpoints

TURBO, BASE, XL_SFT = "acestep-v15-turbo", "acestep-v15-base", "acestep-v15-xl-sft"
SMALL_LM = "acestep-5Hz-lm-0.6B"  # a second tiny LM, other weights (seed 1)
NO_LM = {"caption": "x", "duration": 10, "thinking": False, "use_cot_metas": False}
ONE = GenerationConfig(batch_size=1, seeds=[3], use_random_seed=False)


class Servers:
    """Servers on one background event loop, all stopped at the end."""

    def __init__(self, root):
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="models-loop", daemon=True)
        self.thread.start()
        self.running: list = []

    def run(self, coroutine, timeout: float = 300):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def model_server(self, module, *models: str):
        async def start():
            args = module.build_parser().parse_args(
                ["--checkpoints", str(self.root), *(f for m in models for f in ("--model", m)), "--device", "cpu",
                 "--dtype", "float32", "--port", "0"])
            running = await module.start(args, announce=lambda line: None)
            await running.loaded
            return running

        server = self.run(start())
        self.running.append(server)
        return server

    def orchestrator(self, dit: str, lm: str) -> str:
        args = build_parser().parse_args(["--port", "0", "--dit", dit, "--lm", lm])
        running = self.run(start_orchestrator(args, announce=lambda line: None))
        self.running.append(running)
        return f"127.0.0.1:{running.port}"

    def close(self) -> None:
        for running in reversed(self.running):
            self.run(running.stop(), timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Deployment:
    def __init__(self, servers: Servers):
        self.servers = servers
        self.turbo = servers.model_server(dit_server, TURBO)
        self.base = servers.model_server(dit_server, BASE)
        self.lm = servers.model_server(lm_server, f"{DEFAULT_LM_MODEL},{SMALL_LM}")
        # Discovery: each DiT address says what it serves; the first one's model is the default.
        self.address = servers.orchestrator(f"{self.turbo.address},{self.base.address}", self.lm.address)
        # Pins: the base pool first (the default), and a pool that is down (listed, not loaded).
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.down = f"127.0.0.1:{probe.getsockname()[1]}"
        self.pinned = servers.orchestrator(f"{BASE}={self.base.address},{TURBO}={self.turbo.address},"
                                           f"{XL_SFT}={self.down}", self.lm.address)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    root = write_tiny_checkpoints(tmp_path_factory.mktemp("models"))
    write_tiny_lm_checkpoint(root, seed=1, name=SMALL_LM)
    servers = Servers(root)
    try:
        yield Deployment(servers)
    finally:
        servers.close()


def _calls(server, method: str, code: str = "OK") -> float:
    registry = server.servicer.metrics.registry
    value = registry.get_sample_value("acestep_requests_total",
                                      {"component": server.servicer.metrics.component, "method": method, "code": code})
    return value or 0.0


def _generate(address: str, params: GenerationParams, **fields) -> list[orch_pb2.GenerateMusicResponse]:
    request = orch_pb2.GenerateMusicRequest(params=params_to_proto(params), config=config_to_proto(ONE), **fields)
    with grpc.insecure_channel(address) as channel:
        return list(orchestrator_pb2_grpc.MusicGenerationServiceStub(channel).GenerateMusic(request, timeout=240))


def _refused(address: str, params: GenerationParams, **fields) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        _generate(address, params, **fields)
    return error.value


def _result(events: Sequence[orch_pb2.GenerateMusicResponse]) -> orch_pb2.ItemResult:
    (result,) = [e.item_result for e in events if e.WhichOneof("event") == "item_result"]
    return result


def _synthesized(deployment: Deployment) -> tuple[float, float]:
    return _calls(deployment.turbo, "Synthesize"), _calls(deployment.base, "Synthesize")


def _wav() -> bytes:
    t = np.arange(10 * 48_000) / 48_000
    return encode_audio(np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2).astype(np.float32), 48_000, "wav")


def test_each_dit_model_lands_on_the_pool_that_serves_it(deployment):
    before = _synthesized(deployment)
    _result(_generate(deployment.address, GenerationParams(dit_model=BASE, inference_steps=12, **NO_LM)))
    after_base = _synthesized(deployment)
    assert (after_base[0] - before[0], after_base[1] - before[1]) == (0, 1)
    _result(_generate(deployment.address, GenerationParams(dit_model=TURBO, **NO_LM)))
    _result(_generate(deployment.address, GenerationParams(**NO_LM)))  # no name: the first pool's model
    after = _synthesized(deployment)
    assert (after[0] - after_base[0], after[1] - after_base[1]) == (2, 0)


def test_pins_route_without_asking_and_the_first_pin_is_the_default(deployment):
    before = _synthesized(deployment)
    _result(_generate(deployment.pinned, GenerationParams(**NO_LM)))
    _result(_generate(deployment.pinned, GenerationParams(dit_model=TURBO, **NO_LM)))
    after = _synthesized(deployment)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    error = _refused(deployment.pinned, GenerationParams(dit_model=XL_SFT, **NO_LM))
    assert error.code() == grpc.StatusCode.UNAVAILABLE  # pinned there, and that pool is down


def test_a_base_only_task_without_dit_model_is_refused_naming_the_default_model_before_any_work(deployment):
    upload = gen_pb2.AudioInput(data=_wav(), filename="song.wav")
    lego = GenerationParams(task_type="lego", instruction="Generate the drums track:", **NO_LM)
    encoded = (_calls(deployment.turbo, "EncodeAudio"), _calls(deployment.base, "EncodeAudio"))
    error = _refused(deployment.address, lego, src_audio=upload)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error.details()
    assert "'lego'" in details and TURBO in details and f"set dit_model to '{BASE}'" in details
    assert (_calls(deployment.turbo, "EncodeAudio"), _calls(deployment.base, "EncodeAudio")) == encoded
    # Named, it runs on the base pool: the upload is encoded there too.
    synthesized = _synthesized(deployment)
    _result(_generate(deployment.address, GenerationParams(**{**lego.to_dict(), "dit_model": BASE}), src_audio=upload))
    assert (_calls(deployment.turbo, "EncodeAudio"), _calls(deployment.base, "EncodeAudio")) == (
        encoded[0], encoded[1] + 1)
    assert _synthesized(deployment) == (synthesized[0], synthesized[1] + 1)


def test_unknown_models_and_adapters_are_not_found_naming_them_before_any_work(deployment):
    synthesized, planned = _synthesized(deployment), _calls(deployment.lm, "Plan")
    error = _refused(deployment.address, GenerationParams(dit_model="acestep-v15-nope", **NO_LM))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details().startswith("dit_model: no DiT model 'acestep-v15-nope'")
    assert TURBO in error.details() and BASE in error.details()
    error = _refused(deployment.address, GenerationParams(caption="x", duration=10, lm_model="acestep-5Hz-lm-9B"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "'acestep-5Hz-lm-9B'" in error.details()
    error = _refused(deployment.address, GenerationParams(adapter="lofi", **NO_LM))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details().startswith(f"adapter: 'lofi' is not served for the DiT model {TURBO}")
    # An LM model nobody serves is no error when the request does not need the LM.
    _result(_generate(deployment.address, GenerationParams(lm_model="acestep-5Hz-lm-9B", **NO_LM)))
    assert _calls(deployment.lm, "Plan") == planned
    assert _synthesized(deployment) == (synthesized[0] + 1, synthesized[1])


def test_lm_model_picks_the_engine_of_one_lm_service(deployment):
    planners = deployment.lm.servicer.planners
    assert list(planners) == [DEFAULT_LM_MODEL, SMALL_LM]

    def used(name: str) -> bool:  # a KV pool that served a request holds written keys
        return bool(planners[name].engine.pool.k.abs().sum() > 0)

    planned = GenerationParams(caption="x", duration=10, bpm=100, keyscale="D minor", timesignature="4")
    small = _result(_generate(deployment.address, GenerationParams(**{**planned.to_dict(), "lm_model": SMALL_LM})))
    assert used(SMALL_LM) and not used(DEFAULT_LM_MODEL)
    default = _result(_generate(deployment.address, planned))
    assert used(DEFAULT_LM_MODEL)
    named = _result(_generate(deployment.address, GenerationParams(**{**planned.to_dict(),
                                                                      "lm_model": DEFAULT_LM_MODEL})))
    assert named.params.audio_codes == default.params.audio_codes  # the default is that model
    assert small.params.audio_codes and small.params.audio_codes != default.params.audio_codes  # other weights


def test_replicas_refuse_a_model_they_do_not_serve_naming_both(deployment):
    synth = dit_pb2.SynthesizeRequest(params=params_to_proto(GenerationParams(dit_model=BASE, **NO_LM)), seeds=[1])
    with grpc.insecure_channel(deployment.turbo.address) as channel, pytest.raises(grpc.RpcError) as error:
        list(dit_pb2_grpc.DiffusionServiceStub(channel).Synthesize(synth, timeout=30))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert TURBO in error.value.details() and BASE in error.value.details()
    plan = lm_pb2.PlanRequest(params=params_to_proto(GenerationParams(caption="x", lm_model="other-lm")), seeds=[1])
    with grpc.insecure_channel(deployment.lm.address) as channel, pytest.raises(grpc.RpcError) as error:
        list(lm_pb2_grpc.LanguageModelServiceStub(channel).Plan(plan, timeout=30))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'other-lm'" in error.value.details() and SMALL_LM in error.value.details()


def test_the_lm_service_lists_each_of_its_models_the_first_as_default(deployment):
    with grpc.insecure_channel(deployment.lm.address) as channel:
        models = lm_pb2_grpc.LanguageModelServiceStub(channel).ListModels(gen_pb2.ListModelsRequest(), timeout=10)
    assert [(m.name, m.loaded, m.is_default) for m in models.models] == [(DEFAULT_LM_MODEL, True, True),
                                                                       (SMALL_LM, True, False)]


def test_the_orchestrator_lists_every_model_with_its_replicas_and_the_default(deployment):
    with AceStepClient(deployment.address) as client:
        models = {(m.kind, m.name): m for m in client.list_models()}
    assert set(models) == {("dit", TURBO), ("dit", BASE), ("lm", DEFAULT_LM_MODEL), ("lm", SMALL_LM)}
    assert (models["dit", TURBO].replicas, models["dit", TURBO].is_default) == ([deployment.turbo.address], True)
    assert (models["dit", BASE].replicas, models["dit", BASE].is_default) == ([deployment.base.address], False)
    assert "lego" in models["dit", BASE].task_types and "lego" not in models["dit", TURBO].task_types
    assert models["lm", DEFAULT_LM_MODEL].is_default and not models["lm", SMALL_LM].is_default
    assert models["lm", SMALL_LM].replicas == [deployment.lm.address]
    assert all(m.loaded for m in models.values())
    with AceStepClient(deployment.pinned) as client:
        pinned = {m.name: m for m in client.list_models() if m.kind == "dit"}
    assert [name for name, m in pinned.items() if m.is_default] == [BASE]
    assert (pinned[XL_SFT].loaded, pinned[XL_SFT].replicas) == (False, [deployment.down])


async def test_the_async_client_lists_the_same_models(deployment):
    from acestep_client import AsyncAceStepClient

    async with AsyncAceStepClient(deployment.address) as client:
        models = await client.list_models()
    with AceStepClient(deployment.address) as client:
        assert models == client.list_models()


def test_acestep_models_prints_the_table_and_json(deployment, capsys):
    assert cli.main(["models", "--target", deployment.address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "kind", "tasks", "steps", "loaded", "default", "base_model", "replicas"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[TURBO][1:2] == ["dit"] and rows[TURBO][3:6] == ["1-8", "yes", "yes"]
    assert rows[TURBO][-1] == deployment.turbo.address and rows[BASE][-1] == deployment.base.address
    assert rows[BASE][4:] == ["yes", deployment.base.address]  # loaded, not the default
    assert rows[SMALL_LM][1] == "lm" and rows[DEFAULT_LM_MODEL][-2:] == ["yes", deployment.lm.address]
    assert [line.split()[0] for line in lines[1:]][:2] == [TURBO, BASE]  # DiT models first
    assert cli.main(["models", "--target", deployment.address, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {m["name"] for m in listed} == {TURBO, BASE, DEFAULT_LM_MODEL, SMALL_LM}


def test_acestep_models_says_why_when_the_call_fails(capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    assert cli.main(["models", "--target", address, "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("acestep models: failed: UNAVAILABLE") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("argv", "says"), [
    (["--model", "a", "--model", "a"], "a given twice"),
    (["--model", "a,b", "--backend", "vllm", "--gpu-memory-utilization", "0.6"], "give each at most 0.47"),
])
def test_the_lm_flag_refuses_what_one_replica_cannot_serve(argv, says):
    from acestep_serving.preflight import StartupError

    args = lm_server.build_parser().parse_args(argv)
    with pytest.raises(StartupError, match=says):
        lm_server.model_names(args)
    assert lm_server.model_names(lm_server.build_parser().parse_args(["--model", "x", "--model", "y,z"])) == [
        "x", "y", "z"]


def test_the_cli_sends_the_model_flags_and_names_them_when_refused(deployment, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["generate", "--target", deployment.address, "--caption", "x", "--duration", "10", "--no-thinking",
              "--no-cot-metas", "--seeds", "1", "--out", str(out), "--quiet"]
    synthesized = _synthesized(deployment)
    assert cli.main([*common, "--dit-model", BASE]) == 0
    assert _synthesized(deployment) == (synthesized[0], synthesized[1] + 1)
    capsys.readouterr()
    assert cli.main([*common, "--dit-model", "acestep-v15-nope"]) == 2
    err = capsys.readouterr().err
    assert "error: NOT_FOUND: --dit-model: no DiT model 'acestep-v15-nope'" in err
    song = tmp_path / "song.wav"
    song.write_bytes(_wav())
    assert cli.main([*common, "--task-type", "lego", "--src-audio", str(song),
                     "--instruction", "Generate the drums track:"]) == 2
    err = capsys.readouterr().err
    assert "error: FAILED_PRECONDITION:" in err and f"hint: add --dit-model {BASE} (the server serves it too)" in err
