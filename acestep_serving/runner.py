"""Start a model server: listen first (NOT_SERVING), load the model on a thread, then go SERVING.

Listening before loading lets Kubernetes' startup probe see a live process during a long load,
and readiness flips only when requests can really be served.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from acestep_client.errors import AceStepError
from acestep_serving.admission import Admission
from acestep_serving.devices import resolve_device, resolve_dtype
from acestep_serving.metrics import ServiceMetrics, serve_metrics
from acestep_serving.server import GrpcServer, ServerOptions
from acestep_serving.tracing import configure_tracing

log = logging.getLogger(__name__)


class ModelServicer(Protocol):
    """What the runner uses of a servicer, when it has it (a bare generated servicer works too)."""

    admission: Admission  # drained on SIGTERM

    def close_work(self, timeout: float) -> bool:
        """Stop taking model work; True once no model thread runs, False if one still does after ``timeout`` s."""


@dataclass
class RunningServer:
    server: GrpcServer
    port: int
    metrics_port: int | None
    loaded: asyncio.Task
    servicer: ModelServicer

    @property
    def address(self) -> str:
        return f"{self.server.options.host}:{self.port}"

    async def stop(self, grace: float = 0.0) -> bool:
        """Drain, stop, then wait for the model threads until the server's stop deadline; False if one still runs."""
        self.loaded.cancel()
        await self.server.drain_and_stop(grace)
        return await self.finish_work()

    async def finish_work(self) -> bool:
        close_work = getattr(self.servicer, "close_work", None)
        if close_work is None:
            return True
        deadline = self.server.stop_deadline or time.monotonic()
        return await asyncio.to_thread(close_work, deadline - time.monotonic())


def open_side_ports(
    label: str, args, server: GrpcServer, metrics: ServiceMetrics, announce: Callable[[str], None]
) -> int | None:
    """Announce the plaintext health port (if any) and start /metrics (if asked); returns the metrics port."""
    if server.health_port is not None:
        announce(f"{label}: plaintext health checks on {args.host}:{server.health_port}")
    if args.metrics_port < 0:
        return None
    metrics_port = serve_metrics(metrics.registry, args.metrics_port, args.host)
    announce(f"{label}: metrics on http://{args.host}:{metrics_port}/metrics")
    return metrics_port


async def start_model_server(
    args, label: str, service_name: str, add_to_server: Callable, servicer: object, metrics: ServiceMetrics,
    load: Callable[[str, torch.dtype], None], announce: Callable[[str], None] = print,
) -> RunningServer:
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    configure_tracing(f"acestep-{label}", args.otlp_endpoint)
    server = GrpcServer([service_name], ServerOptions.from_args(args))
    server.add(add_to_server, servicer)
    port = await server.start()
    announce(f"{label}: listening on {args.host}:{port}")
    metrics_port = open_side_ports(label, args, server, metrics, announce)
    admission = getattr(servicer, "admission", None)
    if admission is not None:
        server.manage(admission, metrics)

    async def load_then_serve() -> None:
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        await loop.run_in_executor(None, load, device, dtype)
        if server.draining:  # SIGTERM during the load
            return
        metrics.model_loaded(args.model, device, str(dtype).removeprefix("torch."), time.perf_counter() - began)
        await server.set_serving(True)
        announce(f"{label}: model {args.model} loaded on {device} ({str(dtype).removeprefix('torch.')}); serving")

    return RunningServer(server, port, metrics_port, asyncio.create_task(load_then_serve()), servicer)


async def wait_until_stopped(running: RunningServer) -> bool:
    """Serve until SIGTERM/SIGINT (then drain) or until the model fails to load (then exit with its error).

    Returns False when model work still runs at the stop deadline (the caller then exits without waiting for it).
    """
    waiter = asyncio.ensure_future(running.server.wait_for_termination())
    done, _ = await asyncio.wait([running.loaded, waiter], return_when=asyncio.FIRST_COMPLETED)
    if running.loaded in done and running.loaded.exception() is not None:
        await running.server.drain_and_stop(0)
        raise running.loaded.exception()
    await waiter
    finished = await running.finish_work()
    # A signal during the load: a load cannot be stopped halfway, and nothing needs it any more.
    return finished and running.loaded.done()


def exit_now(label: str) -> None:
    """Leave while a model thread is still inside a forward: waiting would overrun the grace period the pod was
    given, and letting the interpreter finalise under a running torch op aborts the process."""
    log.warning("%s: model work (or the model load) still running at the stop deadline; exiting without waiting "
                "for it", label)
    logging.shutdown()
    os._exit(0)


def run_server_main(parser, start: Callable, argv: list[str] | None = None) -> None:
    """``python -m <service>``: parse flags, start, serve until a signal."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> bool:
        return await wait_until_stopped(await start(args))

    try:
        finished = asyncio.run(run())
    except AceStepError as exc:  # a checkpoint that is missing, a backend this machine cannot run, ...
        log.error("%s cannot serve: %s", parser.prog, exc)
        raise SystemExit(1) from None
    if not finished:
        exit_now(parser.prog)
    log.info("%s: stopped", parser.prog)
