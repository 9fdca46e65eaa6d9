"""Prometheus metrics every service exports, plus the /metrics HTTP endpoint.

Names follow Prometheus conventions: ``acestep_`` prefix, units in the name, ``_total`` counters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServiceMetrics:
    """Request counts, latency, in-flight and queue depth of one service, in its own registry."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None):
        self.service = service
        self.registry = registry or CollectorRegistry()
        labels = ["service", "method"]
        self.requests = Counter(
            "acestep_requests_total", "Finished RPCs by status code.", [*labels, "code"], registry=self.registry
        )
        self.latency = Histogram(
            "acestep_request_duration_seconds", "RPC wall time.", labels, buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("acestep_in_flight_requests", "Requests running now.", ["service"],
                               registry=self.registry)
        self.queue_depth = Gauge("acestep_queue_depth", "Requests waiting for a slot.", ["service"],
                                 registry=self.registry)
        self.ready = Gauge("acestep_model_ready", "1 once the model is loaded.", ["service"], registry=self.registry)
        self.queue_seconds = Histogram(
            "acestep_queue_time_seconds", "Time an admitted request waited for a slot (0 when one was free).",
            ["service"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.queue_seconds.labels(service)
        # Export zeros from the start: an autoscaler reading these must see a new pod before its first request.
        for gauge in (self.in_flight, self.queue_depth, self.ready):
            gauge.labels(service).set(0)

    def admission_changed(self, running: int, waiting: int) -> None:
        self.in_flight.labels(self.service).set(running)
        self.queue_depth.labels(self.service).set(waiting)

    def admission_waited(self, seconds: float) -> None:
        self.queue_seconds.labels(self.service).observe(seconds)

    def histogram(self, name: str, doc: str, buckets=LATENCY_BUCKETS, labels: tuple[str, ...] = ()) -> Histogram:
        return Histogram(name, doc, ["service", *labels], buckets=buckets, registry=self.registry)

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, ["service", *labels], registry=self.registry)

    def gauge(self, name: str, doc: str) -> Gauge:
        return Gauge(name, doc, ["service"], registry=self.registry)

    @contextmanager
    def track(self, method: str) -> Iterator[dict]:
        """Counts the RPC under the code it ends with; the body may set ``outcome['code']``."""
        outcome = {"code": grpc.StatusCode.OK}
        start = time.perf_counter()
        try:
            yield outcome
        except BaseException:
            if outcome["code"] == grpc.StatusCode.OK:
                outcome["code"] = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.latency.labels(self.service, method).observe(time.perf_counter() - start)
            self.requests.labels(self.service, method, outcome["code"].name).inc()


class MergedRegistries:
    """One exposition of several services' registries (``acestep serve all``: one scrape target).

    Families of the same name (``acestep_requests_total`` of each service) are merged into one family,
    their samples told apart by the ``service`` label, as one Prometheus family must be.
    """

    def __init__(self, registries: list[CollectorRegistry]):
        self.registries = registries

    def collect(self):
        merged = {}
        for registry in self.registries:
            for family in registry.collect():
                if family.name in merged:
                    merged[family.name].samples.extend(family.samples)
                else:
                    merged[family.name] = family
        return list(merged.values())


def merged_registry(registries: list[CollectorRegistry]) -> CollectorRegistry:
    combined = CollectorRegistry(auto_describe=False)
    combined.register(MergedRegistries(registries))
    return combined


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> int:
    """Start /metrics on ``port`` (0 picks one) and return the bound port."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server.server_port
