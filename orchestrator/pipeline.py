"""One generate_music call over the LM and DiT services, as a stream of GenerateMusicResponse.

validate -> resolve seeds -> encode uploads on the DiT -> LM.Plan (when the request needs it)
-> DiT.Synthesize, forwarding progress and audio as they arrive. Any failure raises; the server
turns it into a gRPC status, so a half result is never reported as success.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from acestep_client import constants as c
from acestep_client.audio_io import detect_format
from acestep_client.convert import config_from_proto, params_from_proto, params_to_proto
from acestep_client.errors import FailedPrecondition, InvalidArgument
from acestep_client.keys import audio_key
from acestep_client.proto.acestep.v1 import dit_pb2, lm_pb2, orchestrator_pb2
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.seeds import resolve_seeds
from acestep_client.types import GenerationParams
from acestep_client.validation import (
    normalize_keyscale,
    normalize_timesignature,
    validate_config,
    validate_params,
)
from orchestrator.planning import dit_conditions, lm_plan, sanitize_metadata, time_costs, with_cot
from orchestrator.replicas import ReplicaPool

UPLOAD_CHUNK_BYTES = 1 << 20
SILENCE_LEVEL = 1e-5
# Progress fractions: where each stage sits in the whole request.
_SPAN = {"encode": (0.0, 0.05), "lm1": (0.05, 0.15), "lm2": (0.15, 0.45), "dit": (0.45, 0.9), "decode": (0.9, 1.0)}
_FORMATS = {"flac": gen_pb2.AUDIO_FORMAT_FLAC, "wav": gen_pb2.AUDIO_FORMAT_WAV, "mp3": gen_pb2.AUDIO_FORMAT_MP3}


@dataclass
class Backends:
    dit: ReplicaPool
    lm: ReplicaPool | None = None
    audio_root: Path | None = None  # server-side paths are honoured only below this folder


@dataclass
class _Run:
    started: float = field(default_factory=time.perf_counter)
    lm_costs: dict[str, float] = field(default_factory=dict)
    dit_costs: dict[str, float] = field(default_factory=dict)
    first_audio: float | None = None


def _progress(stage: int, span: str, within: float, message: str, step: int = 0, total: int = 0):
    low, high = _SPAN[span]
    fraction = low + (high - low) * min(max(within, 0.0), 1.0)
    return orchestrator_pb2.GenerateMusicResponse(progress=gen_pb2.Progress(
        stage=stage, fraction=fraction, step=step, total_steps=total, message=message))


def _read_upload(upload: gen_pb2.AudioInput, field_name: str, root: Path | None) -> bytes:
    which = upload.WhichOneof("source")
    if which == "data":
        if not upload.data:
            raise InvalidArgument(field_name, "audio upload is empty")
        return upload.data
    if which == "server_path":
        if root is None:
            raise InvalidArgument(field_name, "server-side paths are disabled on this server; upload the bytes")
        path = (root / upload.server_path).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            raise InvalidArgument(field_name, f"server_path must name a file under the allowed root, got "
                                              f"{upload.server_path!r}")
        return path.read_bytes()
    raise InvalidArgument(field_name, "the request names an audio file but carries no AudioInput for it")


async def _encode(backends: Backends, data: bytes, filename: str, purpose: int, seed: int,
                  timeout: Callable[[], float | None]) -> gen_pb2.EncodedAudio:
    fmt = _FORMATS[detect_format(data)]

    async def requests():
        for offset in range(0, max(len(data), 1), UPLOAD_CHUNK_BYTES):
            yield dit_pb2.EncodeAudioRequest(format=fmt, filename=filename, purpose=purpose, seed=seed,
                                             data=data[offset: offset + UPLOAD_CHUNK_BYTES])

    response = await backends.dit.unary_from_stream("EncodeAudio", requests, timeout=timeout())
    return response.encoded


async def generate_events(
    request: orchestrator_pb2.GenerateMusicRequest,
    backends: Backends,
    timeout: Callable[[], float | None] = lambda: None,
    on_first_audio: Callable[[float], None] = lambda seconds: None,
) -> AsyncIterator[orchestrator_pb2.GenerateMusicResponse]:
    run = _Run()
    params = params_from_proto(request.params)
    config = config_from_proto(request.config)
    validate_params(params)
    validate_config(config)
    # What the services see: spellings the spec allows ('Am', '6/8') in the models' canonical form.
    sent = dataclasses.replace(params, keyscale=normalize_keyscale(params.keyscale),
                               timesignature=normalize_timesignature(params.timesignature))
    plan = lm_plan(params)
    if plan.needed and backends.lm is None:
        raise FailedPrecondition(
            f"this request needs the LM ({plan.reason}) but the deployment has no LM service; set thinking=False "
            "and use_cot_metas=False (or give audio_codes), or configure --lm"
        )
    src_bytes = _read_upload(request.src_audio, "src_audio", backends.audio_root) if params.src_audio else None
    ref_bytes = (_read_upload(request.reference_audio, "reference_audio", backends.audio_root)
                 if params.reference_audio else None)
    seeds = resolve_seeds(params, config)

    synth = dit_pb2.SynthesizeRequest(seeds=seeds, request_id=request.request_id)
    if src_bytes is not None:
        yield _progress(gen_pb2.STAGE_ENCODE, "encode", 0.0, "encoding source audio")
        synth.src_audio.CopyFrom(await _encode(backends, src_bytes, params.src_audio, dit_pb2.ENCODE_PURPOSE_SOURCE,
                                               seeds[0], timeout))
    if ref_bytes is not None:
        yield _progress(gen_pb2.STAGE_ENCODE, "encode", 0.5, "encoding reference audio")
        synth.reference_audio.CopyFrom(await _encode(backends, ref_bytes, params.reference_audio,
                                                     dit_pb2.ENCODE_PURPOSE_REFERENCE, seeds[0], timeout))

    metadata_by_item: dict[int, dict] = {}
    codes_by_item: dict[int, list[int]] = {}
    if plan.needed:
        async for event in _plan(backends.lm, sent, config, seeds, plan.generate_codes, request.request_id,
                                 timeout, metadata_by_item, codes_by_item, run):
            yield event
        if plan.generate_codes and sorted(codes_by_item) != list(range(len(seeds))):
            raise FailedPrecondition(f"the LM returned codes for items {sorted(codes_by_item)}, "
                                     f"expected 0-{len(seeds) - 1}")
    first_metadata = metadata_by_item.get(0, {})

    conditions = dit_conditions(sent, first_metadata)
    if codes_by_item:
        conditions.audio_codes = ""
        synth.audio_codes.extend(gen_pb2.ItemCodes(item_index=i, codes=codes) for i, codes in codes_by_item.items())
    synth.params.CopyFrom(params_to_proto(conditions))

    async for response in backends.dit.stream("Synthesize", synth, timeout=timeout()):
        kind = response.WhichOneof("event")
        if kind == "progress":
            p = response.progress
            yield _progress(gen_pb2.STAGE_DIFFUSION, "dit", p.fraction, p.message, p.step, p.total_steps)
        elif kind == "audio_chunk":
            if run.first_audio is None:
                run.first_audio = time.perf_counter() - run.started
                on_first_audio(run.first_audio)
            yield orchestrator_pb2.GenerateMusicResponse(audio_chunk=response.audio_chunk)
        elif kind == "item_done":
            done = response.item_done
            yield _progress(gen_pb2.STAGE_DECODE, "decode", (done.item_index + 1) / len(seeds),
                            f"item {done.item_index + 1}/{len(seeds)} decoded")
            yield orchestrator_pb2.GenerateMusicResponse(item_result=_item_result(
                params, metadata_by_item.get(done.item_index, first_metadata),
                codes_by_item.get(done.item_index), seeds[done.item_index], done))
        elif kind == "time_costs":
            run.dit_costs.update(response.time_costs.seconds)

    costs = time_costs(run.lm_costs, run.dit_costs, time.perf_counter() - run.started)
    yield orchestrator_pb2.GenerateMusicResponse(time_costs=gen_pb2.TimeCosts(seconds=costs))
    yield orchestrator_pb2.GenerateMusicResponse(done=orchestrator_pb2.GenerationDone(
        status_message=f"generated {len(seeds)} item(s) in {costs['pipeline_total_time']:.2f} s",
        num_items=len(seeds)))


async def _plan(lm: ReplicaPool, params: GenerationParams, config, seeds: list[int], generate_codes: bool,
                request_id: str, timeout, metadata_by_item: dict, codes_by_item: dict, run: _Run):
    plan_request = lm_pb2.PlanRequest(
        params=params_to_proto(params), seeds=seeds, lm_batch_chunk_size=config.lm_batch_chunk_size,
        constrained_decoding_debug=config.constrained_decoding_debug, generate_codes=generate_codes,
        request_id=request_id)
    yield _progress(gen_pb2.STAGE_LM_PHASE1, "lm1", 0.0, "LM: planning")
    async for response in lm.stream("Plan", plan_request, timeout=timeout()):
        kind = response.WhichOneof("event")
        if kind == "progress":
            p = response.progress
            span = "lm2" if p.stage == gen_pb2.STAGE_LM_PHASE2 else "lm1"
            yield _progress(p.stage, span, p.fraction, p.message, p.step, p.total_steps)
        elif kind == "metadata":
            meta = response.metadata
            values = sanitize_metadata(_metadata_dict(meta.metadata))
            metadata_by_item[meta.item_index] = values
            if meta.item_index == 0:
                yield orchestrator_pb2.GenerateMusicResponse(lm_metadata=meta.metadata)
        elif kind == "codes":
            codes_by_item[response.codes.item_index] = list(response.codes.codes)
        elif kind == "time_costs":
            run.lm_costs.update(response.time_costs.seconds)


def _metadata_dict(meta: gen_pb2.LmMetadata) -> dict:
    values = {"caption": meta.caption, "keyscale": meta.keyscale, "language": meta.language,
              "timesignature": meta.timesignature}
    if meta.HasField("bpm"):
        values["bpm"] = meta.bpm
    if meta.HasField("duration"):
        values["duration"] = meta.duration
    return values


def _item_result(params: GenerationParams, metadata: dict, codes: list[int] | None, seed: int,
                 done: dit_pb2.ItemDone) -> orchestrator_pb2.ItemResult:
    final = with_cot(params, metadata)
    final = dataclasses.replace(final, seed=seed)
    if codes is not None:
        final.audio_codes = "".join(f"<|audio_code_{code}|>" for code in codes)
    return orchestrator_pb2.ItemResult(
        item_index=done.item_index, seed=seed, key=audio_key(final.to_dict()), params=params_to_proto(final),
        num_frames=done.num_frames, sample_rate_hz=c.SAMPLE_RATE, silent=_silent(done), gain=done.gain)


def _silent(done: dit_pb2.ItemDone) -> bool:
    """The reference's check on the final audio: RMS and peak both at or below 1e-5."""
    return done.rms * done.gain <= SILENCE_LEVEL and done.peak * done.gain <= SILENCE_LEVEL
