"""Routing by model over the inventories replicas announce: the decisions (pure), the --dit/--lm flag, and the
pool's round robin within the replicas of one model (real gRPC servers answering ListModels and Synthesize)."""

from __future__ import annotations

import grpc
import pytest

from acestep_client import GenerationParams
from acestep_client.errors import FailedPrecondition, InvalidArgument, NotFound
from acestep_client.proto.acestep.v1 import dit_pb2, dit_pb2_grpc
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_serving.preflight import StartupError
from orchestrator.capabilities import ModelCatalog, check_model
from orchestrator.replicas import ReplicaPool, parse_pools, parse_targets
from orchestrator.routing import Inventory, Router
from orchestrator.server import backend_pools

from .test_capabilities import BASE, LEGO, TURBO

DIT = gen_pb2.MODEL_KIND_DIT


def _adapter(name: str, base: str) -> gen_pb2.ModelInfo:
    return gen_pb2.ModelInfo(name=name, kind=gen_pb2.MODEL_KIND_ADAPTER, base_model=base, adapter_format="lora",
                             loaded=True)


def _inventory(answers: dict, pins: dict | None = None, kind: int = DIT) -> Inventory:
    return Inventory(kind, tuple(answers), pins or {}, answers)


def test_the_default_is_the_first_pools_model_and_a_name_picks_its_pools():
    inventory = _inventory({"t1": [TURBO], "b1": [BASE], "t2": [TURBO]})
    default = inventory.choose("")
    assert (default.name, default.targets, default.info) == ("acestep-v15-turbo", ("t1", "t2"), TURBO)
    assert inventory.choose("acestep-v15-base").targets == ("b1",)
    assert _inventory({"b1": [BASE], "t1": [TURBO]}).choose("").name == "acestep-v15-base"


def test_an_unknown_name_is_not_found_naming_it_and_what_is_served():
    with pytest.raises(NotFound) as error:
        _inventory({"t1": [TURBO], "b1": [BASE]}).choose("acestep-v15-xl-sft")
    assert str(error.value) == ("dit_model: no DiT model 'acestep-v15-xl-sft' in this deployment (it serves: "
                                "acestep-v15-turbo, acestep-v15-base; ListModels lists them)")


def test_a_replica_that_gave_no_answer_gets_what_nobody_else_serves():
    inventory = _inventory({"t1": [TURBO], "old": None})
    assert inventory.choose("acestep-v15-base").targets == ("old",)  # the replica itself refuses or serves it
    assert inventory.choose("").targets == ("t1",)
    # A first target that is down (no answer) does not take the default with it: the next one's model is it.
    silent_first = _inventory({"old": None, "t1": [TURBO]})
    assert (silent_first.choose("").name, silent_first.choose("").targets) == ("acestep-v15-turbo", ("t1",))
    nobody_says = _inventory({"old": None, "older": None})
    assert (nobody_says.choose("").name, nobody_says.choose("").targets) == ("", ("old", "older"))


def test_a_pin_serves_its_model_before_and_whatever_the_replica_answers():
    inventory = _inventory({"b": None, "t": [TURBO]}, pins={"b": "acestep-v15-base"})
    choice = inventory.choose("")
    assert (choice.name, choice.targets, choice.info.loaded) == ("acestep-v15-base", ("b",), False)
    answered = _inventory({"b": [BASE, TURBO]}, pins={"b": "acestep-v15-base"})
    assert answered.choose("").info == BASE
    with pytest.raises(NotFound):  # pinned to base: its turbo is not routed to
        answered.choose("acestep-v15-turbo")


def test_a_multi_model_lm_replica_marks_its_default():
    small = gen_pb2.ModelInfo(name="lm-small", kind=gen_pb2.MODEL_KIND_LM, loaded=True)
    big = gen_pb2.ModelInfo(name="lm-big", kind=gen_pb2.MODEL_KIND_LM, loaded=True, is_default=True)
    inventory = _inventory({"lm": [small, big]}, kind=gen_pb2.MODEL_KIND_LM)
    assert inventory.choose("").name == "lm-big"
    with pytest.raises(NotFound, match=r"^lm_model: no LM model 'lm-huge'"):
        inventory.choose("lm-huge")


def test_an_adapter_narrows_the_replicas_to_those_listing_it_for_the_chosen_model():
    inventory = _inventory({"t1": [TURBO, _adapter("lofi", "acestep-v15-turbo")], "t2": [TURBO],
                            "b1": [BASE, _adapter("drums", "acestep-v15-base")]})
    assert inventory.choose("", "lofi").targets == ("t1",)
    with pytest.raises(NotFound) as error:
        inventory.choose("", "drums")
    assert str(error.value) == ("adapter: 'drums' is not served for the DiT model acestep-v15-turbo; it is an "
                                "adapter of acestep-v15-base: set dit_model to 'acestep-v15-base'")
    assert inventory.choose("acestep-v15-base", "drums").targets == ("b1",)
    with pytest.raises(NotFound, match="ListModels lists the adapters"):
        inventory.choose("", "nope")


def test_the_chosen_model_is_checked_and_a_served_model_that_can_is_named():
    with pytest.raises(FailedPrecondition) as error:
        check_model(LEGO, 1, TURBO, [TURBO, BASE])
    assert "'lego'" in str(error.value) and "acestep-v15-turbo" in str(error.value)
    assert "set dit_model to 'acestep-v15-base', which this deployment also serves" in str(error.value)
    with pytest.raises(FailedPrecondition, match="--dit-model acestep-v15-base"):  # nothing served can: deploy one
        check_model(LEGO, 1, TURBO, [TURBO])
    with pytest.raises(InvalidArgument, match=r"^inference_steps: .* for more steps set dit_model to"):
        check_model(GenerationParams(caption="x", inference_steps=50), 1, TURBO, [BASE])
    check_model(LEGO, 1, BASE, [TURBO])
    check_model(LEGO, 1, gen_pb2.ModelInfo(name="acestep-v15-turbo", kind=DIT, loaded=False), [])  # loading


def test_the_flag_takes_pins_and_refuses_what_it_cannot_route():
    assert parse_pools(" a:1 , acestep-v15-base=dns:///b:2,,") == [("", "a:1"), ("acestep-v15-base", "dns:///b:2")]
    assert parse_targets("x=a:1,b:2") == ["a:1", "b:2"]
    assert backend_pools("dit", "t=a:1,b:2") == (["a:1", "b:2"], {"a:1": "t"})
    for spec, says in (("../x=a:1", "is not a model name"), ("a:1,t=a:1", "a:1 is given twice"),
                       ("t=", "an item without an address")):
        with pytest.raises(StartupError, match=says):
            backend_pools("dit", spec)


class _Replica(dit_pb2_grpc.DiffusionServiceServicer):
    """A DiT replica that serves one model and counts the Synthesize calls it gets."""

    def __init__(self, model: gen_pb2.ModelInfo):
        self.model = model
        self.calls = 0

    async def ListModels(self, request, context):
        return gen_pb2.ListModelsResponse(models=[self.model])

    async def Synthesize(self, request, context):
        self.calls += 1
        yield dit_pb2.SynthesizeResponse(progress=gen_pb2.Progress(message=request.params.dit_model))


async def test_requests_rotate_over_the_replicas_of_their_model_only():
    replicas = [_Replica(TURBO), _Replica(BASE), _Replica(TURBO)]
    servers, addresses = [], []
    for replica in replicas:
        server = grpc.aio.server()
        dit_pb2_grpc.add_DiffusionServiceServicer_to_server(replica, server)
        addresses.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        await server.start()
        servers.append(server)
    pool = ReplicaPool(addresses, dit_pb2_grpc.DiffusionServiceStub)
    catalog = ModelCatalog(pool)
    router = Router(catalog, DIT)
    try:
        for name in ["", "", "acestep-v15-base", "", "", "acestep-v15-base"]:
            choice, _ = await router.choose(name)
            async for _ in pool.stream("Synthesize", dit_pb2.SynthesizeRequest(), targets=choice.targets):
                pass
        assert [r.calls for r in replicas] == [2, 2, 2]
        assert catalog.fetches == 1  # one ListModels round answered every request
        listed = {m.name: m for m in await router.listing()}
        assert list(listed["acestep-v15-turbo"].replicas) == [addresses[0], addresses[2]]
        assert listed["acestep-v15-turbo"].is_default and not listed["acestep-v15-base"].is_default
        with pytest.raises(ValueError):
            pool._rotation(["nowhere:1"])
    finally:
        await pool.close()
        for server in servers:
            await server.stop(0)
