"""The life of one RPC, shared by every servicer.

Validation runs before a slot is taken (bad input never waits in the queue); every failure ends
as a gRPC status and is counted under it; accelerator memory is released however the call ends, once
no other request is running. A call cut short (client cancel, deadline, end of the shutdown grace)
writes one log line saying where it stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from acestep_client import constants as c
from acestep_client.errors import InvalidArgument
from acestep_serving.admission import Admission, Draining
from acestep_serving.devices import release_accelerator_memory
from acestep_serving.errors import Unavailable, abort_with, status_for
from acestep_serving.headway import Headway
from acestep_serving.metrics import ServiceMetrics, interrupted_code
from acestep_serving.tracing import finish, server_span

T = TypeVar("T")
P = TypeVar("P")
_winding_down: set[asyncio.Task] = set()  # steps cut by shutdown, left to finish stopping their worker threads


class StoppedByShutdown(Unavailable):
    """The grace period ended before the request did."""


def _cut(task: asyncio.Task, admission: Admission) -> StoppedByShutdown:
    task.cancel()  # its worker thread gets should_stop; the runner waits for the threads before exiting
    _winding_down.add(task)
    task.add_done_callback(_winding_down.discard)
    return StoppedByShutdown(admission.stop_message)


async def until_stopped(work: Awaitable[T], admission: Admission) -> T:
    """``await work``, unless the shutdown grace ends first: then UNAVAILABLE at once, and the work is cancelled."""
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(admission.stopping.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.wait({task})
        raise
    finally:
        stop.cancel()
    if not task.done():
        raise _cut(task, admission)
    return task.result()


async def _next(iterator: AsyncIterator[T]) -> tuple[bool, T | None]:
    try:
        return True, await anext(iterator)
    except StopAsyncIteration:
        return False, None


async def stream_until_stopped(responses: AsyncIterator[T], admission: Admission) -> AsyncIterator[T]:
    """:func:`until_stopped` for each response of a stream."""
    iterator = aiter(responses)
    stop = asyncio.ensure_future(admission.stopping.wait())
    cut = False
    try:
        while True:
            step = asyncio.ensure_future(_next(iterator))
            try:
                await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                step.cancel()
                await asyncio.wait({step})
                raise
            if not step.done():
                cut = True
                raise _cut(step, admission)
            more, response = step.result()
            if not more:
                return
            yield response  # type: ignore[misc]
    finally:
        stop.cancel()
        aclose = getattr(iterator, "aclose", None)
        if not cut and aclose is not None:  # a cut step still runs the generator; it ends with that step
            await aclose()


async def _end(context: grpc.aio.ServicerContext, exc: BaseException, outcome: dict, headway: Headway) -> None:
    code, _ = status_for(exc)
    if isinstance(exc, StoppedByShutdown):
        headway.log_stop(code, "stopped by the shutdown: the grace period ended")
    elif isinstance(exc, Draining):
        headway.log_stop(code, "refused: the replica is draining", logging.INFO)
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:  # a downstream call's deadline (the orchestrator's LM/DiT)
        headway.log_stop(code)
    await abort_with(context, exc, outcome)


async def guarded_stream(
    context: grpc.aio.ServicerContext,
    metrics: ServiceMetrics,
    method: str,
    admission: Admission,
    open_stream: Callable[[], AsyncIterator[Any]],
    on_done: Callable[[grpc.StatusCode], None] = lambda code: None,
    headway: Headway | None = None,
    is_final: Callable[[Any], bool] = lambda response: False,
    service: str = "",
) -> AsyncIterator[Any]:
    """``open_stream()`` validates (raising before any slot is taken) and returns the responses.

    ``on_done`` receives the status code the call ended with, for service-specific metrics. The code is what
    happened: a call cancelled after ``is_final(response)`` held for a response it was sent (the SDK cancels
    once it has the description) succeeded, OK; one cancelled by the caller's deadline is DEADLINE_EXCEEDED;
    else CANCELLED. ``headway`` (request id, items) follows the responses for the log line of a call cut short;
    ``service``: the full gRPC service name, for the call's trace span.
    """
    headway = headway or Headway(method)
    with metrics.track(method, context) as outcome, server_span(f"{service}/{method}", context) as span:
        try:
            responses = open_stream()
            headway.stage = "in the queue"
            async with admission.slot():
                headway.stage = "running, before its first progress"
                stream = stream_until_stopped(responses, admission)
                try:
                    async for response in stream:
                        headway.see(response)
                        outcome["delivered"] = outcome["delivered"] or is_final(response)
                        yield response
                finally:
                    await stream.aclose()
        except (asyncio.CancelledError, GeneratorExit):
            outcome["code"] = grpc.StatusCode.OK if outcome["delivered"] else interrupted_code(context)
            if not outcome["delivered"]:
                headway.log_stop(outcome["code"])
            raise
        except Exception as exc:  # every failure becomes a status
            await _end(context, exc, outcome, headway)
        finally:
            release_when_idle(admission)
            finish(span, outcome["code"])
            on_done(outcome["code"])


def release_when_idle(admission: Admission) -> None:
    """Empty the accelerator cache once a call ends, if no other request runs (it would stall them).

    A failed call's own references are dropped by ``abort_with`` (its traceback's frames are cleared); a full
    ``gc.collect()`` here would cost the event loop ~0.1-0.5 s per refused request.
    """
    if admission.running == 0:
        release_accelerator_memory()


async def guarded_call(
    context: grpc.aio.ServicerContext,
    metrics: ServiceMetrics,
    admission: Admission,
    headway: Headway,
    prepare: Callable[[], Awaitable[P]],
    run: Callable[[P], Awaitable[T]],
    service: str = "",
) -> T | None:
    """A unary RPC: ``prepare()`` (reading and checking the request) before a slot, ``run`` in one.
    ``service``: the full gRPC service name, for the call's trace span."""
    full_method = f"{service}/{headway.method}"
    with metrics.track(headway.method, context) as outcome, server_span(full_method, context) as span:
        try:
            prepared = await prepare()
            headway.stage = "in the queue"
            async with admission.slot():
                headway.stage = "running"
                return await until_stopped(run(prepared), admission)
        except asyncio.CancelledError:
            outcome["code"] = interrupted_code(context)
            headway.log_stop(outcome["code"])
            raise
        except Exception as exc:
            await _end(context, exc, outcome, headway)
        finally:
            release_when_idle(admission)
            finish(span, outcome["code"])
    return None


def item_seeds(seeds: list[int], max_batch: int) -> list[int]:
    """One resolved seed per batch item, as the LM and DiT requests carry them."""
    if not 1 <= len(seeds) <= max_batch:
        raise InvalidArgument("seeds", f"one seed per batch item, 1-{max_batch} items, got {len(seeds)}")
    for i, seed in enumerate(seeds):
        if not 0 <= seed <= c.SEED_MAX:
            raise InvalidArgument(f"seeds[{i}]", f"must be between 0 and {c.SEED_MAX}, got {seed}")
    return list(seeds)


def fields_from(cls: type[T], source: Any, **overrides: Any) -> T:
    """Build dataclass ``cls`` from the fields of ``source`` that share its names (API params → model request).

    ``overrides`` win, including for shared names whose meaning differs (a path in the API, a tensor in the model).
    """
    names = {f.name for f in dataclasses.fields(cls)} & {f.name for f in dataclasses.fields(source)}
    return cls(**{**{name: getattr(source, name) for name in names}, **overrides})
