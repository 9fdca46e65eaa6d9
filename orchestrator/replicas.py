"""Client side of the LM / DiT pools: round-robin over replicas, retry where it is safe.

gRPC keeps connections open, so a Kubernetes Service would pin the orchestrator to one pod; we
balance per call instead. ``--dit a:1,b:2`` makes one channel per address and rotates; a single DNS
name (``dns:///dit-headless:50052``) makes one channel whose round_robin policy spreads over every
address the name resolves to. A call that fails UNAVAILABLE before its first response did no work
and is retried on the next replica; anything later is the caller's error to see.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

log = logging.getLogger(__name__)


def parse_targets(spec: str | Sequence[str]) -> list[str]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [t.strip() for t in items if t and t.strip()]


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
    ):
        """``tls_server_name``: the name the replicas' certificates carry, when it is not the dialled one."""
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
        self._turn = itertools.count()
        self.metadata = tuple(metadata)

    def _rotation(self) -> list[Any]:
        start = next(self._turn) % len(self._stubs)
        attempts = max(len(self._stubs), 2)  # a single DNS channel still gets one retry on another address
        return [self._stubs[(start + i) % len(self._stubs)] for i in range(attempts)]

    async def stream(self, method: str, request: Any, timeout: float | None = None) -> AsyncIterator[Any]:
        """Server-streaming call with retry-before-first-response."""
        last: grpc.aio.AioRpcError | None = None
        for stub in self._rotation():
            call = getattr(stub, method)(request, timeout=timeout, metadata=self.metadata)
            started = False
            try:
                async for response in call:
                    started = True
                    yield response
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or started:
                    raise
                log.warning("%s unavailable on a replica (%s); trying the next", method, exc.details())
                last = exc
            finally:
                call.cancel()  # no-op when finished; stops the replica's work when we are cancelled
        assert last is not None
        raise last

    async def unary_from_stream(
        self, method: str, make_requests: Callable[[], AsyncIterator[Any]], timeout: float | None = None
    ) -> Any:
        """Client-streaming call; ``make_requests`` is called again for a retry."""
        last: grpc.aio.AioRpcError | None = None
        for stub in self._rotation():
            try:
                return await getattr(stub, method)(make_requests(), timeout=timeout, metadata=self.metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                log.warning("%s unavailable on a replica (%s); trying the next", method, exc.details())
                last = exc
        assert last is not None
        raise last

    async def each(self, method: str, request: Any, timeout: float | None = None) -> list[Any]:
        """Unary ``method`` on every channel at once: the responses, with a failed call's AioRpcError in its place.

        One channel per configured address; a DNS name's channel answers from one of the addresses behind it,
        so replicas behind one name are taken to be alike (one Deployment).
        """

        async def one(stub: Any) -> Any:
            try:
                return await getattr(stub, method)(request, timeout=timeout, metadata=self.metadata)
            except grpc.aio.AioRpcError as exc:
                return exc

        return list(await asyncio.gather(*(one(stub) for stub in self._stubs)))

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
