"""Run blocking model work on worker threads, off the event loop, and wait for it on shutdown.

The model loops are plain synchronous Python (so they stay testable and grpc-free). They poll a
``should_stop`` callable between steps; cancelling the consuming coroutine (client cancel, deadline,
end of the shutdown grace) sets it, so the work stops within one step and the thread exits.
Nothing heavy may run on the event loop itself: health checks and every other call wait behind it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_DONE = object()
StopCheck = Callable[[], bool]


class WorkerPool(ThreadPoolExecutor):
    """A thread pool that knows whether work is still running, so a shutdown can wait for it with a deadline
    (``ThreadPoolExecutor.shutdown`` waits without one, and the interpreter joins its threads at exit)."""

    def __init__(self, max_workers: int, thread_name_prefix: str):
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._busy = 0
        self._idle = threading.Condition()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        with self._idle:
            self._busy += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: Future | None) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    def close(self, timeout: float) -> bool:
        """Take no more work; True once nothing runs, False if work is still running after ``timeout`` s."""
        self.shutdown(wait=False, cancel_futures=True)
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout=max(timeout, 0.0))


async def run_in_thread(work: Callable[[StopCheck], T], executor: ThreadPoolExecutor | None = None) -> T:
    """``work(should_stop)`` on a worker thread; cancelling the caller sets ``should_stop`` and waits for the thread
    (so accelerator memory is free before the next request starts)."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    # The caller's context (its trace span) goes along, so stage spans of the work attach to the request.
    future = loop.run_in_executor(executor, contextvars.copy_context().run, work, stop.is_set)
    try:
        return await asyncio.shield(future)
    finally:
        if not future.done():
            stop.set()
            await asyncio.wait({future})  # neither raises its error nor gives up on a second cancellation
            if not future.cancelled():
                future.exception()  # the work's own Cancelled: expected, and marked as seen


async def stream_from_thread(
    make_events: Callable[[StopCheck], Iterator[T]],
    executor: ThreadPoolExecutor | None = None,
    max_buffered: int = 64,
) -> AsyncIterator[T]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    room = threading.Semaphore(max_buffered)  # back-pressure: a slow client pauses the producer

    def put(item: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def produce() -> None:
        try:
            for event in make_events(stop.is_set):
                while not room.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                put(event)
                if stop.is_set():
                    return
            put(_DONE)
        except BaseException as exc:  # re-raised in the consumer
            put(exc)

    # The worker runs in a copy of the caller's context: the request's trace span is the parent of the stage
    # spans the model loop records.
    future = loop.run_in_executor(executor, contextvars.copy_context().run, produce)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            room.release()
            yield item
    finally:
        stop.set()
        # Wait for the worker so GPU memory is released before the next request starts.
        await asyncio.shield(future)
