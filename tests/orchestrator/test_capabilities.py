"""Requests are checked against the models the replicas report, and that knowledge stays current."""

from __future__ import annotations

import grpc
import pytest

from acestep_client import GenerationConfig, GenerationParams
from acestep_client.errors import FailedPrecondition, InvalidArgument
from acestep_client.proto.acestep.v1 import dit_pb2_grpc
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from orchestrator.capabilities import RETRY_SECONDS, ModelCatalog, check_request
from orchestrator.notices import Notices, seed_warnings
from orchestrator.replicas import ReplicaPool

T = gen_pb2
TURBO = gen_pb2.ModelInfo(
    name="acestep-v15-turbo", kind=T.MODEL_KIND_DIT, loaded=True, is_turbo=True, min_inference_steps=1,
    max_inference_steps=8, default_inference_steps=8, max_duration_s=600, max_batch_size=8,
    task_types=[T.TASK_TYPE_TEXT2MUSIC, T.TASK_TYPE_COVER, T.TASK_TYPE_REPAINT],
)
BASE = gen_pb2.ModelInfo(
    name="acestep-v15-base", kind=T.MODEL_KIND_DIT, loaded=True, min_inference_steps=1, max_inference_steps=200,
    default_inference_steps=8, max_duration_s=600, max_batch_size=8,
    task_types=[T.TASK_TYPE_TEXT2MUSIC, T.TASK_TYPE_COVER, T.TASK_TYPE_REPAINT, T.TASK_TYPE_LEGO,
                T.TASK_TYPE_EXTRACT, T.TASK_TYPE_COMPLETE],
)
LEGO = GenerationParams(task_type="lego", src_audio="a.wav", instruction="Generate the drums track:")


def test_steps_over_the_turbo_limit_name_the_field_the_range_and_the_model():
    with pytest.raises(InvalidArgument) as error:
        check_request(GenerationParams(caption="x", inference_steps=64), 1, [TURBO])
    message = str(error.value)
    assert error.value.field == "inference_steps"
    assert "between 1 and 8" in message and "acestep-v15-turbo" in message and "got 64" in message
    check_request(GenerationParams(caption="x", inference_steps=64), 1, [BASE])


def test_base_only_tasks_on_turbo_say_how_to_serve_a_base_model():
    with pytest.raises(FailedPrecondition) as error:
        check_request(LEGO, 1, [TURBO])
    message = str(error.value)
    assert "'lego'" in message and "acestep-v15-turbo" in message and "--dit-model acestep-v15-base" in message
    check_request(LEGO, 1, [BASE])


def test_batch_and_duration_follow_the_models_limits():
    small = gen_pb2.ModelInfo()
    small.CopyFrom(BASE)
    small.max_batch_size, small.max_duration_s = 2, 240
    with pytest.raises(InvalidArgument, match=r"^batch_size: must be between 1 and 2"):
        check_request(GenerationParams(caption="x"), 3, [small])
    with pytest.raises(InvalidArgument, match=r"^duration: must be at most 240 seconds"):
        check_request(GenerationParams(caption="x", duration=300), 1, [small])


def test_unknown_or_loading_models_leave_the_check_to_the_backend():
    check_request(LEGO, 1, [])  # the replicas could not say: nothing to check against
    check_request(LEGO, 1, [gen_pb2.ModelInfo(name="acestep-v15-turbo", kind=T.MODEL_KIND_DIT, loaded=False)])
    check_request(LEGO, 1, [TURBO, BASE])  # one of the replicas serves it


class _Replica(dit_pb2_grpc.DiffusionServiceServicer):
    """A DiT replica's ListModels, answering what the test sets and counting the calls."""

    def __init__(self, models=None):
        self.models = models
        self.calls = 0

    async def ListModels(self, request, context):
        self.calls += 1
        if self.models is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "an older build")
        return gen_pb2.ListModelsResponse(models=self.models)


async def _serve(replica: _Replica) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    dit_pb2_grpc.add_DiffusionServiceServicer_to_server(replica, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_the_catalog_asks_once_then_again_after_the_refresh_interval_or_a_failure():
    replica = _Replica([TURBO])
    server, address = await _serve(replica)
    pool = ReplicaPool([address], dit_pb2_grpc.DiffusionServiceStub)
    now = [0.0]
    catalog = ModelCatalog(pool, refresh_seconds=30, clock=lambda: now[0])
    try:
        assert replica.calls == 0  # lazily: nothing asked before the first need
        assert [m.name for m in await catalog.models()] == ["acestep-v15-turbo"]
        await catalog.models()
        assert replica.calls == 1
        now[0] = 31.0
        replica.models = [BASE]  # the replica was redeployed with a base model
        assert [m.name for m in await catalog.models()] == ["acestep-v15-base"]
        assert replica.calls == 2
        catalog.invalidate()  # what the pipeline does when a DiT call fails
        await catalog.models()
        assert replica.calls == 3
    finally:
        await pool.close()
        await server.stop(0)


async def test_a_replica_without_list_models_is_asked_again_soon_and_never_blocks_requests():
    old, new = _Replica(None), _Replica([TURBO, TURBO])
    (old_server, old_address), (new_server, new_address) = await _serve(old), await _serve(new)
    pool = ReplicaPool([old_address, new_address], dit_pb2_grpc.DiffusionServiceStub)
    now = [0.0]
    catalog = ModelCatalog(pool, clock=lambda: now[0])
    try:
        assert [m.name for m in await catalog.models()] == ["acestep-v15-turbo"]  # replicas' copies listed once
        now[0] = RETRY_SECONDS + 0.1  # an incomplete answer is kept only briefly
        await catalog.models()
        assert (old.calls, new.calls) == (2, 2)
    finally:
        await pool.close()
        await old_server.stop(0)
        await new_server.stop(0)


@pytest.mark.parametrize(
    ("config", "says"),
    [
        (GenerationConfig(seeds=[5, 6]), "use_random_seed=false"),
        (GenerationConfig(seeds=7), "use_random_seed=false"),
        (GenerationConfig(seeds=[1, 2, 3], use_random_seed=False), "only the first 2 were used"),
        (GenerationConfig(seeds=[1], use_random_seed=False), "item 1 got a random seed"),
        (GenerationConfig(seeds=[1], use_random_seed=False, batch_size=4), "items 1-3 got random seeds"),
    ],
)
def test_seeds_the_request_gave_but_did_not_get_are_reported(config, says):
    (warning,) = seed_warnings(config)
    assert warning.field == "seeds" and says in warning.message


def test_seeds_used_as_given_need_no_warning():
    assert seed_warnings(GenerationConfig(seeds=[1, 2], use_random_seed=False)) == []
    assert seed_warnings(GenerationConfig()) == []


def test_warnings_end_the_status_once_each_and_travel_in_done():
    notices = Notices()
    caption = gen_pb2.Warning(field="caption", message="kept 170 of its 1200 tokens")
    notices.add(caption, gen_pb2.Warning(field="seeds", message="ignored"), caption)
    done = notices.done("generated 1 item(s) in 2.00 s", 1)
    assert [w.field for w in done.warnings] == ["caption", "seeds"]
    assert done.status_message == ("generated 1 item(s) in 2.00 s\nwarning (caption): kept 170 of its 1200 tokens"
                                   "\nwarning (seeds): ignored")
