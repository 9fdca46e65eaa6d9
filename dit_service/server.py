"""gRPC adapter over :class:`dit_service.engine.DiTEngine`: acestep.v1.DiffusionService.

Everything model-shaped happens in the engine; this file converts messages, admits requests,
streams events and counts them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

import numpy as np
import torch

from acestep_client import constants as c
from acestep_client.audio_io import to_model_audio
from acestep_client.audio_uploads import decode_upload
from acestep_client.convert import check_enum, params_from_proto
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import dit_pb2, dit_pb2_grpc
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.tracing import stage
from acestep_client.validation import validate_params
from acestep_client.wire_audio import audio_chunk, stream_encoding_number
from acestep_serving.admission import Admission
from acestep_serving.errors import Unavailable
from acestep_serving.headway import Headway
from acestep_serving.metrics import ServiceMetrics
from acestep_serving.models import served_model
from acestep_serving.rpc import fields_from, guarded_call, guarded_stream, item_seeds
from acestep_serving.worker import WorkerPool, run_in_thread, stream_from_thread
from dit_service.adapters.library import DEFAULT_CACHE_MB as DEFAULT_ADAPTER_CACHE_MB
from dit_service.batcher import BatchInfo, ForwardBatcher
from dit_service.edit_options import EditOptions, edit_notes
from dit_service.engine import AudioWindow, DiTEngine, ItemDone, StepProgress, SynthesisRequest, TimeCosts
from dit_service.flow_edit import flow_edit_notes
from dit_service.model_info import adapter_model_infos, dit_model_info
from dit_service.output_options import OutputOptions
from dit_service.sampling_notes import sampling_notes
from dit_service.sampling_options import SamplingOptions
from dit_service.tasks import clamp_codes, parse_audio_codes

log = logging.getLogger(__name__)

SERVICE_NAME = "acestep.v1.DiffusionService"
DEFAULT_CHUNK_FRAMES = 131_072  # 1 MiB of stereo float32 per chunk: well under the 4 MiB limit
MAX_CHUNK_FRAMES = 262_144
BATCH_ITEM_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
MAX_LATENT_FRAMES = int(c.DURATION_RANGE[1]) * c.LATENT_FRAMES_PER_SECOND  # 15,000: 600 s at 25 Hz


class DiTMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("dit", ("Synthesize", "EncodeAudio"))
        self.step_seconds = self.histogram("acestep_dit_step_duration_seconds", "One diffusion step, whole batch.")
        self.decode_seconds = self.histogram("acestep_dit_vae_decode_duration_seconds", "VAE decode of a request.")
        self.first_audio_seconds = self.histogram(
            "acestep_dit_time_to_first_audio_seconds", "Request start to its first audio chunk."
        )
        self.audio_seconds = self.counter("acestep_dit_audio_seconds_total", "Seconds of audio produced.")
        self.batch_size = self.histogram("acestep_dit_batch_size", "Items per request.", buckets=(1, 2, 3, 4, 6, 8))
        self.batch_items = self.histogram(
            "acestep_dit_batch_items",
            "Rows per DiT forward, merged across concurrent requests (CFG halves count as rows).",
            buckets=BATCH_ITEM_BUCKETS,
        )
        self.vae_batch_items = self.histogram(
            "acestep_dit_vae_batch_items", "Items per VAE window decode, merged across requests.",
            buckets=BATCH_ITEM_BUCKETS,
        )
        # Present from startup, like the load gauges: dashboards should not wait for the first request.
        for histogram in (self.batch_items, self.vae_batch_items, self.step_seconds, self.decode_seconds,
                          self.first_audio_seconds, self.batch_size, self.audio_seconds):
            histogram.labels(self.component)

    def observe_batch(self, info: BatchInfo) -> None:
        """The engine's batcher observer (called on its worker thread after every merged forward)."""
        target = self.batch_items if info.kind == "dit" else self.vae_batch_items
        target.labels(self.component).observe(info.rows)


def _latents_from_proto(encoded: gen_pb2.EncodedAudio, field: str) -> torch.Tensor | None:
    """EncodedAudio's latents as a [frames, channels] tensor: 1-15,000 frames (600 s) of finite values."""
    if not encoded.latents_f32le:
        return None
    if not 1 <= encoded.frames <= MAX_LATENT_FRAMES:
        raise InvalidArgument(field, f"frames must be between 1 and {MAX_LATENT_FRAMES} (600 s at 25 Hz), "
                                     f"got {encoded.frames}")
    if encoded.channels <= 0:
        raise InvalidArgument(field, f"channels must be positive, got {encoded.channels}")
    expected = encoded.frames * encoded.channels * 4
    if len(encoded.latents_f32le) != expected:
        raise InvalidArgument(
            field,
            f"latents must hold frames*channels float32 values ({expected} bytes), "
            f"got {len(encoded.latents_f32le)} bytes",
        )
    array = np.frombuffer(encoded.latents_f32le, dtype="<f4").reshape(encoded.frames, encoded.channels)
    finite = np.isfinite(array)
    if not finite.all():
        frame = int(np.argwhere(~finite)[0][0])
        raise InvalidArgument(field, f"latents must be finite float32 values, got NaN or infinity at frame {frame}")
    return torch.from_numpy(array.copy())


def engine_request(request: dit_pb2.SynthesizeRequest, max_batch: int, codebook_size: int) -> SynthesisRequest:
    """SynthesizeRequest -> SynthesisRequest, validating on the way."""
    params = params_from_proto(request.params)
    validate_params(params)
    seeds = item_seeds(list(request.seeds), max_batch)
    codes: list[list[int]] | None = None
    if request.audio_codes:
        by_item = {ic.item_index: list(ic.codes) for ic in request.audio_codes}
        if sorted(by_item) != list(range(len(seeds))):
            raise InvalidArgument("audio_codes", f"needs codes for items 0-{len(seeds) - 1}, got {sorted(by_item)}")
        codes = [clamp_codes(by_item[i], codebook_size) for i in range(len(seeds))]
    elif params.audio_codes.strip():
        codes = [parse_audio_codes(params.audio_codes, codebook_size)] * len(seeds)
    src_latents = _latents_from_proto(request.src_audio, "src_audio")
    if params.task_type in c.TASKS_NEEDING_SOURCE and src_latents is None and codes is None:
        raise InvalidArgument("src_audio", f"task_type={params.task_type} needs source audio latents (EncodeAudio)")
    return fields_from(
        SynthesisRequest, params, seeds=seeds, audio_codes=codes, src_audio=None, reference_audio=None,
        src_latents=src_latents, reference_latents=_latents_from_proto(request.reference_audio, "reference_audio"),
        output=fields_from(OutputOptions, params),  # latent shift/rescale, normalisation, fades
        sampling=fields_from(SamplingOptions, params),  # the engine checks the turbo models' timesteps limit
        edit=fields_from(EditOptions, params),  # retake, repaint strength, chunk mask, cover noise, global caption
    )


def waveform_bytes(request: dit_pb2.SynthesizeRequest, max_bytes: int) -> bytes | None:
    """SynthesizeRequest.src_waveform's bytes (the repaint splice's source file), or None when it is unset."""
    if not request.HasField("src_waveform"):
        return None
    upload = request.src_waveform
    check_enum("src_waveform.format", gen_pb2.AudioFormat, upload.format)  # the bytes decide; a made-up one fails
    if upload.WhichOneof("source") == "server_path":
        raise InvalidArgument("src_waveform", "allowed the file's bytes (data), got a server_path")
    if not upload.data:
        raise InvalidArgument("src_waveform", f"allowed 1-{max_bytes} bytes of audio, got none")
    if len(upload.data) > max_bytes:
        raise InvalidArgument("src_waveform", f"allowed at most {max_bytes} bytes, got {len(upload.data)}")
    return upload.data


def decode_waveform(data: bytes, field: str = "src_waveform", source: bool = True) -> torch.Tensor:
    """A file's bytes as the model's audio [2, n] at 48 kHz; its header is checked before it is decoded (at most
    600 s, 8-192 kHz, 1-8 channels; a source at least one latent frame long)."""
    audio, rate = decode_upload(data, field, source=source)
    return torch.from_numpy(to_model_audio(audio, rate))


class DiffusionServicer(dit_pb2_grpc.DiffusionServiceServicer):
    def __init__(
        self, admission: Admission, metrics: DiTMetrics, max_batch: int = 8, max_upload_bytes: int = 256 * 1024 * 1024,
        model_name: str = "",
    ):
        """``model_name``: the variant folder it serves, as ListModels reports it."""
        self.engine: DiTEngine | None = None
        self.model_name = model_name
        self.admission = admission
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_upload_bytes = max_upload_bytes
        self.executor = WorkerPool(admission.max_running, "dit-worker")
        self.audio_executor = WorkerPool(2, "dit-audio")  # upload decoding and resampling, before a slot

    def _ready_engine(self) -> DiTEngine:
        if self.engine is None:
            raise Unavailable("the DiT model is still loading; retry shortly")
        return self.engine

    async def Synthesize(self, request, context) -> AsyncIterator[dit_pb2.SynthesizeResponse]:
        def open_stream():
            # A request routed here for another model is refused naming both, loading or not (NOT_FOUND).
            served_model("dit_model", request.params.dit_model, [self.model_name] if self.model_name else [], "DiT")
            engine = self._ready_engine()
            encoding = stream_encoding_number(request.stream_encoding)  # unknown numbers: INVALID_ARGUMENT
            req = engine_request(request, self.max_batch, engine.codebook_size)
            engine.validate(req)
            waveform = waveform_bytes(request, self.max_upload_bytes)
            chunk_frames = request.chunk_frames or DEFAULT_CHUNK_FRAMES
            if not 1 <= chunk_frames <= MAX_CHUNK_FRAMES:
                raise InvalidArgument("chunk_frames", f"must be between 1 and {MAX_CHUNK_FRAMES}, got {chunk_frames}")
            self.metrics.batch_size.labels("dit").observe(len(req.seeds))
            return self._stream(engine, req, chunk_frames, encoding, waveform)

        headway = Headway("Synthesize", request.request_id, len(request.seeds), "item_done")
        async for response in guarded_stream(
            context, self.metrics, "Synthesize", self.admission, open_stream, headway=headway,
            is_final=lambda r: r.HasField("time_costs"), service=SERVICE_NAME,
        ):
            yield response

    async def _stream(
        self, engine: DiTEngine, req: SynthesisRequest, chunk_frames: int, encoding: int, waveform: bytes | None
    ):
        start = time.perf_counter()
        if waveform is not None:  # decoded off the event loop (an mp3 of minutes takes a while)
            req.src_waveform = await asyncio.to_thread(decode_waveform, waveform)
        last_step = start
        first_audio = True
        caption_cut = engine.caption_cut(req)
        if caption_cut:  # the orchestrator relays it in GenerationDone.warnings
            yield dit_pb2.SynthesizeResponse(warning=gen_pb2.Warning(field="caption", message=caption_cut))
        # Options that run differently from how they read (heun under sde, turbo timesteps) or are not read.
        notes = sampling_notes(req.sampling, engine.is_turbo and not engine.flow_edits(req))
        notes += edit_notes(req.edit, req.task_type, engine.config.is_lego_sft)
        notes += flow_edit_notes(req.edit, req.task_type, req.sampling, req.use_adg)
        for field, message in notes:
            yield dit_pb2.SynthesizeResponse(warning=gen_pb2.Warning(field=field, message=message))
        async for event in stream_from_thread(lambda stop: engine.synthesize(req, stop), self.executor):
            if isinstance(event, StepProgress):
                now = time.perf_counter()
                self.metrics.step_seconds.labels("dit").observe(now - last_step)
                last_step = now
                yield dit_pb2.SynthesizeResponse(
                    progress=gen_pb2.Progress(
                        stage=gen_pb2.STAGE_DIFFUSION,
                        step=event.step,
                        total_steps=event.total,
                        fraction=event.step / max(event.total, 1),
                        message=f"diffusion step {event.step}/{event.total}",
                    )
                )
            elif isinstance(event, AudioWindow):
                if first_audio:
                    self.metrics.first_audio_seconds.labels("dit").observe(time.perf_counter() - start)
                    first_audio = False
                for response in await _encoded_chunks(event, chunk_frames, encoding):
                    yield response
            elif isinstance(event, ItemDone):
                self.metrics.audio_seconds.labels("dit").inc(event.num_samples / c.SAMPLE_RATE)
                yield dit_pb2.SynthesizeResponse(
                    item_done=dit_pb2.ItemDone(
                        item_index=event.item,
                        seed=event.seed,
                        num_frames=event.num_samples,
                        gain=event.gain,
                        peak=event.peak,
                        rms=event.rms,
                    )
                )
            elif isinstance(event, TimeCosts):
                decode = event.values.get("vae_decode_time_cost")
                if decode is not None:
                    self.metrics.decode_seconds.labels("dit").observe(decode)
                yield dit_pb2.SynthesizeResponse(time_costs=gen_pb2.TimeCosts(seconds=event.values))

    async def EncodeAudio(self, request_iterator, context) -> dit_pb2.EncodeAudioResponse:
        headway = Headway("EncodeAudio", stage="while reading the upload")
        upload: dict = {"purpose": dit_pb2.ENCODE_PURPOSE_SOURCE, "seed": 0}

        async def prepare() -> torch.Tensor:
            self._ready_engine()
            data = bytearray()
            async for part in request_iterator:
                check_enum("format", gen_pb2.AudioFormat, part.format)  # the bytes decide; a made-up one fails
                if part.purpose:
                    upload["purpose"] = check_enum("purpose", dit_pb2.EncodePurpose, part.purpose)
                upload["seed"] = part.seed or upload["seed"]
                data += part.data
                if len(data) > self.max_upload_bytes:
                    raise InvalidArgument("data", f"upload must be at most {self.max_upload_bytes} bytes")
            if not data:
                raise InvalidArgument("data", "no audio bytes were sent")
            source = upload["purpose"] != dit_pb2.ENCODE_PURPOSE_REFERENCE
            payload = bytes(data)
            del data
            headway.stage = f"while decoding {len(payload)} bytes of audio"
            # Decoding and resampling a long upload takes seconds: on the event loop it would stall every call,
            # health checks included. decode_waveform checks the header first (length, rate, channels) and
            # stops past 600 s whatever the header said.
            return await run_in_thread(
                lambda should_stop: decode_waveform(payload, "data", source=source), self.audio_executor
            )

        async def encode(wav: torch.Tensor) -> dit_pb2.EncodeAudioResponse:
            engine = self._ready_engine()
            headway.stage = f"while VAE encoding {wav.shape[1] / c.SAMPLE_RATE:.1f} s of audio"
            reference = upload["purpose"] == dit_pb2.ENCODE_PURPOSE_REFERENCE
            latents, codes = await run_in_thread(
                lambda should_stop: _encode(engine, wav, reference, upload["seed"], should_stop), self.executor
            )
            return dit_pb2.EncodeAudioResponse(
                encoded=gen_pb2.EncodedAudio(
                    frames=latents.shape[0],
                    channels=latents.shape[1],
                    latents_f32le=latents.numpy().astype("<f4").tobytes(),
                    codes=codes,
                    duration_s=wav.shape[1] / c.SAMPLE_RATE,
                    num_samples=wav.shape[1],
                )
            )

        return await guarded_call(context, self.metrics, self.admission, headway, prepare, encode,
                                 service=SERVICE_NAME)

    def close_work(self, timeout: float) -> bool:
        """Shutdown: take no more work and wait (up to ``timeout`` s) for the model threads, batcher included."""
        deadline = time.monotonic() + timeout
        # The batcher first: its running forward stops at the next layer and waiting callers fail at once.
        finished = self.engine is None or self.engine.batcher.close(timeout)
        for pool in (self.executor, self.audio_executor):
            finished = pool.close(deadline - time.monotonic()) and finished
        return finished

    async def ListModels(self, request, context) -> gen_pb2.ListModelsResponse:
        """The model this replica serves (``loaded`` false while it loads), then its adapters (once loaded)."""
        models = [dit_model_info(self.model_name, self.engine, self.max_batch)]
        if self.engine is not None and self.engine.adapters is not None:
            # Reads adapter folders' headers (cached while unchanged): off the event loop.
            models += await asyncio.to_thread(adapter_model_infos, self.model_name, self.engine.adapters)
        return gen_pb2.ListModelsResponse(models=models)


def _encode(
    engine: DiTEngine, wav: torch.Tensor, reference: bool, seed: int, should_stop: Callable[[], bool]
) -> tuple[torch.Tensor, list[int]]:
    with stage("dit.encode_audio", reference=reference, samples=wav.shape[-1]):
        if reference:
            return engine.encode_reference(wav, seed, should_stop), []
        return engine.encode_audio(wav, should_stop)


def _chunk_response(window: AudioWindow, offset: int, piece: np.ndarray, encoding: int) -> dit_pb2.SynthesizeResponse:
    chunk = audio_chunk(window.item, window.start_sample + offset, piece, encoding)
    return dit_pb2.SynthesizeResponse(audio_chunk=chunk)


def _pieces(window: AudioWindow, chunk_frames: int) -> list[tuple[int, np.ndarray]]:
    pcm = window.pcm.numpy()
    return [(offset, pcm[:, offset : offset + chunk_frames]) for offset in range(0, pcm.shape[1], chunk_frames)]


def _chunks(window: AudioWindow, chunk_frames: int, encoding: int) -> Iterator[dit_pb2.SynthesizeResponse]:
    """A decoded window as AudioChunks of at most ``chunk_frames``, each encoded once, here, per the request."""
    for offset, piece in _pieces(window, chunk_frames):
        yield _chunk_response(window, offset, piece, encoding)


async def _encoded_chunks(
    window: AudioWindow, chunk_frames: int, encoding: int
) -> list[dit_pb2.SynthesizeResponse]:
    """:func:`_chunks`, in order. FLAC and Opus cost CPU (Opus 0.1-0.3 s per default chunk, bench/wire.py): their
    chunks encode in parallel on worker threads (libsndfile releases the GIL), keeping the event loop free."""
    if encoding == gen_pb2.STREAM_ENCODING_PCM_F32LE:
        return list(_chunks(window, chunk_frames, encoding))
    jobs = (asyncio.to_thread(_chunk_response, window, offset, piece, encoding)
            for offset, piece in _pieces(window, chunk_frames))
    return list(await asyncio.gather(*jobs))


def build_parser() -> argparse.ArgumentParser:
    from acestep_serving.flags import add_flag, add_model_flags, add_server_flags

    parser = argparse.ArgumentParser(prog="acestep serve dit", description="ACE-Step 1.5 DiT + VAE gRPC service")
    add_server_flags(parser, default_port=50052, max_concurrency=8)
    add_model_flags(parser, default_model=c.DEFAULT_DIT_MODEL)
    add_flag(parser, "batch-wait-ms", 5.0, "how long a DiT/VAE forward waits for compatible forwards of other "
             "running requests to merge with; it starts at once when every running request is waiting")
    add_flag(parser, "max-batch-items", 16, "most rows (items, CFG halves counted) in one merged forward; "
             "a single larger request still runs")
    add_flag(parser, "adapters", "", "folder of LoRA/LoKr adapters of this model, one subfolder each (PEFT "
             "adapter_config.json + adapter_model.safetensors, or LyCORIS lokr_weights.safetensors); its name is "
             "what requests put in GenerationParams.adapter; empty = none")
    add_flag(parser, "adapter-cache-mb", float(DEFAULT_ADAPTER_CACHE_MB), "memory for loaded adapters, MiB (least "
             "recently used evicted first); a larger adapter is refused with FAILED_PRECONDITION")
    return parser


async def start(args: argparse.Namespace, announce=print):
    """Start listening at once (health NOT_SERVING), load the model, then go SERVING."""
    from acestep_serving.runner import start_model_server

    metrics = DiTMetrics()
    admission = metrics.admission(args.max_concurrency, args.queue_size)
    # Built before loading so bad values fail at once; each admitted request runs in its own executor thread
    # and the batcher merges their forwards.
    batcher = ForwardBatcher(args.batch_wait_ms, args.max_batch_items, observer=metrics.observe_batch)
    servicer = DiffusionServicer(
        admission, metrics, max_batch=args.max_batch, max_upload_bytes=int(args.max_message_mb * 1024 * 1024),
        model_name=args.model,
    )

    def load(device: str, dtype: torch.dtype) -> None:
        servicer.engine = DiTEngine.load(
            args.checkpoints, variant=args.model, device=device, dtype=dtype, batcher=batcher,
            adapters=args.adapters or None, adapter_cache_mb=args.adapter_cache_mb,
        )

    return await start_model_server(
        args,
        "dit",
        SERVICE_NAME,
        dit_pb2_grpc.add_DiffusionServiceServicer_to_server,
        servicer,
        metrics,
        load,
        announce,
    )


def main(argv: list[str] | None = None) -> None:
    from acestep_serving.runner import run_server_main

    run_server_main(build_parser(), start, argv)
