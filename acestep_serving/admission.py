"""Bounded admission: at most N requests run, at most M wait; the next one is refused at once.

An accelerator serves a few requests at a time; an unbounded queue only turns overload into
timeouts. Refusing with RESOURCE_EXHAUSTED lets the caller (or the orchestrator) go elsewhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from acestep_client.errors import ResourceExhausted


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
        self._slots = asyncio.Semaphore(max_running)
        self.running = 0
        self.waiting = 0
        self._on_change = on_change or (lambda running, waiting: None)
        self._on_wait = on_wait or (lambda seconds: None)

    def _changed(self) -> None:
        self._on_change(self.running, self.waiting)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.running >= self.max_running and self.waiting >= self.max_waiting:
            raise ResourceExhausted(
                f"server busy: {self.running} running and {self.waiting} queued (queue size {self.max_waiting}); "
                "retry later or on another replica"
            )
        self.waiting += 1
        self._changed()
        queued = time.perf_counter()
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self._on_wait(time.perf_counter() - queued)
        self.running += 1
        self._changed()
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            self._changed()
