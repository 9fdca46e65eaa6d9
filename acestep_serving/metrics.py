"""Prometheus metrics every service exports, plus the /metrics HTTP endpoint.

Names follow Prometheus conventions: ``acestep_`` prefix, units in the name, ``_total`` counters, ``_ratio``
for ratios. The service is the ``component`` label (lm, dit, orchestrator), not ``service``: the Prometheus
Operator sets ``service`` on every scraped series (the Kubernetes Service), and a metric's own ``service``
label would be renamed ``exported_service`` there.

Every series a dashboard, alert or autoscaler reads exists from startup, at zero: ``increase()`` and
``rate()`` see a counter's first errors only when the series was there (at 0) before them.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

from acestep_serving.admission import Admission

COMPONENT = "component"
# Up to an hour: a 600 s song at batch 8 on a busy GPU runs well past the 300 s these used to stop at.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800,
                   3600)
STATUS_CODES = tuple(code.name for code in grpc.StatusCode)


def package_version() -> str:
    try:
        return metadata.version("acestep-grpc")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


DEADLINE_TOLERANCE_S = 0.1  # a cancellation this close to the deadline is the deadline


def interrupted_code(context: grpc.aio.ServicerContext | None) -> grpc.StatusCode:
    """The status of a call that ended by cancellation: DEADLINE_EXCEEDED when the caller's deadline has passed
    (gRPC cancels the handler then too), else CANCELLED (the caller gave up, or the server is stopping)."""
    try:
        remaining = context.time_remaining() if context is not None else None
    except Exception:  # a context without deadline support (tests' fakes)
        remaining = None
    if remaining is not None and remaining <= DEADLINE_TOLERANCE_S:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


class AcceleratorMemoryCollector:
    """``torch.cuda`` memory of this process, per device, read at scrape time. Nothing at all on a CPU-only
    process (no series rather than a misleading 0), nor before CUDA is initialised (a scrape must not be
    what initialises it). No component label: the memory belongs to the process, whichever services share it."""

    def describe(self):
        return []  # registration must not collect (and so touch torch)

    def collect(self):
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return []
        families = {
            "allocated": GaugeMetricFamily("acestep_accelerator_memory_allocated_bytes",
                                           "Accelerator memory held by tensors now.", labels=["device"]),
            "reserved": GaugeMetricFamily("acestep_accelerator_memory_reserved_bytes",
                                          "Accelerator memory held by the caching allocator.", labels=["device"]),
            "peak": GaugeMetricFamily("acestep_accelerator_memory_peak_allocated_bytes",
                                      "Most accelerator memory tensors held at once since start.", labels=["device"]),
        }  # fmt: skip
        for index in range(torch.cuda.device_count()):
            device = f"cuda:{index}"
            families["allocated"].add_metric([device], torch.cuda.memory_allocated(index))
            families["reserved"].add_metric([device], torch.cuda.memory_reserved(index))
            families["peak"].add_metric([device], torch.cuda.max_memory_allocated(index))
        return list(families.values())


class ServiceMetrics:
    """Request counts, latency, in-flight and queue depth of one service, in its own registry.

    ``methods``: the RPCs :meth:`track` counts; each one's series exist from startup, one per status code.
    """

    def __init__(self, component: str, methods: Sequence[str] = (), registry: CollectorRegistry | None = None):
        self.component = component
        self.registry = registry or CollectorRegistry()
        labels = [COMPONENT, "method"]
        self.requests = Counter(
            "acestep_requests_total", "Finished RPCs by status code.", [*labels, "code"], registry=self.registry
        )
        self.latency = Histogram(
            "acestep_request_duration_seconds", "RPC wall time, queueing included.", labels, buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.in_flight = self.gauge("acestep_in_flight_requests", "Requests running now.")
        self.queue_depth = self.gauge("acestep_queue_depth", "Requests waiting for a slot.")
        self.concurrency_limit = self.gauge("acestep_concurrency_limit", "Requests that may run at once.")
        self.queue_capacity = self.gauge("acestep_queue_capacity",
                                         "Requests that may wait for a slot; the next is refused RESOURCE_EXHAUSTED.")
        self.ready = self.gauge("acestep_model_ready", "1 once the model is loaded and requests are served.")
        self.load_seconds = self.gauge("acestep_model_load_duration_seconds", "How long loading the model took.")
        self.queue_seconds = self.histogram(
            "acestep_queue_time_seconds", "Time an admitted request waited for a slot (0 when one was free)."
        )
        self.build_info = Gauge("acestep_build_info", "Always 1: the versions this process runs.",
                                [COMPONENT, "version", "python_version", "grpc_version"], registry=self.registry)
        self.build_info.labels(component, package_version(), platform.python_version(), grpc.__version__).set(1)
        self.model_info = Gauge("acestep_model_info", "1 for the model this process serves, once loaded.",
                                [COMPONENT, "model", "device", "dtype"], registry=self.registry)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(AcceleratorMemoryCollector())
        self.queue_seconds.labels(component)
        for gauge in (self.in_flight, self.queue_depth, self.ready, self.concurrency_limit, self.queue_capacity):
            gauge.labels(component).set(0)
        for method in methods:
            self.latency.labels(component, method)
            for code in STATUS_CODES:
                self.requests.labels(component, method, code)

    # -- admission ----------------------------------------------------------------------------------------------
    def admission(self, max_running: int, max_waiting: int) -> Admission:
        """The service's bounded admission, wired to the load gauges and the queue-time histogram."""
        admission = Admission(max_running, max_waiting, self.admission_changed, self.admission_waited)
        self.concurrency_limit.labels(self.component).set(max_running)
        self.queue_capacity.labels(self.component).set(max_waiting)
        return admission

    def admission_changed(self, running: int, waiting: int) -> None:
        self.in_flight.labels(self.component).set(running)
        self.queue_depth.labels(self.component).set(waiting)

    def admission_waited(self, seconds: float) -> None:
        self.queue_seconds.labels(self.component).observe(seconds)

    def model_loaded(self, model: str, device: str, dtype: str, seconds: float) -> None:
        self.load_seconds.labels(self.component).set(seconds)
        self.model_info.labels(self.component, model, device, dtype).set(1)
        self.ready.labels(self.component).set(1)

    # -- service-specific metrics, all with the component label first --------------------------------------------
    def histogram(self, name: str, doc: str, buckets=LATENCY_BUCKETS, labels: tuple[str, ...] = ()) -> Histogram:
        return Histogram(name, doc, [COMPONENT, *labels], buckets=buckets, registry=self.registry)

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, [COMPONENT, *labels], registry=self.registry)

    def gauge(self, name: str, doc: str) -> Gauge:
        return Gauge(name, doc, [COMPONENT], registry=self.registry)

    @contextmanager
    def track(self, method: str, context: grpc.aio.ServicerContext | None = None) -> Iterator[dict]:
        """Counts the RPC under the code it ends with; the body may set ``outcome['code']``. A body interrupted
        with the code still OK was cancelled (DEADLINE_EXCEEDED or CANCELLED as ``context`` tells), unless it set
        ``outcome['delivered']``: its final response had gone out, the call succeeded."""
        outcome = {"code": grpc.StatusCode.OK, "delivered": False}
        start = time.perf_counter()
        try:
            yield outcome
        except BaseException:
            if outcome["code"] == grpc.StatusCode.OK and not outcome["delivered"]:
                outcome["code"] = interrupted_code(context)
            raise
        finally:
            self.latency.labels(self.component, method).observe(time.perf_counter() - start)
            self.requests.labels(self.component, method, outcome["code"].name).inc()


class MergedRegistries:
    """One exposition of several services' registries (``acestep serve all``: one scrape target).

    Families of the same name (``acestep_requests_total`` of each service) are merged into one family,
    their samples told apart by the ``component`` label, as one Prometheus family must be. Process-wide
    samples every registry carries (``process_*``, ``python_*``, accelerator memory) appear once.
    """

    def __init__(self, registries: list[CollectorRegistry]):
        self.registries = registries

    def collect(self):
        merged = {}
        seen: set[tuple] = set()
        for registry in self.registries:
            for family in registry.collect():
                samples = [s for s in family.samples if (s.name, tuple(sorted(s.labels.items()))) not in seen]
                seen.update((s.name, tuple(sorted(s.labels.items()))) for s in samples)
                if family.name in merged:
                    merged[family.name].samples.extend(samples)
                else:
                    family.samples = samples
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
