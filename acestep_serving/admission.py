"""Bounded admission: at most N requests run, at most M wait; the next one is refused at once.

An accelerator serves a few requests at a time; an unbounded queue only turns overload into
timeouts. Refusing with RESOURCE_EXHAUSTED lets the caller (or the orchestrator) go elsewhere.

Shutdown goes through here too: :meth:`Admission.drain` refuses the queue at once (UNAVAILABLE before
any response, so the orchestrator retries them on another replica) and :meth:`Admission.stop_running`
tells the running requests that the grace period is over.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from acestep_client.errors import ResourceExhausted
from acestep_serving.errors import Unavailable

DRAINING_MESSAGE = "the replica is draining (shutting down) and did not start this request; retry on another replica"


class Draining(Unavailable):
    """A request refused because the replica is shutting down; it did no work, so it may be retried elsewhere."""


class Admission:
    """``on_change(running, waiting)`` follows the load; ``on_wait(seconds)`` gets each admitted request's
    time in the queue (0 when a slot was free), so a service can export queueing separately from compute."""

    def __init__(
        self,
        max_running: int,
        max_waiting: int,
        on_change: Callable[[int, int], None] | None = None,
        on_wait: Callable[[float], None] | None = None,
    ):
        if max_running < 1 or max_waiting < 0:
            raise ValueError("max_running must be >= 1 and max_waiting >= 0")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.running = 0
        self.waiting = 0
        # FIFO of queued requests; a released slot passes straight to the oldest (counted as running by the releaser).
        self._queue: deque[asyncio.Future[None]] = deque()
        self.draining = False
        self.stopping = asyncio.Event()  # set when the grace period ends: running requests must stop now
        self._idle = asyncio.Event()  # nothing running or queued
        self._idle.set()
        self.stop_message = ""
        self._on_change = on_change or (lambda running, waiting: None)
        self._on_wait = on_wait or (lambda seconds: None)

    def _changed(self) -> None:
        if self.running or self.waiting:
            self._idle.clear()
        else:
            self._idle.set()
        self._on_change(self.running, self.waiting)

    async def idle(self) -> None:
        """Return once no request runs or waits (a drain waits for this, up to its grace period)."""
        await self._idle.wait()

    def drain(self) -> None:
        """Refuse every queued request now and every new one from here on; running ones carry on."""
        self.draining = True
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_exception(Draining(DRAINING_MESSAGE))

    def stop_running(self, message: str) -> None:
        """The grace period is over: running requests end with UNAVAILABLE ``message`` (see ``rpc.until_stopped``)."""
        self.drain()
        self.stop_message = message
        self.stopping.set()

    async def _acquire(self) -> None:
        if self.draining:
            raise Draining(DRAINING_MESSAGE)
        if self.running < self.max_running and not self._queue:
            self.running += 1
            return
        if self.waiting >= self.max_waiting:
            raise ResourceExhausted(
                f"server busy: {self.running} running and {self.waiting} queued (queue size {self.max_waiting}); "
                "retry later or on another replica"
            )
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        self.waiting += 1
        self._changed()
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release()  # a slot was handed over just as this request went away: pass it on
            elif waiter in self._queue:
                self._queue.remove(waiter)
            raise
        finally:
            self.waiting -= 1

    def _release(self) -> None:
        self.running -= 1
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                self.running += 1
                waiter.set_result(None)
                break
        self._changed()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        queued = time.perf_counter()
        try:
            await self._acquire()
        finally:
            self._changed()
        self._on_wait(time.perf_counter() - queued)
        try:
            yield
        finally:
            self._release()
