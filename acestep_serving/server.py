"""The gRPC server every service runs: health, reflection (v1 and v1alpha), limits, TLS, API keys, graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from acestep_client.client import API_KEY_HEADER, clean_api_key
from acestep_client.errors import InvalidArgument
from acestep_serving.admission import Admission
from acestep_serving.decoding import UndecodableRequestInterceptor
from acestep_serving.metrics import ServiceMetrics
from acestep_serving.preflight import StartupError
from acestep_serving.reflection import enable_reflection

log = logging.getLogger(__name__)

MAX_CONNECTION_AGE_MS = 5 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 60 * 60 * 1000
# After the grace period: calls cut then end with UNAVAILABLE, and model threads leave at their next stop point
# (a step, a layer). The process exits by grace + this margin, whatever the model is doing.
SHUTDOWN_MARGIN_S = 5.0


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 0
    max_message_bytes: int = 64 * 1024 * 1024
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    api_keys: Sequence[str] = field(default_factory=tuple)
    grace_seconds: float = 30.0
    health_port: int = -1  # >= 0: also serve grpc.health.v1 alone, in plaintext, on this port (0 = any)
    reflection_without_key: bool = False  # with api_keys: reflection answers callers without a key too

    @classmethod
    def from_args(cls, args) -> ServerOptions:
        return cls(
            host=args.host, port=args.port, max_message_bytes=int(args.max_message_mb * 1024 * 1024),
            tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
            api_keys=tuple(k for k in args.api_keys.split(",") if k), grace_seconds=args.grace_seconds,
            health_port=args.health_port, reflection_without_key=args.reflection_without_key,
        )


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """With API keys configured, every call needs a known ``x-api-key``, whatever its method.

    Only grpc.health.v1 stays open (probes carry no key); reflection too when ``open_reflection``
    (``--reflection-without-key``), since it lists every service and message. A method the server lacks is
    refused like any other (UNAUTHENTICATED, not UNIMPLEMENTED), so a caller without a key learns nothing of
    what is served. A key gRPC metadata may carry but no configured key equals (stray whitespace, control
    or non-ASCII characters inside it) is simply unknown: UNAUTHENTICATED. Whitespace around a key is ignored
    on both sides (configured and sent), as clients and files add it.
    """

    HEADER = API_KEY_HEADER
    _HEALTH = "/grpc.health.v1.Health/"
    _REFLECTION = "/grpc.reflection."  # v1 and v1alpha alike

    def __init__(self, keys: Sequence[str], open_reflection: bool = False):
        """``keys``: the accepted keys (whitespace around each is dropped, as clients drop it); raises
        StartupError for one that no gRPC client could send, naming the character."""
        try:
            self._keys = tuple(clean_api_key(key, "--api-keys").encode() for key in keys if key.strip())
        except InvalidArgument as exc:
            raise StartupError(str(exc)) from None
        if not self._keys:
            raise StartupError("--api-keys: no key given (leave it empty to serve without keys)")
        self._open = (self._HEALTH, self._REFLECTION) if open_reflection else (self._HEALTH,)

        async def deny(request_or_iterator, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing or unknown {self.HEADER} metadata")

        # Streaming both ways: the deny reads no message, so it answers every kind of call, even unknown ones.
        self._deny = grpc.stream_stream_rpc_method_handler(deny)

    def _known(self, metadata) -> bool:
        for item in metadata or ():
            key, value = item
            if key == self.HEADER:
                given = (value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")).strip()
                # hmac.compare_digest: no timing hint of how much of a key matched
                return any(hmac.compare_digest(given, known) for known in self._keys)
        return False

    async def intercept_service(self, continuation, details):
        if details.method.startswith(self._open) or self._known(details.invocation_metadata):
            return await continuation(details)
        return self._deny


class GrpcServer:
    """A grpc.aio server that reports NOT_SERVING until :meth:`set_serving` is called."""

    def __init__(self, service_names: Sequence[str], options: ServerOptions):
        self.options = options
        self.service_names = list(service_names)
        limits = [
            ("grpc.max_send_message_length", options.max_message_bytes),
            ("grpc.max_receive_message_length", options.max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            # Clients resolve DNS again when a connection ends; ending connections every few minutes lets
            # an orchestrator find LM/DiT pods the autoscaler added. Streams in flight get an hour to end.
            ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
            ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
        ]
        interceptors = ([ApiKeyInterceptor(options.api_keys, options.reflection_without_key)]
                        if options.api_keys else [])
        interceptors.append(UndecodableRequestInterceptor())  # innermost: a refused key never reaches it
        self.server = grpc.aio.server(options=limits, interceptors=interceptors)
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection(
            [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], self.server
        )
        self.port = 0
        self.serving = False
        # Kubelet gRPC probes speak plaintext only; with TLS on, they need a health-only listener. It shares
        # ``self.health``, so both ports always report the same status.
        self.health_server: grpc.aio.Server | None = None
        self.health_port: int | None = None
        self._managed: list[tuple[Admission, ServiceMetrics]] = []
        self.stop_deadline: float | None = None  # time.monotonic() by which the process should be gone

    def manage(self, admission: Admission, metrics: ServiceMetrics) -> None:
        """Drain ``admission`` and zero ``metrics``' model-ready gauge when the server drains."""
        self._managed.append((admission, metrics))

    def add(self, add_to_server: Callable, servicer: object) -> None:
        add_to_server(servicer, self.server)

    def _credentials(self) -> grpc.ServerCredentials | None:
        o = self.options
        if not o.tls_cert:
            return None
        pair = [(Path(o.tls_key).read_bytes(), Path(o.tls_cert).read_bytes())]
        client_ca = Path(o.tls_client_ca).read_bytes() if o.tls_client_ca else None
        return grpc.ssl_server_credentials(pair, root_certificates=client_ca, require_client_auth=bool(client_ca))

    async def start(self) -> int:
        address = f"{self.options.host}:{self.options.port}"
        credentials = self._credentials()
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        if self.options.health_port >= 0:
            self.health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            self.health_port = self.health_server.add_insecure_port(f"{self.options.host}:{self.options.health_port}")
            await self.health_server.start()
        return self.port

    async def _set_status(self, status) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    @property
    def draining(self) -> bool:
        return self.stop_deadline is not None

    async def set_serving(self, serving: bool = True) -> None:
        if serving and self.draining:  # a model that finished loading after SIGTERM: stay NOT_SERVING
            return
        self.serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self._set_status(status)

    async def drain_and_stop(self, grace: float | None = None) -> None:
        """Readiness goes NOT_SERVING, the ready gauge 0, and queued and new requests are refused (UNAVAILABLE,
        before any response: the orchestrator retries them elsewhere), while health checks keep answering.
        Running requests get ``grace`` seconds, then are stopped (UNAVAILABLE); then the server stops."""
        if self.draining:  # already drained (a signal, then the owner's stop())
            return
        grace = self.options.grace_seconds if grace is None else grace
        self.stop_deadline = time.monotonic() + grace + SHUTDOWN_MARGIN_S
        await self.set_serving(False)
        for admission, metrics in self._managed:
            metrics.ready.labels(metrics.component).set(0)
            admission.drain()
        if not self._managed:  # no admission to follow: gRPC gives every call the grace
            await self.server.stop(grace)
        else:
            idle = asyncio.gather(*(admission.idle() for admission, _ in self._managed))
            done, _ = await asyncio.wait({idle}, timeout=grace)
            if not done:
                idle.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await idle
                running = sum(admission.running for admission, _ in self._managed)
                if running:
                    log.warning("grace period of %g s over: stopping %d running request(s)", grace, running)
                message = (f"the replica shut down before this request finished (its {grace:g} s grace period "
                           "ended); retry on another replica")
                for admission, _ in self._managed:
                    admission.stop_running(message)
            # Calls outside the admission (ListModels, health watches) and those just stopped get the margin;
            # gRPC cancels whatever is left after it ("Cancelling all calls").
            await self.server.stop(SHUTDOWN_MARGIN_S)
        if self.health_server is not None:
            await self.health_server.stop(0)

    async def wait_for_termination(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, stopping.set)
        done = asyncio.ensure_future(self.server.wait_for_termination())
        signal_wait = asyncio.ensure_future(stopping.wait())
        await asyncio.wait([done, signal_wait], return_when=asyncio.FIRST_COMPLETED)
        if stopping.is_set():
            log.info("signal received: draining for up to %g s", self.options.grace_seconds)
            started = time.monotonic()
            await self.drain_and_stop()
            log.info("drained in %.1f s; stopping", time.monotonic() - started)
        signal_wait.cancel()
        await done
