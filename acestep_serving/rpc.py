"""The life of one server-streaming RPC, shared by every servicer.

Validation runs before a slot is taken (bad input never waits in the queue); every failure ends
as a gRPC status and is counted under it; accelerator memory is released however the call ends, once
no other request is running.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from acestep_client import constants as c
from acestep_client.errors import InvalidArgument
from acestep_serving.admission import Admission
from acestep_serving.devices import release_accelerator_memory
from acestep_serving.errors import abort_with
from acestep_serving.metrics import ServiceMetrics

T = TypeVar("T")


async def guarded_stream(
    context: grpc.aio.ServicerContext,
    metrics: ServiceMetrics,
    method: str,
    admission: Admission,
    open_stream: Callable[[], AsyncIterator[Any]],
    on_done: Callable[[grpc.StatusCode], None] = lambda code: None,
) -> AsyncIterator[Any]:
    """``open_stream()`` validates (raising before any slot is taken) and returns the responses.

    ``on_done`` receives the status code the call ended with, for service-specific metrics.
    """
    with metrics.track(method) as outcome:
        try:
            responses = open_stream()
            async with admission.slot():
                async for response in responses:
                    yield response
        except (asyncio.CancelledError, GeneratorExit):
            outcome["code"] = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:  # every failure becomes a status
            await abort_with(context, exc, outcome)
        finally:
            release_when_idle(admission)
            on_done(outcome["code"])


def release_when_idle(admission: Admission) -> None:
    """Empty the accelerator cache once a call ends, if no other request runs (it would stall them).

    A failed call's own references are dropped by ``abort_with`` (its traceback's frames are cleared); a full
    ``gc.collect()`` here would cost the event loop ~0.1-0.5 s per refused request.
    """
    if admission.running == 0:
        release_accelerator_memory()


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
