"""Phase 2 writes codes for the duration the plan chose, whatever the weights prefer (issue 10, point 7).

Without a user duration the CoT picks one (10..max_duration) and each item gets exactly 5 codes per
second of it: the tiny random model never samples EOS, so without this bound it wrote 4,032 codes
(806 s), which the DiT refuses. ``max_duration=20`` keeps the runs short (at most 100 codes).
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from acestep_client.convert import params_to_proto
from acestep_client.proto.acestep.v1 import lm_pb2, lm_pb2_grpc
from acestep_client.types import GenerationParams
from lm_service.planner import ItemCodes, ItemMetadata, Planner, PlanRequest
from lm_service.server import build_parser, start
from lm_service.vocab import DURATION_MIN

MAX_DURATION = 20


@pytest.fixture(scope="module")
def short_planner(planner: Planner, planner_options: dict[str, int]) -> Planner:
    """The tiny model, planning songs of at most 20 s (upstream lowers the limit the same way on small GPUs)."""
    return Planner(planner.tokenizer, planner.backend, max_duration=MAX_DURATION, **planner_options)


def _plan(planner: Planner, req: PlanRequest) -> tuple[dict[int, dict], dict[int, list[int]]]:
    metas: dict[int, dict] = {}
    codes: dict[int, list[int]] = {}
    for event in planner.plan(req):
        if isinstance(event, ItemMetadata):
            metas[event.item] = event.metadata
        elif isinstance(event, ItemCodes):
            codes[event.item] = event.codes
    return metas, codes


def test_without_a_duration_each_item_gets_the_codes_of_the_duration_its_cot_chose(short_planner: Planner) -> None:
    metas, codes = _plan(short_planner, PlanRequest(caption="rock", seeds=[1, 2]))
    for item in (0, 1):
        duration = metas[item]["duration"]
        assert DURATION_MIN <= duration <= MAX_DURATION  # the constrained decoder's duration tree
        assert f"duration: {duration}\n" in metas[item]["cot_text"]
        assert len(codes[item]) == 5 * duration


def test_the_user_duration_wins_over_the_cot(short_planner: Planner) -> None:
    metas, codes = _plan(short_planner, PlanRequest(caption="rock", duration=12.5, seeds=[3], lm_cfg_scale=1.0))
    assert len(codes[0]) == 62 and metas[0]["duration"] == 12


def test_unconstrained_codes_never_outrun_the_plan(short_planner: Planner) -> None:
    metas, codes = _plan(short_planner, PlanRequest(caption="rock", seeds=[4], lm_cfg_scale=1.0,
                                                    use_constrained_decoding=False))  # fmt: skip
    planned = metas[0].get("duration")
    limit = 5 * planned if isinstance(planned, (int, float)) else 5 * MAX_DURATION
    assert len(codes[0]) <= limit


@pytest.mark.parametrize(
    ("written", "planned", "reported"),
    [(15, 15.0, 15), (1000, 20.0, 20), (3, 10.0, 10), ("12", 12.0, 12), ("17.5", 17.5, 17.5), ("abc", None, "abc"),
     (None, None, None), ("nan", None, "nan")],
)  # fmt: skip
def test_a_cot_duration_is_clamped_into_range_and_written_back(short_planner: Planner, written, planned, reported):
    """Only unconstrained decoding can write such values; the metadata then reports what the codes cover."""
    metadata = {"duration": written} if written is not None else {}
    assert short_planner.planned_duration(PlanRequest(), metadata) == planned
    assert metadata.get("duration") == reported


def test_code_budget_follows_upstreams_rule_for_both_ends(short_planner: Planner) -> None:
    # Constrained: exactly int(5 * d), EOS masked before and forced at the count (upstream's target_codes).
    assert short_planner.code_budget(12.5, constrained=True) == (62, 62)
    # Unconstrained: EOS may end it early; the planned count is the ceiling (upstream adds 500 more).
    assert short_planner.code_budget(12.5, constrained=False) == (None, 62)
    # No duration at all (use_cot_metas=False): EOS or max_duration's worth, never beyond the DiT's limit.
    assert short_planner.code_budget(None, constrained=True) == (None, min(short_planner.max_new_tokens, 100))


async def test_the_lm_server_plans_codes_for_the_duration_it_chose(tiny_lm_dir: Path) -> None:
    args = build_parser().parse_args([
        "--checkpoints", str(tiny_lm_dir.parent), "--model", tiny_lm_dir.name, "--device", "cpu",
        "--dtype", "float32", "--port", "0", "--host", "127.0.0.1", "--max-duration", str(MAX_DURATION),
    ])  # fmt: skip
    running = await start(args, announce=lambda line: None)
    try:
        await running.loaded
        params = params_to_proto(GenerationParams(caption="lofi", lm_cfg_scale=1.0))  # duration unset (-1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = lm_pb2_grpc.LanguageModelServiceStub(channel)
            events = [e async for e in stub.Plan(lm_pb2.PlanRequest(params=params, seeds=[7, 8], generate_codes=True))]
            durations = {e.metadata.item_index: e.metadata.metadata.duration for e in events if e.HasField("metadata")}
            codes = {e.codes.item_index: list(e.codes.codes) for e in events if e.HasField("codes")}
            assert sorted(codes) == [0, 1]
            for item, item_codes in codes.items():
                assert DURATION_MIN <= durations[item] <= MAX_DURATION
                assert len(item_codes) == 5 * durations[item] <= 3000
            # The same limit bounds what a caller may ask for, before any model work.
            too_long = params_to_proto(GenerationParams(caption="lofi", duration=30.0, lm_cfg_scale=1.0))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                [e async for e in stub.Plan(lm_pb2.PlanRequest(params=too_long, seeds=[1], generate_codes=True))]
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "duration" in info.value.details() and str(MAX_DURATION) in info.value.details()
    finally:
        await running.stop()


def test_max_duration_flag_outside_the_range_is_refused_at_start() -> None:
    import asyncio

    from acestep_serving.preflight import StartupError

    args = build_parser().parse_args(["--max-duration", "900", "--port", "0"])
    with pytest.raises(StartupError, match="--max-duration 900"):
        asyncio.run(start(args, announce=lambda line: None))
