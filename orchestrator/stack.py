"""The three services in one process: ``acestep serve all``, the CLI's embedded mode, and tests.

On a single machine the orchestrator, the LM and the DiT share one event loop; they still talk
over real gRPC on 127.0.0.1, so the single-machine path is the production path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acestep_client.constants import DEFAULT_DIT_MODEL, DEFAULT_LM_MODEL
from acestep_client.proto.acestep.v1 import dit_pb2_grpc, lm_pb2_grpc, orchestrator_pb2
from acestep_serving.metrics import merged_registry, serve_metrics
from orchestrator.pipeline import Backends, generate_events
from orchestrator.replicas import ReplicaPool
from orchestrator.telemetry import BackendTelemetry

if TYPE_CHECKING:  # runner imports torch: kept out of the start-up checks' path
    from acestep_serving.runner import RunningServer

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS.txt"
RANDOM_WEIGHTS_WARNING = (
    "WARNING: using RANDOMLY INITIALISED checkpoints in {root}: the audio (and LM text) will be noise. "
    "Put the released ACE-Step 1.5 checkpoints there for real music."
)


def write_tiny_checkpoints(root: str | Path, seed: int = 0) -> Path:
    """A tiny random checkpoint root in the released layout (DiT variants, VAE, text encoder, LM)."""
    from dit_service.tiny_checkpoint import write_tiny_dit_checkpoints
    from lm_service.tiny_checkpoint import write_tiny_lm_checkpoint

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_tiny_dit_checkpoints(root, seed=seed)
    write_tiny_lm_checkpoint(root, seed=seed, name=DEFAULT_LM_MODEL)
    (root / RANDOM_WEIGHTS_MARKER).write_text(
        f"Written by `acestep make-tiny-checkpoints` (seed {seed}): tiny randomly initialised weights in the "
        "released ACE-Step 1.5 layout, for tests and offline demos. Their audio is noise.\n"
    )
    return root


def _is_empty(root: Path) -> bool:
    return not root.exists() or (root.is_dir() and not any(p for p in root.iterdir() if not p.name.startswith(".")))


def ensure_checkpoints(root: str | Path, announce: Callable[[str], None] = print,
                       dit_model: str = DEFAULT_DIT_MODEL, lm_model: str | None = DEFAULT_LM_MODEL) -> Path:
    """``root`` with the models asked for: tiny random ones are written only into a missing or empty folder.

    A folder that holds anything else is never written to: a mistyped ``--dit-model`` must not litter a
    folder of real checkpoints with random ones. Raises StartupError naming the flag to fix.
    """
    from acestep_serving.preflight import StartupError, check_dit_model, check_lm_model

    root = Path(root)
    if _is_empty(root):
        from dit_service.tiny_checkpoint import VARIANTS

        if dit_model not in VARIANTS:
            raise StartupError(f"--dit-model {dit_model}: no such model in {root} (an empty folder; tiny random "
                               f"checkpoints exist for {', '.join(VARIANTS)} only)")
        if lm_model not in (None, DEFAULT_LM_MODEL):
            raise StartupError(f"--lm-model {lm_model}: no such model in {root} (an empty folder; tiny random "
                               f"checkpoints exist for {DEFAULT_LM_MODEL} only)")
        announce(f"no ACE-Step checkpoints in {root}: writing tiny random ones")
        write_tiny_checkpoints(root)
    elif root.exists() and not root.is_dir():
        raise StartupError(f"--checkpoints {root}: not a folder")
    check_dit_model(root, dit_model)
    if lm_model is not None:
        check_lm_model(root, lm_model)
    if (root / RANDOM_WEIGHTS_MARKER).exists():
        announce(RANDOM_WEIGHTS_WARNING.format(root=root))
    return root


@dataclass
class Stack:
    lm: RunningServer | None
    dit: RunningServer
    orchestrator: object  # orchestrator.server.RunningOrchestrator
    address: str
    metrics_port: int | None = None  # one /metrics for all three services (label component=lm|dit|orchestrator)

    async def stop(self) -> bool:
        """Front first, then the models; False if model work still ran at a server's stop deadline."""
        await self.orchestrator.stop()
        models = [self.dit, *([self.lm] if self.lm is not None else [])]
        return all(await asyncio.gather(*(server.stop() for server in models)))  # their margins overlap


def _common_flags(checkpoints: Path, model: str, device: str, dtype: str) -> list[str]:
    return ["--checkpoints", str(checkpoints), "--model", model, "--device", device, "--dtype", dtype,
            "--port", "0", "--host", "127.0.0.1"]


def preflight(checkpoints: str | Path, *, port: int = 0, lm_port: int = 0, dit_port: int = 0,
              metrics_port: int = -1, dit_model: str = DEFAULT_DIT_MODEL, lm_model: str | None = DEFAULT_LM_MODEL,
              device: str = "auto", dtype: str = "auto") -> None:
    """What can be checked before loading, cheapest first; raises StartupError naming the flag to fix."""
    from acestep_serving.preflight import (
        check_device,
        check_device_name,
        check_dit_model,
        check_dtype,
        check_lm_model,
        check_ports,
    )

    check_ports("127.0.0.1", [("--port", port), ("--lm-port", lm_port), ("--dit-port", dit_port),
                              ("--metrics-port", metrics_port)])
    check_device_name(device)
    if not _is_empty(Path(checkpoints)):  # an empty folder gets tiny checkpoints (ensure_checkpoints)
        check_dit_model(checkpoints, dit_model)
        if lm_model is not None:
            check_lm_model(checkpoints, lm_model)
    check_device(device)  # these import torch: seconds
    check_dtype(dtype)


async def start_stack(
    checkpoints: str | Path = "./checkpoints", *, port: int = 0, lm_port: int = 0, dit_port: int = 0,
    dit_model: str = DEFAULT_DIT_MODEL, lm_model: str | None = DEFAULT_LM_MODEL, device: str = "auto",
    dtype: str = "auto", metrics_port: int = -1, announce: Callable[[str], None] = print,
    extra_orchestrator_flags: Sequence[str] = (), extra_model_flags: Sequence[str] = (),
    lm_flags: Sequence[str] = (), dit_flags: Sequence[str] = (), otlp_endpoint: str = "",
) -> Stack:
    """Start LM (unless ``lm_model`` is None), DiT and orchestrator; return once all serve.

    ``extra_model_flags`` go to both model servers (e.g. their TLS), ``lm_flags`` / ``dit_flags`` to one
    (e.g. ``--max-num-seqs``, ``--batch-wait-ms``), ``extra_orchestrator_flags`` to the front.
    ``otlp_endpoint``: where all three export their trace spans (empty: OpenTelemetry's variables, else off).
    """
    preflight(checkpoints, port=port, lm_port=lm_port, dit_port=dit_port, metrics_port=metrics_port,
              dit_model=dit_model, lm_model=lm_model, device=device, dtype=dtype)
    root = ensure_checkpoints(checkpoints, announce, dit_model, lm_model)
    from acestep_serving.tracing import configure_tracing
    from dit_service import server as dit_server  # the model code: imported once the checks passed
    from lm_service import server as lm_server
    from orchestrator.server import build_parser, start_orchestrator

    configure_tracing("acestep", otlp_endpoint)  # one process: its spans under one service name
    started: list = []  # stopped again if anything below fails or the caller gives up (Ctrl-C)
    extra_model_flags = [*(["--otlp-endpoint", otlp_endpoint] if otlp_endpoint else []), *extra_model_flags]
    extra_orchestrator_flags = [*(["--otlp-endpoint", otlp_endpoint] if otlp_endpoint else []),
                                *extra_orchestrator_flags]
    try:
        dit_args = dit_server.build_parser().parse_args(
            [*_common_flags(root, dit_model, device, dtype), "--port", str(dit_port), *extra_model_flags,
             *dit_flags])
        dit = await _started(dit_server.start(dit_args, announce), started)
        lm = None
        if lm_model is not None:
            lm_args = lm_server.build_parser().parse_args(
                [*_common_flags(root, lm_model, device, dtype), "--port", str(lm_port), *extra_model_flags,
                 *lm_flags])
            lm = await _started(lm_server.start(lm_args, announce), started)
        await asyncio.gather(dit.loaded, *([lm.loaded] if lm else []))
        orch_args = build_parser().parse_args([
            "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1",
            "--dit", dit.address, "--lm", lm.address if lm else "", *extra_orchestrator_flags])
        orch = await _started(start_orchestrator(orch_args, announce), started)
        stack = Stack(lm, dit, orch, f"127.0.0.1:{orch.port}")
        if metrics_port >= 0:
            registries = [orch.metrics.registry, dit.servicer.metrics.registry]
            registries += [lm.servicer.metrics.registry] if lm else []
            stack.metrics_port = serve_metrics(merged_registry(registries), metrics_port)
            announce(f"serve all: metrics of every service on http://127.0.0.1:{stack.metrics_port}/metrics")
    except BaseException:
        await _stop_all(started)
        raise
    return stack


async def _started(starting: Awaitable, started: list) -> Any:
    """Await a server's start; whatever happens (Ctrl-C mid-start too), a server that did start joins ``started``.

    The start runs as its own task: cancelling the caller lets it finish (it only binds a port and
    spawns the load), so the half-started server is known and can be stopped.
    """
    task = asyncio.ensure_future(starting)
    try:
        server = await asyncio.shield(task)
    except BaseException:
        if not task.done():
            with contextlib.suppress(BaseException):
                await task
        if task.done() and not task.cancelled() and task.exception() is None:
            started.append(task.result())
        raise
    started.append(server)
    return server


async def _stop_all(servers: Sequence) -> None:
    """Stop what started, newest first, so no gRPC server outlives the event loop ("Event loop is closed")."""
    for server in reversed(servers):
        with contextlib.suppress(Exception):
            await asyncio.shield(server.stop())


@asynccontextmanager
async def embedded_stack(checkpoints: str | Path = "./checkpoints", announce: Callable[[str], None] = print,
                         **options) -> AsyncIterator[str]:
    stack = await start_stack(checkpoints, announce=announce, **options)
    try:
        yield stack.address
    finally:
        await stack.stop()


async def run_pipeline_events(
    request: orchestrator_pb2.GenerateMusicRequest, lm_addresses: Sequence[str] | None, dit_addresses: Sequence[str],
) -> AsyncIterator[orchestrator_pb2.GenerateMusicResponse]:
    """generate_music over remote LM/DiT services without an orchestrator server in between."""
    backends = Backends(
        dit=ReplicaPool(list(dit_addresses), dit_pb2_grpc.DiffusionServiceStub, telemetry=BackendTelemetry("dit")),
        lm=ReplicaPool(list(lm_addresses), lm_pb2_grpc.LanguageModelServiceStub, telemetry=BackendTelemetry("lm"))
        if lm_addresses else None,
    )
    try:
        async for event in generate_events(request, backends):
            yield event
    finally:
        await backends.dit.close()
        if backends.lm is not None:
            await backends.lm.close()


def build_serve_all_parser() -> argparse.ArgumentParser:
    from acestep_serving.flags import add_flag

    parser = argparse.ArgumentParser(prog="acestep serve all",
                                     description="LM, DiT and orchestrator in one process (single machine)")
    add_flag(parser, "port", 50050, "orchestrator port; 0 picks a free one")
    add_flag(parser, "lm-port", 0, "LM port; 0 picks a free one")
    add_flag(parser, "dit-port", 0, "DiT port; 0 picks a free one")
    add_flag(parser, "checkpoints", "./checkpoints", "checkpoint root (tiny random ones are written if empty)")
    add_flag(parser, "dit-model", DEFAULT_DIT_MODEL, "DiT variant folder")
    add_flag(parser, "lm-model", DEFAULT_LM_MODEL, "LM folder; 'none' runs without an LM")
    add_flag(parser, "device", "auto", "cpu, cuda or auto")
    add_flag(parser, "dtype", "auto", "float32, bfloat16, float16 or auto")
    add_flag(parser, "metrics-port", -1, "/metrics port of all three services (label component=lm|dit|orchestrator);"
             " 0 picks one, -1 disables")
    add_flag(parser, "otlp-endpoint", "", "OTLP/gRPC collector the trace spans go to (the tracing extra); empty: "
             "OTEL_EXPORTER_OTLP_ENDPOINT if set, else no export")
    add_flag(parser, "log-level", "INFO", "logging level")
    return parser


def serve_all_main(argv: list[str] | None = None) -> int:
    """``acestep serve all``: a start-up problem prints one line naming the flag and returns 1."""
    from acestep_client.errors import AceStepError

    args = build_serve_all_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level)
    serving = False

    async def run() -> bool:
        nonlocal serving
        stack = await start_stack(
            args.checkpoints, port=args.port, lm_port=args.lm_port, dit_port=args.dit_port,
            dit_model=args.dit_model, lm_model=None if args.lm_model == "none" else args.lm_model,
            device=args.device, dtype=args.dtype, metrics_port=args.metrics_port, otlp_endpoint=args.otlp_endpoint)
        serving = True
        print(f"acestep: serving generate_music on {stack.address}", flush=True)
        try:
            await stack.orchestrator.server.wait_for_termination()
        except BaseException:
            await stack.stop()
            raise
        return await stack.stop()

    try:
        finished = asyncio.run(run())
    except AceStepError as exc:  # a busy port, a missing model folder, a device this machine lacks, ...
        print(f"acestep serve all: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if serving:
            raise
        log.debug("start-up failed", exc_info=True)
        first_line = (str(exc).strip().splitlines() or [""])[0]
        print(f"acestep serve all: error: loading the models failed: {type(exc).__name__}: {first_line} "
              "(--log-level DEBUG shows where)", file=sys.stderr)
        return 1
    if not finished:
        from acestep_serving.runner import exit_now

        exit_now("acestep serve all")
    return 0
