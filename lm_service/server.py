"""gRPC adapter over :class:`lm_service.planner.Planner`: acestep.v1.LanguageModelService.

One replica may serve several LM checkpoints (``--model a,b`` or ``--model a --model b``): a request's
``lm_model`` picks one (NOT_FOUND naming it otherwise), "" gets the first. Each model is a planner of its own,
with its own engine and KV pool, all in this process's memory: on the torch backend every model holds its
weights plus ``--max-num-seqs`` x ``--max-model-len`` KV positions (the 1.7B at the defaults: 3.4 GB bf16 + a
7.5 GB pool), so two models take twice that; on vLLM each engine takes ``--gpu-memory-utilization`` of the GPU,
so their shares must add up to less than one. Describe (the text modes) runs on the first model. The
engines share the service's metrics (KV usage, rows per step: whichever engine reported last or all together).
"""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import AsyncIterator, Sequence

import torch

from acestep_client import constants as c
from acestep_client.convert import params_from_proto
from acestep_client.describe import DEFAULT_TEMPERATURE, validate_describe_task
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.proto.acestep.v1 import lm_pb2, lm_pb2_grpc
from acestep_client.validation import validate_params
from acestep_serving.admission import Admission
from acestep_serving.errors import Unavailable
from acestep_serving.headway import Headway
from acestep_serving.metrics import ServiceMetrics
from acestep_serving.models import served_model
from acestep_serving.rpc import fields_from, guarded_stream, item_seeds
from acestep_serving.worker import WorkerPool, stream_from_thread
from lm_service.constraints import strip_control_characters
from lm_service.describe import DESCRIBE_PHASE, DescribeRequest, Description, check_request
from lm_service.engine import EngineObserver, EngineOptions
from lm_service.model_info import lm_model_info
from lm_service.planner import ItemCodes, ItemMetadata, PhaseProgress, PhaseTimes, Planner, PlanRequest
from lm_service.vocab import DURATION_MAX, DURATION_MIN

log = logging.getLogger(__name__)

SERVICE_NAME = "acestep.v1.LanguageModelService"
_STAGES = {1: gen_pb2.STAGE_LM_PHASE1, 2: gen_pb2.STAGE_LM_PHASE2, DESCRIBE_PHASE: gen_pb2.STAGE_LM_DESCRIBE}


ROW_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
TOKEN_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3072, 4096, 8192)
PER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# The metrics' phase label: Phase 1 writes the chain of thought, Phase 2 the audio codes, the text modes text.
PHASES = {1: "cot", 2: "codes", DESCRIBE_PHASE: "text"}
METHODS = ("Plan", "Describe")


class LMMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("lm", METHODS)
        phase = ("phase",)
        self.tokens = self.counter("acestep_lm_generated_tokens_total", "Tokens sampled, by phase.", phase)
        self.phase_seconds = self.histogram("acestep_lm_phase_duration_seconds", "Phase wall time.", labels=phase)
        self.per_token_seconds = self.histogram(
            "acestep_lm_time_per_output_token_seconds", "A request's phase wall time per token it sampled.",
            buckets=PER_TOKEN_BUCKETS, labels=phase,
        )  # fmt: skip
        self.prompt_tokens = self.histogram(
            "acestep_lm_request_prompt_tokens", "Prompt tokens of a request's phase (all its rows).",
            buckets=TOKEN_BUCKETS, labels=phase,
        )  # fmt: skip
        self.request_tokens = self.histogram(
            "acestep_lm_request_generated_tokens", "Tokens a request's phase sampled.", buckets=TOKEN_BUCKETS,
            labels=phase,
        )  # fmt: skip
        self.batch_rows = self.histogram(
            "acestep_lm_batch_rows", "KV rows in one decode step (all requests together).", buckets=ROW_BUCKETS
        )
        self.kv_usage = self.gauge("acestep_lm_kv_cache_usage_ratio", "Share of the KV cache slots held by rows.")
        self.kv_wait_seconds = self.histogram(
            "acestep_lm_kv_slot_wait_seconds", "Time a sequence waited for a KV slot before its prefill."
        )
        self.first_token_seconds = self.histogram(
            "acestep_lm_time_to_first_token_seconds", "Submission of a decode (CoT, codes or text) to its first token."
        )
        self.kv_usage.labels("lm").set(0)
        for histogram in (self.batch_rows, self.kv_wait_seconds, self.first_token_seconds):
            histogram.labels("lm")  # present from startup
        for name in PHASES.values():
            self.tokens.labels("lm", name)
            for histogram in (self.phase_seconds, self.per_token_seconds, self.prompt_tokens, self.request_tokens):
                histogram.labels("lm", name)

    def phase_done(self, phase: str, seconds: float, generated: int, prompt: int) -> None:
        """One request's phase: its time, tokens sampled and prompt tokens."""
        self.phase_seconds.labels("lm", phase).observe(seconds)
        self.tokens.labels("lm", phase).inc(generated)
        self.request_tokens.labels("lm", phase).observe(generated)
        self.prompt_tokens.labels("lm", phase).observe(prompt)
        if generated:
            self.per_token_seconds.labels("lm", phase).observe(seconds / generated)


class MetricsObserver(EngineObserver):
    """Feeds the engine's scheduling events into the LM's Prometheus metrics."""

    def __init__(self, metrics: LMMetrics):
        self.metrics = metrics

    def decode_step(self, rows: int) -> None:
        self.metrics.batch_rows.labels("lm").observe(rows)

    def kv_usage(self, ratio: float) -> None:
        self.metrics.kv_usage.labels("lm").set(ratio)

    def queue_time(self, seconds: float) -> None:
        self.metrics.kv_wait_seconds.labels("lm").observe(seconds)

    def first_token(self, seconds: float) -> None:
        self.metrics.first_token_seconds.labels("lm").observe(seconds)


def planner_request(request: lm_pb2.PlanRequest, max_batch: int) -> PlanRequest:
    params = params_from_proto(request.params)
    validate_params(params)
    seeds = item_seeds(list(request.seeds), max_batch)
    chunk = request.lm_batch_chunk_size if request.HasField("lm_batch_chunk_size") else 8
    if not 1 <= chunk <= max_batch:
        raise InvalidArgument("lm_batch_chunk_size", f"must be between 1 and {max_batch}, got {chunk}")
    return fields_from(
        PlanRequest, params, constrained_decoding_debug=request.constrained_decoding_debug, seeds=seeds,
        lm_batch_chunk_size=chunk, generate_codes=request.generate_codes,
    )


def describe_request(task: gen_pb2.DescribeTask) -> DescribeRequest:
    """Validated text-mode request; an unset seed is drawn here and reported back in the description."""
    mode = validate_describe_task(task)
    sampling = task.sampling
    common = dict(
        mode=mode,
        temperature=sampling.temperature if sampling.HasField("temperature") else DEFAULT_TEMPERATURE,
        top_k=sampling.top_k,
        top_p=sampling.top_p if sampling.HasField("top_p") else 1.0,
        use_constrained_decoding=(
            sampling.use_constrained_decoding if sampling.HasField("use_constrained_decoding") else True
        ),
        constrained_decoding_debug=sampling.constrained_decoding_debug,
        seed=sampling.seed if sampling.HasField("seed") else random.randint(0, c.SEED_MAX),
        max_new_tokens=sampling.max_new_tokens if sampling.HasField("max_new_tokens") else None,
    )
    if mode == "understand":
        return DescribeRequest(audio_codes=task.understand.audio_codes, **common)
    if mode == "create_sample":
        sample = task.create_sample
        return DescribeRequest(
            query=sample.query, instrumental=sample.instrumental, vocal_language=sample.vocal_language, **common
        )
    sample = task.format_sample
    return DescribeRequest(
        caption=sample.caption,
        lyrics=sample.lyrics,
        bpm=sample.bpm if sample.HasField("bpm") else None,
        duration=sample.duration if sample.HasField("duration") else None,
        keyscale=sample.keyscale,
        timesignature=sample.timesignature,
        language=sample.language,
        **common,
    )


def description_to_proto(description: Description) -> gen_pb2.SampleDescription:
    message = gen_pb2.SampleDescription(
        caption=description.caption,
        lyrics=description.lyrics,
        keyscale=description.keyscale,
        language=description.language,
        timesignature=description.timesignature,
        instrumental=description.instrumental,
        raw_text=description.raw_text,
        seed=description.seed,
        generated_tokens=description.generated_tokens,
        lm_time_seconds=description.lm_time_seconds,
        warnings=[gen_pb2.Warning(field=name, message=text) for name, text in description.warnings],
    )
    bpm, duration = _number(description.bpm), _number(description.duration)
    if bpm is not None:
        message.bpm = int(bpm)
    if duration is not None:
        message.duration = duration
    return message


def progress_to_proto(event: PhaseProgress) -> gen_pb2.Progress:
    return gen_pb2.Progress(
        stage=_STAGES.get(event.phase, gen_pb2.STAGE_UNSPECIFIED),
        step=event.tokens,
        total_steps=event.total_estimate,
        fraction=min(event.tokens / max(event.total_estimate, 1), 1.0),
        message=f"LM {'text' if event.phase == DESCRIBE_PHASE else f'phase {event.phase}'}: {event.tokens} tokens",
    )


def metadata_to_proto(metadata: dict) -> gen_pb2.LmMetadata:
    def text(key: str) -> str:  # the planner strips control characters; anything else in the dict too
        return strip_control_characters(str(metadata.get(key) or ""))

    message = gen_pb2.LmMetadata(
        caption=text("caption"),
        keyscale=text("keyscale"),
        language=text("language"),
        timesignature=text("timesignature"),
        cot_text=text("cot_text") or text("raw"),
    )
    bpm, duration = _number(metadata.get("bpm")), _number(metadata.get("duration"))
    if bpm is not None:
        message.bpm = int(bpm)
    if duration is not None:
        message.duration = duration
    return message


def _number(value: object) -> float | None:
    """Unconstrained decoding can write anything after ``bpm:``; keep only what parses as a number."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if abs(number) < 2**31 else None


class LanguageModelServicer(lm_pb2_grpc.LanguageModelServiceServicer):
    def __init__(self, admission: Admission, metrics: LMMetrics, max_batch: int = 8, model_name: str = "",
                 model_names: Sequence[str] = ()):
        """``model_names`` (or one ``model_name``): the LM folders it serves, as ListModels reports them; the
        first is the default. Their planners join :attr:`planners` as they load."""
        self.model_names = list(model_names) or ([model_name] if model_name else [])
        self.planners: dict[str, Planner] = {}
        self.admission = admission
        self.metrics = metrics
        self.max_batch = max_batch
        self.executor = WorkerPool(admission.max_running, "lm-worker")

    def close_work(self, timeout: float) -> bool:
        """Shutdown: take no more work and wait (up to ``timeout`` s) for the request threads; the engine's
        scheduler thread goes idle once they have left (and is closed at exit)."""
        return self.executor.close(timeout)

    @property
    def model_name(self) -> str:
        """The default model (the first)."""
        return self.model_names[0] if self.model_names else ""

    @property
    def planner(self) -> Planner | None:
        """The default model's planner (None while it loads)."""
        return self.planners.get(self.model_name)

    @planner.setter
    def planner(self, planner: Planner | None) -> None:
        if planner is None:
            self.planners.pop(self.model_name, None)
        else:
            self.planners[self.model_name] = planner

    def _planner_for(self, requested: str) -> Planner:
        """The planner of the model a request names ("" = the default); NOT_FOUND for one this replica lacks."""
        name = served_model("lm_model", requested, self.model_names, "LM")
        planner = self.planners.get(name)
        if planner is None or len(self.planners) < len(self.model_names):
            raise Unavailable("the LM is still loading; retry shortly")
        return planner

    async def Plan(self, request, context) -> AsyncIterator[lm_pb2.PlanResponse]:
        def open_stream():
            planner = self._planner_for(request.params.lm_model)
            req = planner_request(request, self.max_batch)
            planner.validate(req)
            return self._stream(planner, req)

        headway = Headway("Plan", request.request_id, len(request.seeds),
                          "codes" if request.generate_codes else "metadata")
        async for response in guarded_stream(context, self.metrics, "Plan", self.admission, open_stream,
                                             headway=headway, is_final=lambda r: r.HasField("time_costs"),
                                             service=SERVICE_NAME):
            yield response

    async def Describe(self, request, context) -> AsyncIterator[lm_pb2.DescribeResponse]:
        def open_stream():
            planner = self._planner_for("")  # the text modes run on the default model
            req = describe_request(request.task)
            check_request(planner, req)  # e.g. a token budget too small for the user's values
            return self._describe_stream(planner, req)

        headway = Headway("Describe", request.request_id, 1, "description")
        async for response in guarded_stream(context, self.metrics, "Describe", self.admission, open_stream,
                                             headway=headway, is_final=lambda r: r.HasField("description"),
                                             service=SERVICE_NAME):
            yield response

    async def ListModels(self, request, context) -> gen_pb2.ListModelsResponse:
        """The models this replica serves, the default (first) marked (``loaded`` false while one loads)."""
        models = [lm_model_info(name, self.planners.get(name), self.max_batch) for name in self.model_names]
        if models:
            models[0].is_default = True
        return gen_pb2.ListModelsResponse(models=models)

    async def _describe_stream(self, planner: Planner, req: DescribeRequest):
        async for event in stream_from_thread(lambda stop: planner.describe(req, stop), self.executor):
            if isinstance(event, PhaseProgress):
                yield lm_pb2.DescribeResponse(progress=progress_to_proto(event))
            elif isinstance(event, Description):
                self.metrics.phase_done(PHASES[DESCRIBE_PHASE], event.lm_time_seconds, event.generated_tokens,
                                        event.prompt_tokens)
                yield lm_pb2.DescribeResponse(description=description_to_proto(event))

    async def _stream(self, planner: Planner, req: PlanRequest):
        async for event in stream_from_thread(lambda stop: planner.plan(req, stop), self.executor):
            if isinstance(event, PhaseProgress):
                yield lm_pb2.PlanResponse(progress=progress_to_proto(event))
            elif isinstance(event, ItemMetadata):
                yield lm_pb2.PlanResponse(
                    metadata=lm_pb2.ItemMetadata(item_index=event.item, metadata=metadata_to_proto(event.metadata))
                )
            elif isinstance(event, ItemCodes):
                yield lm_pb2.PlanResponse(codes=gen_pb2.ItemCodes(item_index=event.item, codes=event.codes))
            elif isinstance(event, PhaseTimes):
                for phase, seconds in ((1, event.lm_phase1_time), (2, event.lm_phase2_time)):
                    if event.prompt_tokens.get(phase, 0):  # the phases that ran
                        self.metrics.phase_done(PHASES[phase], seconds, event.generated_tokens.get(phase, 0),
                                                event.prompt_tokens[phase])
                yield lm_pb2.PlanResponse(
                    time_costs=gen_pb2.TimeCosts(
                        seconds={
                            "lm_phase1_time": event.lm_phase1_time,
                            "lm_phase2_time": event.lm_phase2_time,
                            "lm_total_time": event.lm_phase1_time + event.lm_phase2_time,
                        }
                    )
                )


def build_parser() -> argparse.ArgumentParser:
    from acestep_serving.flags import add_flag, add_model_flags, add_server_flags

    parser = argparse.ArgumentParser(prog="acestep serve lm", description="ACE-Step 1.5 5 Hz LM planner gRPC service")
    # Requests run at once (each on its own thread); their rows beyond --max-num-seqs wait in the engine.
    add_server_flags(parser, default_port=50051, max_concurrency=16, queue_size=64)
    add_model_flags(parser, default_model=c.DEFAULT_LM_MODEL, several=True)
    add_flag(parser, "backend", "torch", "torch (CPU or GPU) or vllm (GPU, optional extra)", choices=["torch", "vllm"])
    add_flag(parser, "max-duration", DURATION_MAX, "longest song (seconds) the LM plans: the CoT's duration "
             f"choices and requests stop there, and codes never go beyond it ({DURATION_MIN}-{DURATION_MAX}; "
             "upstream lowers it on small GPUs)")
    add_flag(parser, "gpu-memory-utilization", 0.5, "vllm backend: share of GPU memory for weights + KV cache, "
             "per model (with several --model, their shares add up)")
    add_flag(parser, "max-num-seqs", EngineOptions.max_num_seqs, "torch backend: KV-cache slots, i.e. sequences "
             "decoding at once across all requests (a song with LM CFG takes two)")
    add_flag(parser, "max-model-len", EngineOptions.max_model_len, "torch backend: positions per KV slot "
             "(prompt + generated tokens)")
    add_flag(parser, "prefill-chunk", EngineOptions.prefill_chunk, "torch backend: prompt tokens per prefill "
             "chunk; long prompts are prefilled a chunk at a time between decode steps")
    add_flag(parser, "decode-attention", "matmul", "torch backend: decode attention as explicit matmuls or one "
             "fused SDPA kernel (bench/lm.py compares them)", choices=["matmul", "sdpa"])
    return parser


async def start(args: argparse.Namespace, announce=print):
    from pathlib import Path

    from acestep_serving.preflight import StartupError
    from acestep_serving.runner import start_model_server

    if not DURATION_MIN <= args.max_duration <= DURATION_MAX:
        raise StartupError(f"--max-duration {args.max_duration}: must be between {DURATION_MIN} and {DURATION_MAX}")
    names = model_names(args)
    metrics = LMMetrics()
    admission = metrics.admission(args.max_concurrency, args.queue_size)
    servicer = LanguageModelServicer(admission, metrics, max_batch=args.max_batch, model_names=names)

    def load(device: str, dtype: torch.dtype) -> None:
        for name in names:  # one after the other: each takes its own memory (see the module docstring)
            servicer.planners[name] = load_one(name, device, dtype)

    def load_one(name: str, device: str, dtype: torch.dtype) -> Planner:
        planner_options: dict = {"max_duration": args.max_duration}
        if args.backend == "vllm":
            options = {"gpu_memory_utilization": args.gpu_memory_utilization}
        else:
            options = {"decode_attention": args.decode_attention}
            planner_options |= {
                "engine_options": EngineOptions(args.max_num_seqs, args.max_model_len, args.prefill_chunk,
                                                max(args.prefill_chunk, EngineOptions.prefill_budget)),
                "engine_observer": MetricsObserver(metrics),
            }  # fmt: skip
        return Planner.load(
            Path(args.checkpoints) / name, backend=args.backend, device=device, dtype=dtype,
            planner_options=planner_options, **options,
        )  # fmt: skip

    return await start_model_server(
        args,
        "lm",
        SERVICE_NAME,
        lm_pb2_grpc.add_LanguageModelServiceServicer_to_server,
        servicer,
        metrics,
        load,
        announce,
    )


def model_names(args: argparse.Namespace) -> list[str]:
    """``--model``'s names, the default first; StartupError for none, a repeat, or vLLM shares above the GPU."""
    from acestep_serving.flags import split_names
    from acestep_serving.preflight import StartupError

    names = split_names(args.model)
    if not names:
        raise StartupError("--model: name at least one LM folder")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise StartupError(f"--model {args.model}: {', '.join(repeated)} given twice")
    share = args.gpu_memory_utilization * len(names)
    if args.backend == "vllm" and share > 0.95:
        raise StartupError(f"--gpu-memory-utilization {args.gpu_memory_utilization}: {len(names)} models x that share "
                           f"= {share:.2f} of the GPU; give each at most {0.95 / len(names):.2f}")
    return names


def main(argv: list[str] | None = None) -> None:
    from acestep_serving.runner import run_server_main

    run_server_main(build_parser(), start, argv)
