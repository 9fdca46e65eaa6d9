"""The LM engine: one scheduler thread owns the model, many requests share its decode batch.

Each iteration (nano-vllm's shape: scheduler -> KV pool -> model runner):
1. drop the groups of cancelled requests (their KV slots free at once);
2. admit waiting groups in arrival order while the KV pool has slots for all their rows;
3. prefill: fixed-size prompt chunks (``prefill_chunk`` tokens), at most ``prefill_budget`` tokens per
   iteration, so a long prompt never stalls the running rows for more than a chunk or two;
4. one decode step for every decoding row, then one sampling pass over every group that has logits;
5. finished groups leave the batch and free their slots; requests get progress and their outputs.

Callers (the planner, on its request's worker thread) submit :class:`GroupSpec` lists and iterate
events; polling their ``should_stop`` there cancels the request within one iteration.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from acestep_client.errors import Cancelled, InvalidArgument

from ..backends.torch_backend import TorchQwen3Backend
from ..decoding import PROGRESS_EVERY
from ..vocab import TokenTable
from .kv_pool import KVPool
from .runner import ModelRunner
from .sampler import GroupSampler
from .sequence import GroupSpec, SequenceGroup

log = logging.getLogger(__name__)

POLL_SECONDS = 0.02


class EngineObserver:
    """Hooks for the serving layer's metrics (the engine itself knows nothing of Prometheus)."""

    def decode_step(self, rows: int) -> None: ...
    def kv_usage(self, ratio: float) -> None: ...
    def queue_time(self, seconds: float) -> None: ...
    def first_token(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class EngineOptions:
    max_num_seqs: int = 16  # KV slots: rows decoding at once (a CFG song takes two)
    max_model_len: int = 8192  # positions per slot: prompt + generated tokens
    prefill_chunk: int = 512
    prefill_budget: int = 2048  # prompt tokens per iteration (at least one chunk)


class RequestHandle:
    def __init__(self, engine: LMEngine, specs: list[GroupSpec]):
        self.engine = engine
        self.events: queue.Queue = queue.Queue()
        self.groups = [SequenceGroup(spec, self, index) for index, spec in enumerate(specs)]
        self.unfinished = len(self.groups)
        self.cancelled = False
        self.submitted_at = time.perf_counter()
        self.first_token_seen = False
        self.reported = 0

    @property
    def done(self) -> bool:
        return self.unfinished == 0

    def cancel(self) -> None:
        self.cancelled = True
        self.engine._wake()


class LMEngine:
    def __init__(
        self,
        backend: TorchQwen3Backend,
        table: TokenTable,
        caption_block: torch.Tensor,
        options: EngineOptions | None = None,
        observer: EngineObserver | None = None,
        text_block: torch.Tensor | None = None,
    ):
        self.options = options or EngineOptions()
        if self.options.max_num_seqs < 2:
            raise ValueError("max_num_seqs must be >= 2 (a CFG song needs a cond and an uncond row)")
        self.observer = observer or EngineObserver()
        self.pool = KVPool(
            backend.num_layers, self.options.max_num_seqs, backend.num_kv_heads, self.options.max_model_len,
            backend.head_dim, backend.dtype, backend.device,
        )  # fmt: skip
        lo, hi = table.code_id_range()
        code_ids = torch.cat([torch.arange(lo, hi), torch.tensor([table.eos_id])])
        self.runner = ModelRunner(backend, self.pool, code_ids)
        self.sampler = GroupSampler(self.runner, lo, hi - lo, table.eos_id, caption_block, text_block)
        self.stop_ids = {table.eos_id} | ({table.pad_id} if table.pad_id is not None else set())
        self._cv = threading.Condition()
        self._incoming: list[RequestHandle] = []
        self._waiting: deque[SequenceGroup] = deque()
        self._prefilling: list[SequenceGroup] = []
        self._running: list[SequenceGroup] = []
        self._closed = False
        self.observer.kv_usage(0.0)
        self._thread = threading.Thread(target=self._loop, name="lm-engine", daemon=True)
        self._thread.start()
        atexit.register(_close_engine, weakref.ref(self))  # a thread killed mid-forward aborts the process

    # -- public ------------------------------------------------------------------------------------
    def submit(self, specs: list[GroupSpec]) -> RequestHandle:
        handle = RequestHandle(self, specs)
        for group in handle.groups:
            if not all(row.prompt for row in group.rows):
                raise ValueError("every sequence needs a non-empty prompt")
            if group.tokens_needed() > self.options.max_model_len:
                raise InvalidArgument(
                    "lyrics", f"the prompt ({len(group.spec.prompt)} tokens) plus up to {group.budget} new tokens "
                    f"exceeds this LM's --max-model-len {self.options.max_model_len}; shorten the caption/lyrics "
                    "or the duration",
                )  # fmt: skip
        with self._cv:
            if self._closed:
                raise RuntimeError("LM engine is closed")
            self._incoming.append(handle)
            self._cv.notify()
        return handle

    def run(self, specs: list[GroupSpec], should_stop: Callable[[], bool]) -> Iterator[tuple[str, object]]:
        """Submit and stream ``("progress", tokens)`` then ``("done", outputs per group)``."""
        handle = self.submit(specs)
        try:
            while True:
                if should_stop():
                    raise Cancelled("LM generation cancelled")
                try:
                    kind, value = handle.events.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                if kind == "error":
                    raise value
                yield kind, value
                if kind == "done":
                    return
        finally:
            if not handle.done:
                handle.cancel()

    @property
    def waiting_groups(self) -> int:
        return len(self._waiting) + sum(len(h.groups) for h in self._incoming)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=5)

    # -- scheduler loop ------------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._closed or self._incoming or self._waiting or self._prefilling or self._running):
                    self._cv.wait()
                if self._closed:
                    break
                for handle in self._incoming:
                    self._waiting.extend(handle.groups)
                self._incoming.clear()
            try:
                with torch.inference_mode():
                    self._iteration()
            except Exception as exc:  # a failed forward fails the requests in flight, not the engine
                log.exception("LM engine iteration failed")
                self._fail_all(exc)
        self._fail_all(RuntimeError("LM engine stopped"))

    def _iteration(self) -> None:
        self._drop_cancelled()
        self._admit()
        groups: list[SequenceGroup] = []
        hidden: list[torch.Tensor] = []
        self._decode(groups, hidden)  # before prefill: rows promoted this iteration have no token yet
        self._prefill(groups, hidden)
        if groups:
            self._advance(groups, self.sampler(groups, hidden))

    def _drop_cancelled(self) -> None:
        if any(g.request.cancelled for g in self._waiting):
            self._waiting = deque(g for g in self._waiting if not g.request.cancelled)
        for active in (self._prefilling, self._running):
            for group in [g for g in active if g.request.cancelled]:
                self._retire(group, active)

    def _admit(self) -> None:
        while self._waiting and self.pool.free >= len(self._waiting[0].rows):
            group = self._waiting.popleft()
            for row in group.rows:
                self.pool.allocate(row)
            self._prefilling.append(group)
            self.observer.queue_time(time.perf_counter() - group.request.submitted_at)
            self.observer.kv_usage(self.pool.usage_ratio)

    def _prefill(self, groups: list[SequenceGroup], hidden: list[torch.Tensor]) -> None:
        """Fixed chunk boundaries per row (so a row's numbers never depend on the schedule)."""
        budget = self.options.prefill_budget
        chunk = self.options.prefill_chunk
        spent = 0
        for group in list(self._prefilling):
            for row in group.rows:
                while not row.prefilled and (spent == 0 or spent + chunk <= budget):
                    part = row.prompt[row.length : row.length + chunk]
                    row.hidden = self.runner.prefill(row.slot, part, row.length)
                    row.length += len(part)
                    spent += len(part)
            if not group.prefilled:
                break
            self._prefilling.remove(group)
            groups.append(group)
            hidden.append(torch.stack([row.hidden for row in group.rows]))
            for row in group.rows:
                row.hidden = None
                self.pool.promote(row)
            self._running.append(group)

    def _decode(self, groups: list[SequenceGroup], hidden: list[torch.Tensor]) -> None:
        rows = self.pool.owners[: self.pool.ready]
        if not rows:
            return
        device = self.runner.device
        tokens = torch.tensor([row.group.output[-1] for row in rows], dtype=torch.long, device=device)
        positions = torch.tensor([row.length for row in rows], dtype=torch.long, device=device)
        out = self.runner.decode(tokens, positions)
        for row in rows:
            row.length += 1
        self.observer.decode_step(len(rows))
        for group in self._running:
            groups.append(group)
            hidden.append(out[[row.slot for row in group.rows]])

    def _advance(self, groups: list[SequenceGroup], tokens: list[int]) -> None:
        touched: dict[int, RequestHandle] = {}
        for group, token in zip(groups, tokens, strict=True):
            group.output.append(token)
            if group.spec.machine is not None:
                group.spec.machine.advance(token)
            exact = group.spec.exact_tokens
            if exact is not None:
                group.finished = len(group.output) >= exact
            else:
                group.finished = token in self.stop_ids or len(group.output) >= group.spec.max_new_tokens
            touched[id(group.request)] = group.request
        for group in [g for g in groups if g.finished]:
            self._retire(group, self._running)
            group.request.unfinished -= 1
        for handle in touched.values():
            self._report(handle)

    def _report(self, handle: RequestHandle) -> None:
        if not handle.first_token_seen:
            handle.first_token_seen = True
            self.observer.first_token(time.perf_counter() - handle.submitted_at)
        if handle.done:
            handle.events.put(("done", [g.output for g in handle.groups]))
            return
        produced = max(len(g.output) for g in handle.groups)
        if produced // PROGRESS_EVERY > handle.reported // PROGRESS_EVERY or handle.reported == 0:
            handle.reported = produced
            handle.events.put(("progress", produced))

    def _retire(self, group: SequenceGroup, active: list[SequenceGroup]) -> None:
        for row in group.rows:
            if row.slot >= 0:
                self.pool.release(row)
        if group in active:
            active.remove(group)
        self.observer.kv_usage(self.pool.usage_ratio)

    def _fail_all(self, exc: BaseException) -> None:
        with self._cv:
            pending = [g for h in self._incoming for g in h.groups]
            self._incoming.clear()
        handles = {}
        for group in [*self._waiting, *self._prefilling, *self._running, *pending]:
            handles[id(group.request)] = group.request
        for active in (self._prefilling, self._running):
            for group in list(active):
                self._retire(group, active)
        self._waiting.clear()
        for handle in handles.values():
            handle.unfinished = 0
            handle.events.put(("error", exc))


def _close_engine(ref: weakref.ref) -> None:
    engine = ref()
    if engine is not None:
        engine.close()
