"""Continuous batching: many requests share the LM's decode batch, and none of them can tell.

Tiny random checkpoint (outputs are noise); what is checked is that a request's CoT, codes and text
are exactly what it gets alone, that rows really share steps, and that cancelling frees KV slots.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from acestep_client.errors import Cancelled, InvalidArgument
from lm_service.describe import DescribeRequest, Description
from lm_service.engine import EngineObserver, EngineOptions, GroupSpec
from lm_service.engine.kv_pool import KVPool
from lm_service.engine.sequence import Row
from lm_service.planner import ItemCodes, ItemMetadata, Planner, PlanRequest

from .conftest import TEST_PLANNER_OPTIONS


class RecordingObserver(EngineObserver):
    def __init__(self) -> None:
        self.rows: list[int] = []
        self.usage: list[float] = []

    def decode_step(self, rows: int) -> None:
        self.rows.append(rows)

    def kv_usage(self, ratio: float) -> None:
        self.usage.append(ratio)


@pytest.fixture(scope="module")
def observed(tiny_lm_dir) -> tuple[Planner, RecordingObserver]:
    observer = RecordingObserver()
    options = {**TEST_PLANNER_OPTIONS, "engine_observer": observer, "engine_options": EngineOptions(max_num_seqs=8)}
    return Planner.load(tiny_lm_dir, planner_options=options), observer


def _outputs(planner: Planner, job, should_stop=lambda: False):
    if isinstance(job, DescribeRequest):
        events = list(planner.describe(job, should_stop))
        return [e.raw_text for e in events if isinstance(e, Description)]
    events = list(planner.plan(job, should_stop))
    return [(e.item, e.metadata["cot_text"]) for e in events if isinstance(e, ItemMetadata)] + [
        (e.item, e.codes) for e in events if isinstance(e, ItemCodes)
    ]


def _run_concurrently(planner: Planner, jobs: list, stops=None) -> list:
    results: list = [None] * len(jobs)
    stops = stops or [lambda: False] * len(jobs)

    def work(index: int) -> None:
        try:
            results[index] = _outputs(planner, jobs[index], stops[index])
        except Exception as exc:  # reported, not swallowed: the test compares it
            results[index] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


JOBS = [
    PlanRequest(caption="calm piano", lyrics="la la la", duration=10.0, seeds=[1]),
    PlanRequest(caption="loud rock anthem", lyrics="[Verse]\n" + "yeah " * 40, duration=12.0, seeds=[2, 3],
                lm_cfg_scale=2.5),
    PlanRequest(caption="jazz", bpm=90, keyscale="F major", timesignature="3", duration=11.0, seeds=[4],
                lm_cfg_scale=1.0),
    DescribeRequest(mode="create_sample", query="a sad waltz", seed=5, max_new_tokens=40),
]  # fmt: skip


def test_concurrent_requests_equal_their_runs_alone(observed) -> None:
    planner, observer = observed
    alone = [_outputs(planner, job) for job in JOBS]
    observer.rows.clear()
    together = _run_concurrently(planner, JOBS)
    assert together == alone
    # Rows of different requests really shared decode steps (CFG pairs count two rows).
    assert max(observer.rows) >= 4
    assert planner.engine.pool.active == 0


def test_cancelling_one_request_leaves_the_others_unchanged(observed) -> None:
    planner, _ = observed
    alone = [_outputs(planner, job) for job in JOBS[:3]]
    calls = {"n": 0}

    def stop_soon() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    cancelled = PlanRequest(caption="to be cancelled", duration=20.0, seeds=[9, 10], lm_cfg_scale=2.0)
    results = _run_concurrently(planner, [*JOBS[:3], cancelled], [*[lambda: False] * 3, stop_soon])
    assert results[:3] == alone
    assert isinstance(results[3], Cancelled)
    deadline = time.monotonic() + 5
    while planner.engine.pool.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert planner.engine.pool.active == 0 and planner.engine.waiting_groups == 0


def test_more_rows_than_kv_slots_wait_and_finish(tiny_lm_dir) -> None:
    """8 CFG songs need 16 rows; with 4 slots they run in waves, each song as it is alone."""
    observer = RecordingObserver()
    options = {**TEST_PLANNER_OPTIONS, "engine_observer": observer, "engine_options": EngineOptions(max_num_seqs=4)}
    planner = Planner.load(tiny_lm_dir, planner_options=options)
    request = PlanRequest(caption="waves", duration=10.0, seeds=list(range(8)), lm_cfg_scale=2.0)
    codes = dict(x for x in _outputs(planner, request) if isinstance(x[1], list))
    assert max(observer.rows) == 4 and max(observer.usage) == 1.0
    one = dict(x for x in _outputs(planner, PlanRequest(caption="waves", duration=10.0, seeds=[6], lm_cfg_scale=2.0))
               if isinstance(x[1], list))  # fmt: skip
    assert codes[6] == one[0] and len(codes) == 8


def test_a_long_prefill_does_not_stall_running_rows(tiny_lm_dir, planner_options) -> None:
    """Prefill goes a chunk at a time between decode steps, so a decoding row keeps its pace."""
    observer = RecordingObserver()
    options = {**planner_options, "engine_observer": observer,
               "engine_options": EngineOptions(max_num_seqs=4, prefill_chunk=8, prefill_budget=8)}  # fmt: skip
    planner = Planner.load(tiny_lm_dir, planner_options=options)
    engine = planner.engine
    params = planner_sampling()
    runner = engine.submit([GroupSpec([5, 6, 7], torch.Generator().manual_seed(0), params, 90)])
    while not observer.rows:
        time.sleep(0.001)
    long_prompt = list(range(10, 410))  # 400 tokens = 50 chunks
    late = engine.submit([GroupSpec(long_prompt, torch.Generator().manual_seed(1), params, 4)])
    for handle in (runner, late):
        while handle.events.get(timeout=60)[0] != "done":
            pass
    # While the 50 chunks were prefilled, the first row kept decoding (one row per step).
    assert observer.rows.count(1) >= 50


def test_prompt_longer_than_a_kv_slot_is_refused_by_name(tiny_lm_dir, planner_options) -> None:
    options = {**planner_options, "engine_options": EngineOptions(max_num_seqs=2, max_model_len=64)}
    planner = Planner.load(tiny_lm_dir, planner_options=options)
    with pytest.raises(InvalidArgument, match="lyrics"):
        planner.engine.submit([GroupSpec(list(range(60)), torch.Generator(), planner_sampling(), 10)])


def planner_sampling():
    from lm_service.decoding import SamplingParams

    return SamplingParams(temperature=0.85, top_k=0, top_p=0.9, cfg_scale=1.0)


def test_kv_pool_keeps_rows_compact_and_their_cache_with_them() -> None:
    pool = KVPool(1, 4, 1, 8, 2, torch.float32, torch.device("cpu"))
    rows = [Row([1]) for _ in range(4)]
    for value, row in enumerate(rows, start=1):
        pool.allocate(row)
        row.length = 3
        pool.k[0, row.slot, 0, :3] = value
    pool.promote(rows[2])
    pool.promote(rows[0])
    assert [r.slot for r in rows[:3]] == [1, 2, 0] and pool.ready == 2
    pool.release(rows[2])  # a decoding row leaves: both regions stay compact
    assert pool.ready == 1 and pool.active == 3
    for value, row in ((1, rows[0]), (2, rows[1]), (4, rows[3])):
        assert 0 <= row.slot < 3 and bool((pool.k[0, row.slot, 0, :3] == value).all())
    assert pool.owners[0] is rows[0]


def test_padded_decode_step_of_cuda_graphs_leaves_prefilling_rows_alone(planner) -> None:
    """A captured step runs a fixed number of rows: the padding rows write only the scratch slot, so a
    row still being prefilled keeps its cache, and the live rows get exactly the unpadded result."""
    from lm_service.engine.runner import ModelRunner

    backend = planner.backend
    pool = KVPool(backend.num_layers, 4, backend.num_kv_heads, 32, backend.head_dim, backend.dtype, backend.device)
    runner = ModelRunner(backend, pool, torch.tensor([0]))
    rows = [Row([5, 6, 7]), Row([8, 9]), Row([10, 11, 12, 13])]
    for row in rows:
        pool.allocate(row)
        runner.prefill(row.slot, row.prompt, 0)
        row.length = len(row.prompt)
    pool.promote(rows[0])
    pool.promote(rows[1])  # rows[2] is still "prefilling" in slot 2
    prefilling_cache = pool.k[:, 2].clone()
    tokens, positions = torch.tensor([20, 21]), torch.tensor([3, 2])
    padded = runner._decode_eager(torch.tensor([20, 21, 0, 0]), torch.tensor([3, 2, 0, 0]),
                                  torch.tensor([0, 1, pool.scratch_slot, pool.scratch_slot]), kv_len=4)[:2]  # fmt: skip
    assert torch.equal(pool.k[:, 2], prefilling_cache)
    exact = runner.decode(tokens, positions)
    # Equal up to the GEMM's rounding at 4 rows instead of 2 (about 3e-6 on CPU).
    assert torch.allclose(padded, exact, atol=1e-5)
