"""What the orchestrator records of its calls to the LM and DiT replicas.

Per backend and method: each attempt's status and wall time, the calls sent on to another replica (and
why), the calls no replica could take; and per attempt a CLIENT span whose context travels to the replica
in the gRPC metadata, so the replica's spans join the request's trace.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc

from acestep_client import tracing

if TYPE_CHECKING:
    from acestep_serving.metrics import ServiceMetrics

BACKEND_SERVICES = {"lm": "acestep.v1.LanguageModelService", "dit": "acestep.v1.DiffusionService"}
BACKEND_METHODS = {"lm": ("Plan", "Describe", "ListModels"), "dit": ("Synthesize", "EncodeAudio", "ListModels")}
REFUSALS = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")  # what sends a call on to the next replica


class BackendMetrics:
    """The orchestrator's ``acestep_backend_*`` series, every one present (at 0) from startup."""

    def __init__(self, metrics: ServiceMetrics):
        self.component = metrics.component
        labels = ("backend", "method")
        self.requests = metrics.counter(
            "acestep_backend_requests_total", "Calls to LM/DiT replicas, one per attempt, by status code.",
            (*labels, "code"),
        )  # fmt: skip
        self.latency = metrics.histogram(
            "acestep_backend_request_duration_seconds",
            "Wall time of one call to an LM/DiT replica (a stream: to its last response).", labels=labels,
        )  # fmt: skip
        self.retries = metrics.counter(
            "acestep_backend_retries_total",
            "Calls sent on to another replica, by the status that made it (a replica lost mid-stream: UNAVAILABLE).",
            (*labels, "code"),
        )  # fmt: skip
        self.no_replica = metrics.counter(
            "acestep_backend_no_replica_total",
            "Calls every replica tried refused (UNAVAILABLE: none reachable or serving; RESOURCE_EXHAUSTED: all full).",
            (*labels, "code"),
        )  # fmt: skip
        for backend, methods in BACKEND_METHODS.items():
            for method in methods:
                self.latency.labels(self.component, backend, method)
                for code in grpc.StatusCode:
                    self.requests.labels(self.component, backend, method, code.name)
                for code in REFUSALS:
                    self.retries.labels(self.component, backend, method, code)
                    self.no_replica.labels(self.component, backend, method, code)


class Attempt:
    """One call to one replica: its span (context sent in the metadata) and, once :meth:`done`, its metrics."""

    def __init__(self, telemetry: BackendTelemetry, method: str, target: str):
        self.telemetry, self.method = telemetry, method
        self.started = time.perf_counter()
        self.span = tracing.start_client_span(f"{telemetry.service}/{method}", target)
        self.finished = False

    def metadata(self, base: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        return tracing.inject(base, self.span)

    def done(self, code: grpc.StatusCode, message: str = "") -> None:
        """Record how the attempt ended; later calls (a ``finally`` after an ``except``) change nothing."""
        if self.finished:
            return
        self.finished = True
        tracing.end_span(self.span, code.name, message)
        metrics = self.telemetry.metrics
        if metrics is not None:
            backend = self.telemetry.backend
            metrics.latency.labels(metrics.component, backend, self.method).observe(time.perf_counter() - self.started)
            metrics.requests.labels(metrics.component, backend, self.method, code.name).inc()


class BackendTelemetry:
    """A replica pool's recorder; without ``metrics`` it only traces (pools outside a server)."""

    def __init__(self, backend: str, metrics: BackendMetrics | None = None):
        self.backend = backend
        self.service = BACKEND_SERVICES.get(backend, backend)
        self.metrics = metrics

    def attempt(self, method: str, target: str) -> Attempt:
        return Attempt(self, method, target)

    def retried(self, method: str, code: grpc.StatusCode) -> None:
        self._count("retries", method, code)

    def no_replica(self, method: str, error: Any) -> None:
        code = error.code() if isinstance(error, grpc.aio.AioRpcError) else grpc.StatusCode.UNAVAILABLE
        self._count("no_replica", method, code)

    def _count(self, name: str, method: str, code: grpc.StatusCode) -> None:
        if self.metrics is not None:
            getattr(self.metrics, name).labels(self.metrics.component, self.backend, method, code.name).inc()
