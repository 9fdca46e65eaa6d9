"""Dynamic batching (issue 9): concurrent requests share forwards, and no item can tell.

Merged runs are compared with each request run alone (same seed) on the tiny fp32 CPU checkpoints.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F

from acestep_client.errors import Cancelled
from dit_service.batch_ops import merge_cross_kv
from dit_service.batcher import BatchInfo, BatchOp, ForwardBatcher
from dit_service.engine import DiTEngine, StepProgress, SynthesisRequest
from dit_service.model.text_encoder import LYRIC_MAX_TOKENS
from dit_service.prompts import lyric_prompt

from .conftest import RunResult

TOLERANCE = 1e-6
SHORT_LYRICS = "[verse]\nla la"  # ~40 tokens with the prompt around it
LONG_LYRICS = "[verse]\n" + "\n".join(f"line {i} of a long song, love and rain" for i in range(10))  # ~400 tokens


class Recorder:
    """Observer that keeps every merged forward."""

    def __init__(self) -> None:
        self.infos: list[BatchInfo] = []

    def __call__(self, info: BatchInfo) -> None:
        self.infos.append(info)

    def shapes(self, kind: str) -> list[tuple[int, int]]:
        return [(info.calls, info.rows) for info in self.infos if info.kind == kind]


@contextlib.contextmanager
def batching(engine: DiTEngine, wait_ms: float = 10_000, max_items: int = 16) -> Iterator[Recorder]:
    """Give ``engine`` a batcher with a wide window for the test, then put its own back."""
    recorder = Recorder()
    batcher = ForwardBatcher(batch_wait_ms=wait_ms, max_batch_items=max_items, observer=recorder)
    original, engine.batcher = engine.batcher, batcher
    try:
        yield recorder
    finally:
        engine.batcher = original
        batcher.close()


def run_together(engine: DiTEngine, jobs: list[Callable[[], object]]) -> list[object]:
    """Run ``jobs`` in threads, holding the batcher until each has a call waiting, so the first forward merges."""
    results: list[object] = [None] * len(jobs)

    def target(index: int) -> None:
        try:
            results[index] = jobs[index]()
        except BaseException as exc:  # reported to the test below
            results[index] = exc

    threads = [threading.Thread(target=target, args=(i,)) for i in range(len(jobs))]
    with engine.batcher.session():  # an open session with no call: the worker waits for it
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while engine.batcher.waiting_calls < len(jobs) and time.monotonic() < deadline:
            time.sleep(0.005)
    for thread in threads:
        thread.join(60)
    return results


def synth_job(engine: DiTEngine, should_stop: Callable[[], bool] = lambda: False, **fields):
    return lambda: RunResult(list(engine.synthesize(SynthesisRequest(**fields), should_stop)))


def latents_job(engine: DiTEngine, **fields):
    return lambda: engine.sample_latents(SynthesisRequest(**fields))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


def lyric_tokens(engine: DiTEngine, lyrics: str) -> int:
    return len(engine.text_encoder.tokenizer.encode(lyric_prompt("en", lyrics), LYRIC_MAX_TOKENS))


SHORT = dict(caption="lofi piano", lyrics=SHORT_LYRICS, vocal_language="en", duration=10, seeds=[3])
LONG = dict(
    caption="epic orchestral metal with choir", lyrics=LONG_LYRICS, vocal_language="en", bpm=140,
    keyscale="D minor", duration=10, seeds=[7],
)
LONG_PAIR = {**LONG, "seeds": [7, 8]}  # two items: rows 2 + 1 (latents only; the CPU VAE is slow on 3 rows)


def test_merged_requests_match_each_run_alone(turbo_engine):
    assert 30 <= lyric_tokens(turbo_engine, SHORT_LYRICS) <= 60
    assert 350 <= lyric_tokens(turbo_engine, LONG_LYRICS) <= 450
    alone = [synth_job(turbo_engine, **SHORT)(), synth_job(turbo_engine, **LONG)()]
    alone_latents = [latents_job(turbo_engine, **SHORT)(), latents_job(turbo_engine, **LONG_PAIR)()]

    with batching(turbo_engine) as recorder:
        merged = run_together(turbo_engine, [synth_job(turbo_engine, **SHORT), synth_job(turbo_engine, **LONG)])
    # 8 turbo steps and the one 250-frame VAE window, each as one forward of both requests.
    assert recorder.shapes("dit") == [(2, 2)] * 8
    assert recorder.shapes("vae") == [(2, 2)]
    with batching(turbo_engine) as recorder:
        merged_latents = run_together(
            turbo_engine, [latents_job(turbo_engine, **SHORT), latents_job(turbo_engine, **LONG_PAIR)]
        )
    assert recorder.shapes("dit") == [(2, 3)] * 8

    for solo, together in zip(alone, merged, strict=True):
        assert isinstance(together, RunResult), together
        assert len(together.done) == len(solo.done)
        for item in range(len(solo.done)):
            assert max_diff(together.audio(item), solo.audio(item)) <= TOLERANCE
    for solo, together in zip(alone_latents, merged_latents, strict=True):
        assert max_diff(together, solo) <= TOLERANCE


def test_padded_conditions_would_change_the_output_and_grouped_kv_does_not(turbo_engine):
    """The trap: the released DiT never masks cross-attention keys, so padding alone changes an item."""
    decoder = turbo_engine.model.decoder
    generator = torch.Generator().manual_seed(0)
    hidden, channels = turbo_engine.config.hidden_size, turbo_engine.latent_channels

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    with torch.inference_mode():
        short_kv = decoder.precompute_cross_kv(randn(1, 40, hidden))
        long_kv = decoder.precompute_cross_kv(randn(1, 400, hidden))
        x, ctx, t = randn(2, 100, channels), randn(2, 100, 2 * channels), torch.tensor([0.9, 0.5])
        short_alone = decoder(x[:1], t[:1], ctx[:1], short_kv)
        long_alone = decoder(x[1:], t[1:], ctx[1:], long_kv)
        padded = [
            (torch.cat([F.pad(ks, (0, 0, 0, 360)), kl]), torch.cat([F.pad(vs, (0, 0, 0, 360)), vl]))
            for (ks, vs), (kl, vl) in zip(short_kv, long_kv, strict=True)
        ]
        naive = decoder(x, t, ctx, padded, row_groups=[1, 1])
        merged = decoder(x, t, ctx, merge_cross_kv([short_kv, long_kv]), row_groups=[1, 1])
    assert max_diff(naive[:1], short_alone) > 1e-3
    assert max_diff(merged[:1], short_alone) <= TOLERANCE
    assert max_diff(merged[1:], long_alone) <= TOLERANCE


def test_different_latent_lengths_do_not_merge_but_both_finish(turbo_engine):
    other = {**SHORT, "duration": 12, "seeds": [4]}
    alone = [latents_job(turbo_engine, **SHORT)(), latents_job(turbo_engine, **other)()]
    with batching(turbo_engine) as recorder:
        together = run_together(turbo_engine, [latents_job(turbo_engine, **SHORT), latents_job(turbo_engine, **other)])
    assert recorder.shapes("dit") == [(1, 1)] * 16
    for solo, run in zip(alone, together, strict=True):
        assert isinstance(run, torch.Tensor), run
        assert max_diff(run, solo) <= TOLERANCE


def test_a_cancelled_request_leaves_and_the_other_finishes_unchanged(turbo_engine):
    alone = synth_job(turbo_engine, **LONG)()
    steps: list[StepProgress] = []

    def stop_after_three() -> bool:
        return len(steps) >= 3

    def cancelled_job():
        for event in turbo_engine.synthesize(SynthesisRequest(**SHORT), stop_after_three):
            if isinstance(event, StepProgress):
                steps.append(event)
        return "finished"

    with batching(turbo_engine) as recorder:
        cancelled, survivor = run_together(turbo_engine, [cancelled_job, synth_job(turbo_engine, **LONG)])
    assert isinstance(cancelled, Cancelled)
    assert (2, 2) in recorder.shapes("dit")  # they did share forwards before the cancel
    assert isinstance(survivor, RunResult), survivor
    assert max_diff(survivor.audio(0), alone.audio(0)) <= TOLERANCE


def test_cfg_request_merges_with_an_unguided_one(base_engine):
    guided = dict(caption="folk", lyrics=SHORT_LYRICS, duration=10, seeds=[1], inference_steps=4, guidance_scale=7.0)
    plain = dict(caption="drum and bass", lyrics=LONG_LYRICS, duration=10, seeds=[2], inference_steps=6,
                 guidance_scale=1.0)
    alone = [latents_job(base_engine, **guided)(), latents_job(base_engine, **plain)()]
    with batching(base_engine) as recorder:
        together = run_together(base_engine, [latents_job(base_engine, **guided), latents_job(base_engine, **plain)])
    # The doubled [cond; uncond] rows of the guided request ride with the plain one for its 4 steps.
    assert recorder.shapes("dit") == [(2, 3)] * 4 + [(1, 1)] * 2
    for solo, run in zip(alone, together, strict=True):
        assert max_diff(run, solo) <= TOLERANCE


def test_a_lone_request_does_not_wait_out_the_window(turbo_engine):
    with batching(turbo_engine, wait_ms=60_000) as recorder:
        start = time.monotonic()
        turbo_engine.sample_latents(SynthesisRequest(**SHORT))
    assert time.monotonic() - start < 30
    assert recorder.shapes("dit") == [(1, 1)] * 8


# ---------------------------------------------------------------------- the batcher alone (plain functions)
def submit_in_thread(batcher: ForwardBatcher, op: BatchOp, key, rows: int, payload, stop=lambda: False):
    box: dict = {}

    def target() -> None:
        with batcher.session(stop) as session:
            try:
                box["result"] = session.submit(op, key, rows, payload)
            except BaseException as exc:
                box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_rows_are_capped_fifo_and_an_oversized_call_runs_alone():
    batcher = ForwardBatcher(batch_wait_ms=10_000, max_batch_items=4)
    groups: list[list[tuple[int, int]]] = []

    def run(payloads):
        groups.append(payloads)
        return payloads

    op = BatchOp("rows", run)
    try:
        with batcher.session():  # hold the worker until every call is queued, in this order
            started = []
            for i, rows in enumerate([3, 2, 6, 1]):
                started.append(submit_in_thread(batcher, op, "k", rows, (i, rows)))
                wait_for(lambda n=i + 1: batcher.waiting_calls + sum(map(len, groups)) == n)
        for thread, _ in started:
            thread.join(10)
    finally:
        batcher.close()
    # Oldest first; the 2-row call does not fit beside the 3-row one but the 1-row call does (and fills the
    # batch, so it starts at once); the 6-row call is over the cap and runs alone.
    assert groups == [[(0, 3), (3, 1)], [(1, 2)], [(2, 6)]]
    assert [box["result"] for _, box in started] == [(0, 3), (1, 2), (2, 6), (3, 1)]


def test_requests_that_meet_mid_run_converge_on_shared_forwards():
    """B arrives while A's first forward runs and waits longer than the window behind it: B's call must
    still wait for A's next one rather than run alone, or the two would take turns for the whole song."""
    window_s = 1.0
    b_queued = threading.Event()
    groups: list[list[tuple[str, int]]] = []

    def run(payloads):
        if not groups:  # A's first forward: hold the worker until B's call has queued past the window
            assert b_queued.wait(10)
            time.sleep(window_s + 0.2)
        groups.append(payloads)
        return payloads

    op = BatchOp("steps", run)
    batcher = ForwardBatcher(batch_wait_ms=window_s * 1000)

    def request(name: str) -> None:
        with batcher.session() as session:
            for step in range(3):
                session.submit(op, "k", 1, (name, step))

    try:
        a = threading.Thread(target=request, args=("a",))
        a.start()
        wait_for(lambda: batcher._sessions == 1 and batcher.waiting_calls == 0)  # A's first forward runs
        b = threading.Thread(target=request, args=("b",))
        b.start()
        wait_for(lambda: batcher.waiting_calls == 1)
        b_queued.set()
        a.join(30)
        b.join(30)
    finally:
        batcher.close()
    merged = [sorted(group) for group in groups]  # within a forward, rows follow submit order (either)
    assert merged == [[("a", 0)], [("a", 1), ("b", 0)], [("a", 2), ("b", 1)], [("b", 2)]]


def test_a_waiting_caller_can_leave_and_a_failing_batch_only_fails_its_callers():
    entered, release = threading.Event(), threading.Event()

    def blocking(payloads):
        entered.set()
        release.wait(10)
        return payloads

    def failing(payloads):
        raise RuntimeError("forward failed")

    block_op, fail_op, ok_op = BatchOp("block", blocking), BatchOp("fail", failing), BatchOp("ok", lambda p: p)
    batcher = ForwardBatcher(batch_wait_ms=0)
    stop = threading.Event()
    try:
        busy, busy_box = submit_in_thread(batcher, block_op, None, 1, "busy")
        assert entered.wait(10)  # the worker is inside the blocking forward
        leaver, leaver_box = submit_in_thread(batcher, ok_op, None, 1, "leaver", stop.is_set)
        failer, failer_box = submit_in_thread(batcher, fail_op, None, 1, "failer")
        wait_for(lambda: batcher.waiting_calls == 2)
        stop.set()
        leaver.join(10)
        assert isinstance(leaver_box.get("error"), Cancelled)
        assert batcher.waiting_calls == 1
        release.set()
        for thread in (busy, failer):
            thread.join(10)
        assert busy_box == {"result": "busy"}
        assert isinstance(failer_box.get("error"), RuntimeError)
        after, after_box = submit_in_thread(batcher, ok_op, None, 1, "after")
        after.join(10)
        assert after_box == {"result": "after"}  # the worker survived the failure
    finally:
        release.set()
        batcher.close()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        ForwardBatcher(batch_wait_ms=-1)
    with pytest.raises(ValueError):
        ForwardBatcher(max_batch_items=0)


# ---------------------------------------------------------------------- serving side
def test_server_flags_and_metrics_exist_from_startup():
    from prometheus_client import generate_latest

    from dit_service.server import DiTMetrics, build_parser

    args = build_parser().parse_args([])
    assert (args.max_concurrency, args.batch_wait_ms, args.max_batch_items) == (8, 5.0, 16)
    metrics = DiTMetrics()
    text = generate_latest(metrics.registry).decode()
    for name in ("acestep_dit_batch_items", "acestep_dit_vae_batch_items", "acestep_queue_time_seconds"):
        assert f'{name}_count{{component="dit"}} 0.0' in text
    metrics.observe_batch(BatchInfo("dit", calls=2, rows=3, seconds=0.1))
    metrics.observe_batch(BatchInfo("vae", calls=2, rows=2, seconds=0.1))
    metrics.admission_waited(0.25)
    text = generate_latest(metrics.registry).decode()
    assert 'acestep_dit_batch_items_sum{component="dit"} 3.0' in text
    assert 'acestep_dit_vae_batch_items_sum{component="dit"} 2.0' in text
    assert 'acestep_queue_time_seconds_sum{component="dit"} 0.25' in text
