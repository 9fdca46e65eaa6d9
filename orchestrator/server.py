"""acestep.v1.MusicGenerationService: the front door, a thin gRPC shell over pipeline.generate_events."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from acestep_client.client import API_KEY_HEADER, clean_api_key, read_pem
from acestep_client.constants import MODEL_NAME_PATTERN, SAMPLE_RATE
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import dit_pb2_grpc, lm_pb2_grpc, orchestrator_pb2_grpc
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.types import GenerationConfig
from acestep_serving.admission import Admission
from acestep_serving.headway import Headway
from acestep_serving.metrics import STATUS_CODES, ServiceMetrics
from acestep_serving.preflight import StartupError
from acestep_serving.rpc import guarded_stream
from acestep_serving.runner import open_side_ports
from acestep_serving.server import GrpcServer, ServerOptions
from acestep_serving.tracing import configure_tracing
from orchestrator.describe import describe_events, prepare_describe
from orchestrator.pipeline import Backends, Prepared, generate_events, prepare_generation
from orchestrator.replicas import ReplicaPool, parse_pools
from orchestrator.telemetry import BackendMetrics, BackendTelemetry

log = logging.getLogger(__name__)

SERVICE_NAME = "acestep.v1.MusicGenerationService"
RTF_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 10, 25, 100)
DURATION_BUCKETS = (10, 30, 60, 120, 180, 240, 300, 420, 600)
STEP_BUCKETS = (1, 2, 4, 8, 16, 32, 50, 64, 100, 200)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16)
METHODS = ("GenerateMusic", "DescribeMusic")
# acestep_generations_total's task_type values (_task_label), each present from startup
TASK_LABELS = (*(name.removeprefix("TASK_TYPE_").lower() for name, _ in gen_pb2.TaskType.items()
                 if name != "TASK_TYPE_UNSPECIFIED"), "unknown")


class OrchestratorMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("orchestrator", METHODS)
        self.generations = self.counter("acestep_generations_total", "generate_music calls by task and code.",
                                        ("task_type", "code"))
        self.e2e_seconds = self.histogram("acestep_generation_duration_seconds", "End-to-end latency.")
        self.first_audio_seconds = self.histogram("acestep_time_to_first_audio_seconds",
                                                  "Request start to the first audio chunk.")
        self.rtf = self.histogram(
            "acestep_real_time_factor_ratio",
            "Real-time factor: a generation's wall seconds per second of audio it produced (all items together); "
            "below 1 is faster than real time.", buckets=RTF_BUCKETS,
        )  # fmt: skip
        self.requested_duration = self.histogram(
            "acestep_request_audio_duration_seconds", "Song length a request asks for (when it gives one).",
            buckets=DURATION_BUCKETS,
        )  # fmt: skip
        self.requested_steps = self.histogram("acestep_request_inference_steps", "Diffusion steps a request asks for.",
                                              buckets=STEP_BUCKETS)
        self.requested_batch = self.histogram("acestep_request_batch_size", "Songs a request asks for.",
                                              buckets=BATCH_BUCKETS)
        self.backends = BackendMetrics(self)
        for histogram in (self.e2e_seconds, self.first_audio_seconds, self.rtf, self.requested_duration,
                          self.requested_steps, self.requested_batch):
            histogram.labels(self.component)
        for task_type in TASK_LABELS:
            for code in STATUS_CODES:
                self.generations.labels(self.component, task_type, code)

    def requested(self, prepared: Prepared) -> None:
        if prepared.params.duration > 0:
            self.requested_duration.labels(self.component).observe(prepared.params.duration)
        self.requested_steps.labels(self.component).observe(prepared.params.inference_steps)
        self.requested_batch.labels(self.component).observe(prepared.config.batch_size)


def _task_label(number: int) -> str:
    """The metrics label of a request's task_type; a number no proto defines is refused later, counted as 'unknown'."""
    if number == gen_pb2.TASK_TYPE_UNSPECIFIED:
        return "text2music"
    if number not in gen_pb2.TaskType.values():
        return "unknown"
    return gen_pb2.TaskType.Name(number).removeprefix("TASK_TYPE_").lower()


class MusicGenerationServicer(orchestrator_pb2_grpc.MusicGenerationServiceServicer):
    def __init__(self, backends: Backends, admission: Admission, metrics: OrchestratorMetrics):
        self.backends = backends
        self.admission = admission
        self.metrics = metrics

    async def GenerateMusic(self, request, context):
        task_type = _task_label(request.params.task_type)
        start = time.perf_counter()
        audio_frames = 0

        async def events(prepared: Prepared):
            nonlocal audio_frames
            self.metrics.requested(prepared)
            async for event in generate_events(
                prepared, self.backends, timeout=context.time_remaining,
                on_first_audio=self.metrics.first_audio_seconds.labels("orchestrator").observe,
            ):
                if event.WhichOneof("event") == "item_result":
                    audio_frames += event.item_result.num_frames
                yield event
            elapsed = time.perf_counter() - start
            self.metrics.e2e_seconds.labels("orchestrator").observe(elapsed)
            if audio_frames:
                self.metrics.rtf.labels("orchestrator").observe(elapsed / (audio_frames / SAMPLE_RATE))

        def open_stream():  # checks run here, before guarded_stream takes a queue slot
            return events(prepare_generation(request, self.backends))

        def count(code: grpc.StatusCode) -> None:
            self.metrics.generations.labels("orchestrator", task_type, code.name).inc()

        items = request.config.batch_size if request.config.HasField("batch_size") else GenerationConfig().batch_size
        headway = Headway("GenerateMusic", request.request_id, items, "item_result")
        async for event in guarded_stream(context, self.metrics, "GenerateMusic", self.admission, open_stream, count,
                                          headway, is_final=lambda e: e.HasField("done"), service=SERVICE_NAME):
            yield event

    async def DescribeMusic(self, request, context):
        def open_stream():  # checks run here, before guarded_stream takes a queue slot
            lm_request = prepare_describe(request, self.backends)
            return describe_events(lm_request, self.backends, timeout=context.time_remaining)

        headway = Headway("DescribeMusic", request.request_id, 1, "description")
        async for event in guarded_stream(context, self.metrics, "DescribeMusic", self.admission, open_stream,
                                          headway=headway, is_final=lambda e: e.HasField("description"),
                                          service=SERVICE_NAME):
            yield event

    async def ListModels(self, request, context) -> gen_pb2.ListModelsResponse:
        """Every DiT and LM model and adapter the pools serve now, each once with ``replicas`` (the targets serving
        it) and ``is_default`` (what a request naming none gets); a replica that cannot answer is left out, unless
        its target is pinned to a model (listed, not loaded). GenerateMusic routes on the same answers, cached."""
        routers = [self.backends.dit_router, self.backends.lm_router]
        models = [m for router in routers if router is not None for m in await router.listing(fresh=True)]
        return gen_pb2.ListModelsResponse(models=models)


@dataclass
class RunningOrchestrator:
    server: GrpcServer
    port: int
    metrics_port: int | None
    backends: Backends
    metrics: ServiceMetrics

    async def stop(self, grace: float = 0.0) -> None:
        await self.server.drain_and_stop(grace)
        await self.backends.dit.close()
        if self.backends.lm is not None:
            await self.backends.lm.close()


def build_parser() -> argparse.ArgumentParser:
    from acestep_serving.flags import add_flag, add_server_flags

    parser = argparse.ArgumentParser(prog="acestep serve orchestrator", description="ACE-Step 1.5 front service")
    add_server_flags(parser, default_port=50050, max_concurrency=16, queue_size=64)
    add_flag(parser, "lm", "", "LM service address(es), comma-separated: host:port or dns:///name:port, each "
             "optionally MODEL=ADDRESS to pin it to a model (else its ListModels says); the first one's model is the "
             "default; empty = none")
    add_flag(parser, "dit", "127.0.0.1:50052", "DiT service address(es), comma-separated: host:port or "
             "dns:///name:port, each optionally MODEL=ADDRESS (e.g. acestep-v15-base=dns:///dit-base:50052) to pin "
             "it to a model (else its ListModels says); the first one's model is the default")
    add_flag(parser, "backend-api-key", "", "x-api-key sent to the LM and DiT services")
    add_flag(parser, "backend-root-cert", "", "PEM CA bundle that signed the LM/DiT certificates; enables TLS to them")
    add_flag(parser, "backend-client-cert", "", "PEM certificate chain shown to the LM/DiT services (mTLS)")
    add_flag(parser, "backend-client-key", "", "PEM private key for --backend-client-cert")
    add_flag(parser, "backend-tls-server-name", "", "name in the LM/DiT certificates when it differs from the address")
    add_flag(parser, "audio-root", "", "folder whose files requests may name by server_path; empty = disabled")
    return parser


def backend_metadata(key: str) -> tuple[tuple[str, str], ...]:
    """The x-api-key sent to the LM and DiT (whitespace around it dropped); StartupError for one gRPC cannot send."""
    try:
        key = clean_api_key(key, "--backend-api-key")
    except InvalidArgument as exc:
        raise StartupError(str(exc)) from None
    return ((API_KEY_HEADER, key),) if key else ()


def backend_pools(flag: str, spec: str) -> tuple[list[str], dict[str, str]]:
    """``--dit`` / ``--lm``: the addresses in order and their pins; StartupError naming the flag for a bad item."""
    addresses: list[str] = []
    pins: dict[str, str] = {}
    for name, address in parse_pools(spec):
        if not address:
            raise StartupError(f"--{flag} {spec}: an item without an address (expected [MODEL=]HOST:PORT)")
        if name and not re.fullmatch(MODEL_NAME_PATTERN, name):
            raise StartupError(f"--{flag} {name}={address}: {name!r} is not a model name (letters, digits, '.', '_', "
                               "'-')")
        if address in addresses:
            raise StartupError(f"--{flag} {spec}: {address} is given twice")
        addresses.append(address)
        if name:
            pins[address] = name
    return addresses, pins


def _describe_pools(addresses: list[str], pins: dict[str, str]) -> str:
    return ", ".join(f"{pins[a]}={a}" if a in pins else a for a in addresses) or "none"


def backend_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS (and mTLS with a client certificate) towards the LM and DiT services, or None for plaintext."""
    if bool(args.backend_client_cert) != bool(args.backend_client_key):
        raise ValueError("--backend-client-cert and --backend-client-key go together (mTLS)")
    if not args.backend_root_cert:
        if args.backend_client_cert:
            raise ValueError("--backend-client-cert needs --backend-root-cert (TLS to the LM/DiT services)")
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(args.backend_root_cert),
        private_key=read_pem(args.backend_client_key or None),
        certificate_chain=read_pem(args.backend_client_cert or None),
    )


async def start_orchestrator(args: argparse.Namespace, announce: Callable[[str], None] = print) -> RunningOrchestrator:
    configure_tracing("acestep-orchestrator", args.otlp_endpoint)
    metrics = OrchestratorMetrics()
    pool_options = {
        "max_message_bytes": int(args.max_message_mb * 1024 * 1024),
        "metadata": backend_metadata(args.backend_api_key),
        "credentials": backend_credentials(args),
        "tls_server_name": args.backend_tls_server_name,
    }
    dit_targets, dit_pins = backend_pools("dit", args.dit)
    lm_targets, lm_pins = backend_pools("lm", args.lm)
    if not dit_targets:
        raise StartupError("--dit: at least one DiT service address is needed")
    backends = Backends(
        dit=ReplicaPool(dit_targets, dit_pb2_grpc.DiffusionServiceStub, **pool_options,
                        telemetry=BackendTelemetry("dit", metrics.backends)),
        lm=ReplicaPool(lm_targets, lm_pb2_grpc.LanguageModelServiceStub, **pool_options,
                       telemetry=BackendTelemetry("lm", metrics.backends)) if lm_targets else None,
        audio_root=Path(args.audio_root) if args.audio_root else None,
        max_message_bytes=pool_options["max_message_bytes"],
        dit_pins=dit_pins,
        lm_pins=lm_pins,
    )
    admission = metrics.admission(args.max_concurrency, args.queue_size)
    server = GrpcServer([SERVICE_NAME], ServerOptions.from_args(args))
    server.add(orchestrator_pb2_grpc.add_MusicGenerationServiceServicer_to_server,
               MusicGenerationServicer(backends, admission, metrics))
    server.manage(admission, metrics)
    port = await server.start()
    await server.set_serving(True)
    metrics.ready.labels("orchestrator").set(1)
    announce(f"orchestrator: listening on {args.host}:{port} (LM: {_describe_pools(lm_targets, lm_pins)}; "
             f"DiT: {_describe_pools(dit_targets, dit_pins)})")
    metrics_port = open_side_ports("orchestrator", args, server, metrics, announce)
    return RunningOrchestrator(server, port, metrics_port, backends, metrics)


async def serve(args: argparse.Namespace) -> None:
    running = await start_orchestrator(args)
    await running.server.wait_for_termination()
    await running.stop()  # already drained: closes the LM/DiT channels


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))
    log.info("acestep serve orchestrator: stopped")

