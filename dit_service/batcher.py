"""Dynamic batching of model forwards across concurrent requests (issue 9).

Every request still runs its own sampler loop in its own thread; only the heavy calls (a DiT forward,
a VAE window decode) go through a :class:`ForwardBatcher`. One worker thread owns those forwards: it
takes the oldest pending call, waits up to ``batch_wait_ms`` (counted from when it became free) for
compatible calls from other requests, runs them as one forward and hands every caller its own rows. An
accelerator does a batch of N rows in far less than N times the time of one, so concurrent requests
share the cost.

Pure threading + torch: the model-specific merging lives in :mod:`dit_service.batch_ops`.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from acestep_client.errors import Cancelled

from .stop_points import stoppable

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class BatchOp:
    """A kind of forward: ``run(payloads)`` returns one result per payload, in order.

    Calls only merge when they name the same op object (compared by identity) and equal keys.
    """

    kind: str
    run: Callable[[list[Any]], list[Any]]


@dataclass(frozen=True)
class BatchInfo:
    """What one merged forward held, for metrics and tests."""

    kind: str
    calls: int  # submitted calls merged (one per request at a time)
    rows: int  # batch rows of the forward (items, CFG halves counted)
    seconds: float


BatchObserver = Callable[[BatchInfo], None]


class _Call:
    __slots__ = ("done", "error", "key", "op", "payload", "result", "rows", "session", "submitted")

    def __init__(self, session: BatchSession, op: BatchOp, key: Hashable, rows: int, payload: Any):
        self.session = session
        self.op = op
        self.key = key
        self.rows = rows
        self.payload = payload
        self.submitted = time.monotonic()
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def fits(self, other: _Call) -> bool:
        return other.op is self.op and other.key == self.key


class BatchSession:
    """One request's handle on the batcher; open for the request's whole life.

    The worker starts a batch early once every open session has a call waiting, so a request that
    runs alone never waits out the batching window.
    """

    def __init__(self, batcher: ForwardBatcher, should_stop: Callable[[], bool]):
        self._batcher = batcher
        self.should_stop = should_stop

    def submit(self, op: BatchOp, key: Hashable, rows: int, payload: Any) -> Any:
        """Run ``payload`` through ``op`` (maybe merged with other sessions' calls); blocks until done.

        Raises ``Cancelled`` as soon as ``should_stop()`` turns true, whether the call still waits or runs.
        """
        return self._batcher._submit(_Call(self, op, key, rows, payload))


class ForwardBatcher:
    """Merges compatible calls from concurrent sessions into one forward on a single worker thread."""

    def __init__(
        self,
        batch_wait_ms: float = 0.0,
        max_batch_items: int = 16,
        observer: BatchObserver | None = None,
        poll_seconds: float = 0.05,
    ):
        if batch_wait_ms < 0 or max_batch_items < 1:
            raise ValueError(
                f"need batch_wait_ms >= 0 and max_batch_items >= 1, got {batch_wait_ms} and {max_batch_items}"
            )
        self.batch_wait = batch_wait_ms / 1000.0
        self.max_rows = max_batch_items
        self.observer = observer
        self.poll_seconds = poll_seconds
        self._cond = threading.Condition()
        self._pending: list[_Call] = []
        self._sessions = 0
        self._closed = False
        # When the worker last finished a forward: its callers are computing their next call right now.
        self._free_since = time.monotonic()
        self._thread: threading.Thread | None = None

    @contextmanager
    def session(self, should_stop: Callable[[], bool] = lambda: False) -> Iterator[BatchSession]:
        with self._cond:
            if self._closed:
                raise RuntimeError("ForwardBatcher is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="dit-batcher", daemon=True)
                self._thread.start()
                # A daemon thread still inside a torch op while the interpreter finalises aborts the process.
                atexit.register(_close_at_exit, weakref.ref(self))
            self._sessions += 1
        try:
            yield BatchSession(self, should_stop)
        finally:
            with self._cond:
                self._sessions -= 1
                self._cond.notify_all()  # the worker may have been waiting for this session

    @property
    def waiting_calls(self) -> int:
        """Calls submitted and not yet started."""
        with self._cond:
            return len(self._pending)

    def close(self, timeout: float | None = None) -> bool:
        """Stop the worker: pending calls fail with ``Cancelled`` and a running forward stops at its next layer.

        True once the worker has ended, False if it still runs after ``timeout`` seconds.
        """
        with self._cond:
            self._closed = True
            for call in self._pending:
                call.error = Cancelled("the forward batcher was closed")
                call.done.set()
            self._pending.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(None if timeout is None else max(timeout, 0.0))
            return not thread.is_alive()
        return True

    # ------------------------------------------------------------------ callers
    def _submit(self, call: _Call) -> Any:
        with self._cond:
            if self._closed:
                raise Cancelled("the forward batcher was closed")
            self._pending.append(call)
            self._cond.notify_all()
        while not call.done.wait(self.poll_seconds):
            if call.session.should_stop():
                with self._cond:
                    if call in self._pending:  # not started: leave the queue; otherwise its rows are dropped
                        self._pending.remove(call)
                        self._cond.notify_all()
                raise Cancelled("synthesis cancelled while waiting for a batched forward")
        if call.error is not None:
            raise call.error
        return call.result

    # ------------------------------------------------------------------ worker
    def _abandoned(self, batch: list[_Call]) -> bool:
        return self._closed or all(call.session.should_stop() for call in batch)

    def _take_batch(self) -> list[_Call] | None:
        """The oldest call plus compatible ones (FIFO, up to max rows), once the window allows it."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                if not self._pending:
                    self._cond.wait()
                    continue
                first = self._pending[0]
                batch, rows = [first], first.rows
                for call in self._pending[1:]:
                    if first.fits(call) and rows + call.rows <= self.max_rows:
                        batch.append(call)
                        rows += call.rows
                # The window opens when the worker is free, not when the call was queued: a call that
                # queued behind another request's forward would otherwise always run alone, and two
                # requests would take turns forever instead of converging on shared forwards.
                opened = max(first.submitted, self._free_since)
                remaining = opened + self.batch_wait - time.monotonic()
                everyone_waiting = len({id(call.session) for call in self._pending}) >= self._sessions
                if remaining <= 0 or rows >= self.max_rows or everyone_waiting:
                    for call in batch:
                        self._pending.remove(call)
                    return batch
                self._cond.wait(remaining)

    def _work(self) -> None:
        while (batch := self._take_batch()) is not None:
            op = batch[0].op
            start = time.perf_counter()
            try:
                # Once every caller of this forward has gone (cancel, shutdown), it stops at its next layer.
                with torch.inference_mode(), stoppable(partial(self._abandoned, batch)):
                    results = op.run([call.payload for call in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{op.kind} batch returned {len(results)} results for {len(batch)} calls")
            except BaseException as exc:  # only this batch's callers see it; the worker keeps serving
                with self._cond:
                    self._free_since = time.monotonic()
                for call in batch:
                    call.error = exc
                    call.done.set()
                if not isinstance(exc, Exception):
                    raise
                continue
            with self._cond:
                self._free_since = time.monotonic()
            for call, result in zip(batch, results, strict=True):
                call.result = result
                call.done.set()
            if self.observer is not None:
                info = BatchInfo(op.kind, len(batch), sum(call.rows for call in batch), time.perf_counter() - start)
                try:
                    self.observer(info)
                except Exception:
                    log.exception("batch observer failed")


def _close_at_exit(ref: weakref.ref) -> None:
    batcher = ref()
    if batcher is not None:
        batcher.close(timeout=5.0)
