"""Admission during a drain: the queue is refused at once, running requests keep their slots until they end
or the grace is over, and a slot handed to a request that went away is passed on, never lost."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from acestep_serving.admission import DRAINING_MESSAGE, Admission, Draining
from acestep_serving.errors import status_for
from acestep_serving.rpc import StoppedByShutdown, until_stopped


async def _hold(admission: Admission, release: asyncio.Event, entered: list[str], name: str) -> None:
    async with admission.slot():
        entered.append(name)
        await release.wait()


async def test_drain_refuses_the_queue_at_once_and_lets_running_requests_finish():
    admission = Admission(max_running=1, max_waiting=4)
    release, entered = asyncio.Event(), []
    running = asyncio.create_task(_hold(admission, release, entered, "running"))
    queued = [asyncio.create_task(_hold(admission, release, entered, f"queued-{i}")) for i in range(2)]
    await asyncio.sleep(0.01)
    assert (admission.running, admission.waiting) == (1, 2)

    admission.drain()
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(r, Draining) for r in results)
    assert status_for(results[0]) == (grpc.StatusCode.UNAVAILABLE, DRAINING_MESSAGE)
    with pytest.raises(Draining):
        async with admission.slot():
            pass
    assert (admission.running, admission.waiting) == (1, 0) and not running.done()

    idle = asyncio.create_task(admission.idle())
    await asyncio.sleep(0.01)
    assert not idle.done()  # the running request still holds its slot
    release.set()
    await asyncio.wait_for(asyncio.gather(running, idle), 5)
    assert entered == ["running"] and (admission.running, admission.waiting) == (0, 0)


async def test_a_slot_handed_to_a_cancelled_waiter_goes_to_the_next_one():
    admission = Admission(max_running=1, max_waiting=4)
    release, entered = asyncio.Event(), []
    waiters: dict[str, asyncio.Task] = {}

    async def first() -> None:
        async with admission.slot():
            entered.append("first")
            await release.wait()
        waiters["gone"].cancel()  # the slot was just handed to "gone"; it goes away before it could resume

    holder = asyncio.create_task(first())
    await asyncio.sleep(0.01)
    waiters["gone"] = asyncio.create_task(_hold(admission, release, entered, "gone"))
    waiters["last"] = asyncio.create_task(_hold(admission, release, entered, "last"))
    await asyncio.sleep(0.01)
    assert admission.waiting == 2
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, waiters["last"]), 5)
    assert entered == ["first", "last"]
    assert waiters["gone"].cancelled() and (admission.running, admission.waiting) == (0, 0)


async def test_the_end_of_the_grace_stops_running_work_with_unavailable():
    admission = Admission(max_running=1, max_waiting=0)
    work_cancelled = asyncio.Event()

    async def long_work() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            work_cancelled.set()

    task = asyncio.create_task(until_stopped(long_work(), admission))
    await asyncio.sleep(0.01)
    admission.stop_running("grace over: retry on another replica")
    with pytest.raises(StoppedByShutdown) as stopped:
        await asyncio.wait_for(task, 5)
    await asyncio.wait_for(work_cancelled.wait(), 5)
    assert status_for(stopped.value) == (grpc.StatusCode.UNAVAILABLE, "grace over: retry on another replica")
    assert admission.draining  # nothing new starts either
