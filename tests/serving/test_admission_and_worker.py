"""Bounded admission refuses at once when full; worker threads stop when the consumer goes away."""

import asyncio
import threading
import time

import pytest

from acestep_client.errors import ResourceExhausted
from acestep_serving.admission import Admission
from acestep_serving.worker import stream_from_thread


async def test_full_queue_is_refused_immediately():
    admission = Admission(max_running=1, max_waiting=1)
    release = asyncio.Event()

    async def hold():
        async with admission.slot():
            await release.wait()

    running = asyncio.create_task(hold())
    waiting = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    assert (admission.running, admission.waiting) == (1, 1)
    with pytest.raises(ResourceExhausted, match="queue size 1"):
        async with admission.slot():
            pass
    release.set()
    await asyncio.gather(running, waiting)
    assert (admission.running, admission.waiting) == (0, 0)


async def test_events_stream_in_order_and_errors_propagate():
    def events(should_stop):
        yield from range(5)
        raise ValueError("boom")

    seen = []
    with pytest.raises(ValueError, match="boom"):
        async for value in stream_from_thread(events):
            seen.append(value)
    assert seen == [0, 1, 2, 3, 4]


async def test_cancelling_the_consumer_stops_the_producer_between_steps():
    steps = []
    finished = threading.Event()

    def slow_steps(should_stop):
        try:
            for i in range(1000):
                if should_stop():
                    return
                steps.append(i)
                time.sleep(0.005)
                yield i
        finally:
            finished.set()

    async def consume():
        async for _ in stream_from_thread(slow_steps):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()  # the worker has exited by the time cancellation completes
    assert 0 < len(steps) < 100


def test_load_gauges_exist_before_the_first_request():
    """An autoscaler reads queue depth and in-flight from a pod that has not served anything yet."""
    from prometheus_client import generate_latest

    from acestep_serving.metrics import ServiceMetrics

    text = generate_latest(ServiceMetrics("dit").registry).decode()
    assert 'acestep_queue_depth{component="dit"} 0.0' in text
    assert 'acestep_in_flight_requests{component="dit"} 0.0' in text


async def test_admission_reports_each_requests_queue_time():
    waits: list[float] = []
    admission = Admission(max_running=1, max_waiting=1, on_wait=waits.append)
    release = asyncio.Event()

    async def hold():
        async with admission.slot():
            await release.wait()

    first = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    second = asyncio.create_task(hold())
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(first, second)
    assert len(waits) == 2
    assert waits[0] < 0.01 and waits[1] >= 0.04  # the second waited for the first to finish
