"""Client side of the LM / DiT pools: round-robin over replicas, retry where it is safe.

gRPC keeps connections open, so a Kubernetes Service would pin the orchestrator to one pod; we
balance per call instead. ``--dit a:1,b:2`` makes one channel per address and rotates; a single DNS
name (``dns:///dit-headless:50052``) makes one channel whose round_robin policy spreads over every
address the name resolves to. A call may be limited to some of the targets (those serving the model a
request names, orchestrator/routing.py): it rotates among those, each subset with its own turn.

Retry rules. A call refused before its first response, UNAVAILABLE (unreachable, loading, draining)
or RESOURCE_EXHAUSTED (its queue is full), did no work the caller saw and goes to the next replica.
A replica lost mid-stream (UNAVAILABLE after responses: killed, or drained past its grace) starts the
call over on the next replica only when the caller says that is safe (``restart``: nothing it
forwarded would change, e.g. the LM's plan, deterministic given the seeds); the caller then gets a
:class:`Restarted` marker to rebuild what it derived from the lost stream. Otherwise the call ends in
:class:`ReplicaLost`, an UNAVAILABLE naming the replica and how far it got. Any other status is the
caller's to see.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from acestep_serving.errors import Unavailable
from orchestrator.telemetry import BackendTelemetry

log = logging.getLogger(__name__)

RETRIED_BEFORE_START = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
Timeout = float | Callable[[], float | None] | None


def parse_pools(spec: str | Sequence[str]) -> list[tuple[str, str]]:
    """``[name=]address`` items, comma-separated: (the model the address is pinned to or "", address).

    An address never holds ``=`` (host:port, [v6]:port, dns:///name:port, unix:path), so the first one
    splits a pin from it. The name's form is checked where the flag is read (orchestrator/server.py).
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    pools = []
    for item in (t.strip() for t in items if t and t.strip()):
        name, _, address = item.partition("=") if "=" in item else ("", "", item)
        pools.append((name.strip(), address.strip()))
    return pools


def parse_targets(spec: str | Sequence[str]) -> list[str]:
    """The addresses of :func:`parse_pools`, pins dropped."""
    return [address for _, address in parse_pools(spec)]


@dataclass(frozen=True)
class Restarted:
    """Yielded by :meth:`ReplicaPool.stream` when ``lost`` went away after ``responses`` responses and the call
    starts over on the next replica: what the caller built from the lost stream is about to come again."""

    method: str
    lost: str
    responses: int
    details: str


class ReplicaLost(Unavailable):
    """A replica went away mid-stream and starting over was not safe (the caller had forwarded its output)."""

    def __init__(self, method: str, target: str, responses: int, details: str):
        self.method, self.target, self.responses, self.details = method, target, responses, details
        super().__init__(f"{method} on replica {target} was lost after {responses} response(s): {details}")


def _seconds(timeout: Timeout) -> float | None:
    """A deadline in seconds for the next attempt: a callable (the caller's time remaining) is asked each time."""
    return timeout() if callable(timeout) else timeout


class ReplicaPool:
    def __init__(
        self,
        targets: Sequence[str],
        stub_class: Callable[[grpc.aio.Channel], Any],
        *,
        credentials: grpc.ChannelCredentials | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        metadata: Sequence[tuple[str, str]] = (),
        tls_server_name: str = "",
        telemetry: BackendTelemetry | None = None,
    ):
        """``tls_server_name``: the name the replicas' certificates carry, when it is not the dialled one.
        ``telemetry``: records every call's status, time and retries and traces it (orchestrator/telemetry.py)."""
        if not targets:
            raise ValueError("a replica pool needs at least one address")
        options = [
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
        ]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        self.targets = list(targets)
        self._channels = [
            grpc.aio.secure_channel(t, credentials, options) if credentials else grpc.aio.insecure_channel(t, options)
            for t in self.targets
        ]
        self._stubs = [stub_class(ch) for ch in self._channels]
        self._turns: dict[tuple[int, ...], Iterator[int]] = {}  # one round robin per subset of targets
        self.metadata = tuple(metadata)
        self.telemetry = telemetry or BackendTelemetry("backend")

    def _rotation(self, targets: Collection[str] | None = None) -> list[tuple[str, Any]]:
        """(address, stub) in the order this call tries them; ``targets`` limits it to those addresses."""
        indices = tuple(i for i, t in enumerate(self.targets) if targets is None or t in targets)
        if not indices:
            raise ValueError(f"none of {sorted(targets or ())} is a target of this pool ({', '.join(self.targets)})")
        start = next(self._turns.setdefault(indices, itertools.count())) % len(indices)
        attempts = max(len(indices), 2)  # a single DNS channel still gets one retry on another address
        chosen = [indices[(start + i) % len(indices)] for i in range(attempts)]
        return [(self.targets[i], self._stubs[i]) for i in chosen]

    async def stream(
        self, method: str, request: Any, timeout: Timeout = None, restart: Callable[[], bool] = lambda: False,
        targets: Collection[str] | None = None,
    ) -> AsyncIterator[Any]:
        """Server-streaming call under the module's retry rules: the responses, with a :class:`Restarted` before
        those of a replica that took over mid-stream. ``restart()`` is asked when a replica is lost mid-stream.
        ``targets``: only these addresses (None: all)."""
        last: Exception | None = None
        rotation = self._rotation(targets)
        for attempt, (target, stub) in enumerate(rotation):
            recorder = self.telemetry.attempt(method, target)
            call = getattr(stub, method)(request, timeout=_seconds(timeout), metadata=recorder.metadata(self.metadata))
            responses = 0
            try:
                async for response in call:
                    responses += 1
                    yield response
                recorder.done(grpc.StatusCode.OK)
                return
            except grpc.aio.AioRpcError as exc:
                code, details = exc.code(), exc.details() or exc.code().name
                recorder.done(code, details)
                if responses == 0 and code in RETRIED_BEFORE_START:
                    log.warning("%s refused by replica %s (%s: %s); trying the next", method, target, code.name,
                                details)
                    if attempt < len(rotation) - 1:
                        self.telemetry.retried(method, code)
                    last = exc
                    continue
                if code != grpc.StatusCode.UNAVAILABLE or responses == 0:
                    raise
                if attempt == len(rotation) - 1 or not restart():
                    raise ReplicaLost(method, target, responses, details) from None
                log.warning("%s: replica %s lost after %d response(s) (%s); starting over on the next", method,
                            target, responses, details)
                last = ReplicaLost(method, target, responses, details)
                self.telemetry.retried(method, code)
                yield Restarted(method, target, responses, details)
            finally:
                recorder.done(grpc.StatusCode.CANCELLED)  # only when nothing above recorded an end: abandoned
                call.cancel()  # no-op when finished; stops the replica's work when we are cancelled
        assert last is not None
        self.telemetry.no_replica(method, last)
        raise last

    async def unary_from_stream(
        self, method: str, make_requests: Callable[[], AsyncIterator[Any]], timeout: Timeout = None,
        targets: Collection[str] | None = None,
    ) -> Any:
        """Client-streaming call; ``make_requests`` is called again for a retry (rules as for a stream's start)."""
        last: grpc.aio.AioRpcError | None = None
        rotation = self._rotation(targets)
        for attempt, (target, stub) in enumerate(rotation):
            recorder = self.telemetry.attempt(method, target)
            try:
                response = await getattr(stub, method)(make_requests(), timeout=_seconds(timeout),
                                                       metadata=recorder.metadata(self.metadata))
                recorder.done(grpc.StatusCode.OK)
                return response
            except grpc.aio.AioRpcError as exc:
                recorder.done(exc.code(), exc.details() or "")
                if exc.code() not in RETRIED_BEFORE_START:
                    raise
                log.warning("%s refused by replica %s (%s: %s); trying the next", method, target, exc.code().name,
                            exc.details())
                if attempt < len(rotation) - 1:
                    self.telemetry.retried(method, exc.code())
                last = exc
            finally:
                recorder.done(grpc.StatusCode.CANCELLED)
        assert last is not None
        self.telemetry.no_replica(method, last)
        raise last

    async def each(self, method: str, request: Any, timeout: float | None = None) -> list[Any]:
        """Unary ``method`` on every channel at once: the responses, with a failed call's AioRpcError in its place.

        One channel per configured address; a DNS name's channel answers from one of the addresses behind it,
        so replicas behind one name are taken to be alike (one Deployment).
        """

        async def one(target: str, stub: Any) -> Any:
            recorder = self.telemetry.attempt(method, target)
            try:
                response = await getattr(stub, method)(request, timeout=timeout,
                                                       metadata=recorder.metadata(self.metadata))
                recorder.done(grpc.StatusCode.OK)
                return response
            except grpc.aio.AioRpcError as exc:
                recorder.done(exc.code(), exc.details() or "")
                return exc
            finally:
                recorder.done(grpc.StatusCode.CANCELLED)

        return list(await asyncio.gather(*(one(target, stub) for target, stub in zip(self.targets, self._stubs,
                                                                                        strict=True))))

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
