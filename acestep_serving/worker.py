"""Run a blocking model generator on a worker thread and stream its events into asyncio.

The model loops are plain synchronous Python (so they stay testable and grpc-free). They poll a
``should_stop`` callable between steps; cancelling the consuming coroutine (client cancel, deadline,
server shutdown) sets it, so the GPU work stops within one step and the thread exits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


async def stream_from_thread(
    make_events: Callable[[Callable[[], bool]], Iterator[T]],
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

    future = loop.run_in_executor(executor, produce)
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
