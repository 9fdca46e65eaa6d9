"""One generate_music call over the LM and DiT services, as a stream of GenerateMusicResponse.

prepare (the request alone, seeds resolved: no backend call, so the server runs it before taking a
queue slot) -> route: the replicas serving the request's DiT (and, when it needs the LM, LM) model, checked
against what they report (ListModels; orchestrator/routing.py) -> encode uploads on the DiT
-> LM.Plan (when the request needs it) -> DiT.Synthesize, forwarding progress, every item's LM metadata
and audio as they arrive. Everything a deployment can check is checked before any model work. A
replica lost mid-plan is replaced (the plan is deterministic given the seeds); one lost mid-synthesis
is replaced while no audio has reached the client, else the call ends UNAVAILABLE naming it. Any
failure raises; the server turns it into a gRPC status, so a half result is never reported as success.
What the services did on their own (a caption cut, seeds ignored) ends in GenerationDone.warnings.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from acestep_client import constants as c
from acestep_client.audio_io import detect_format
from acestep_client.convert import config_from_proto, params_from_proto, params_to_proto
from acestep_client.errors import FailedPrecondition
from acestep_client.keys import audio_key
from acestep_client.proto.acestep.v1 import dit_pb2, lm_pb2, orchestrator_pb2
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.seeds import resolve_seeds
from acestep_client.types import GenerationConfig, GenerationParams
from acestep_client.validation import (
    normalize_keyscale,
    normalize_timesignature,
    validate_config,
    validate_params,
)
from acestep_client.wire_audio import stream_encoding_number
from acestep_serving.errors import Unavailable
from orchestrator.capabilities import ModelCatalog, check_model
from orchestrator.notices import Notices, seed_warnings
from orchestrator.planning import LmPlan, dit_conditions, lm_plan, sanitize_metadata, time_costs, with_cot
from orchestrator.replicas import ReplicaLost, ReplicaPool, Restarted
from orchestrator.routing import Choice, Router
from orchestrator.uploads import check_repaint_length, name_uploads, read_upload

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
    max_message_bytes: int = 64 * 1024 * 1024  # the pools' gRPC message limit (--max-message-mb)
    dit_pins: dict[str, str] = field(default_factory=dict)  # target -> the model ``--dit name=ADDR`` pins it to
    lm_pins: dict[str, str] = field(default_factory=dict)
    # What the pools' replicas serve (ListModels), fetched on first need and cached, and the routes over it.
    dit_models: ModelCatalog = field(init=False)
    lm_models: ModelCatalog | None = field(init=False)
    dit_router: Router = field(init=False)
    lm_router: Router | None = field(init=False)

    def __post_init__(self) -> None:
        self.dit_models = ModelCatalog(self.dit, pins=self.dit_pins)
        self.lm_models = ModelCatalog(self.lm, pins=self.lm_pins) if self.lm is not None else None
        self.dit_router = Router(self.dit_models, gen_pb2.MODEL_KIND_DIT)
        self.lm_router = Router(self.lm_models, gen_pb2.MODEL_KIND_LM) if self.lm_models is not None else None


@dataclass
class _Run:
    started: float = field(default_factory=time.perf_counter)
    lm_costs: dict[str, float] = field(default_factory=dict)
    dit_costs: dict[str, float] = field(default_factory=dict)
    first_audio: float | None = None
    audio_chunks: int = 0
    items_done: int = 0
    notices: Notices = field(default_factory=Notices)


def _progress(stage: int, span: str, within: float, message: str, step: int = 0, total: int = 0):
    low, high = _SPAN[span]
    fraction = low + (high - low) * min(max(within, 0.0), 1.0)
    return orchestrator_pb2.GenerateMusicResponse(progress=gen_pb2.Progress(
        stage=stage, fraction=fraction, step=step, total_steps=total, message=message))


async def _encode(backends: Backends, data: bytes, filename: str, purpose: int, seed: int,
                  timeout: Callable[[], float | None], targets: tuple[str, ...]) -> gen_pb2.EncodedAudio:
    fmt = _FORMATS[detect_format(data)]

    async def requests():
        for offset in range(0, max(len(data), 1), UPLOAD_CHUNK_BYTES):
            yield dit_pb2.EncodeAudioRequest(format=fmt, filename=filename, purpose=purpose, seed=seed,
                                             data=data[offset: offset + UPLOAD_CHUNK_BYTES])

    try:
        response = await backends.dit.unary_from_stream("EncodeAudio", requests, timeout=timeout, targets=targets)
    except grpc.aio.AioRpcError:
        backends.dit_models.invalidate()
        raise
    return response.encoded


@dataclass
class Prepared:
    """A generate_music request that passed every check needing no backend call, with what they produced."""

    params: GenerationParams  # as the caller gave them (uploads named)
    config: GenerationConfig
    sent: GenerationParams  # what the services see
    plan: LmPlan
    seeds: list[int]
    synth: dit_pb2.SynthesizeRequest  # seeds, request id and stream encoding so far
    src_bytes: bytes | None
    ref_bytes: bytes | None
    notices: Notices


def prepare_generation(request: orchestrator_pb2.GenerateMusicRequest, backends: Backends) -> Prepared:
    """Everything checkable without calling a backend: params, config, stream encoding, the LM's presence, the
    uploads (bytes and format). The server runs it before taking a queue slot, so bad input is refused as such
    even when the server is full."""
    params = name_uploads(request, params_from_proto(request.params))
    config = config_from_proto(request.config)
    validate_params(params)
    validate_config(config)
    # Chunks are encoded once, on the DiT, and forwarded untouched (the silence check uses ItemDone peak/rms).
    stream_encoding = stream_encoding_number(request.stream_encoding)  # unknown numbers: INVALID_ARGUMENT
    # What the services see: spellings the spec allows ('Am', '6/8') in the models' canonical form.
    sent = dataclasses.replace(params, keyscale=normalize_keyscale(params.keyscale),
                               timesignature=normalize_timesignature(params.timesignature))
    plan = lm_plan(params)
    if plan.needed and backends.lm is None:
        raise FailedPrecondition(
            f"this request needs the LM ({plan.reason}) but the deployment has no LM service; set thinking=False "
            "and use_cot_metas=False (or give audio_codes), or configure --lm"
        )
    # Headers checked (length, rate, channels) before anything is encoded: acestep_client/audio_uploads.py.
    src_bytes = ref_bytes = None
    if params.src_audio:
        src_bytes, header = read_upload(request.src_audio, "src_audio", params.src_audio, backends.audio_root,
                                        backends.max_message_bytes)
        check_repaint_length(params, header)
    if params.reference_audio:
        ref_bytes, _ = read_upload(request.reference_audio, "reference_audio", params.reference_audio,
                                   backends.audio_root, backends.max_message_bytes)
    seeds = resolve_seeds(params, config)
    notices = Notices()
    notices.add(*seed_warnings(config))
    synth = dit_pb2.SynthesizeRequest(seeds=seeds, request_id=request.request_id, stream_encoding=stream_encoding)
    return Prepared(params, config, sent, plan, seeds, synth, src_bytes, ref_bytes, notices)


async def generate_events(
    request: orchestrator_pb2.GenerateMusicRequest | Prepared,
    backends: Backends,
    timeout: Callable[[], float | None] = lambda: None,
    on_first_audio: Callable[[float], None] = lambda seconds: None,
) -> AsyncIterator[orchestrator_pb2.GenerateMusicResponse]:
    """The request's events; ``request`` may come prepared (:func:`prepare_generation`), as the server does."""
    run = _Run()
    prep = request if isinstance(request, Prepared) else prepare_generation(request, backends)
    params, sent, plan, seeds, synth = prep.params, prep.sent, prep.plan, prep.seeds, prep.synth
    run.notices = prep.notices
    dit = await _route(backends.dit_router, params, prep.config.batch_size, params.dit_model, params.adapter)
    lm = None
    if plan.needed and backends.lm_router is not None:  # the LM is asked only when the plan needs it
        lm = await _route(backends.lm_router, params, prep.config.batch_size, params.lm_model)
    # The services get the chosen names: a replica serving another model refuses the request (NOT_FOUND).
    sent = dataclasses.replace(sent, dit_model=dit.name or sent.dit_model)
    if lm is not None:
        sent = dataclasses.replace(sent, lm_model=lm.name or sent.lm_model)

    if prep.src_bytes is not None:
        yield _progress(gen_pb2.STAGE_ENCODE, "encode", 0.0, "encoding source audio")
        synth.src_audio.CopyFrom(await _encode(backends, prep.src_bytes, params.src_audio,
                                               dit_pb2.ENCODE_PURPOSE_SOURCE, seeds[0], timeout, dit.targets))
        if params.task_type == "repaint" and params.repaint_mode != "aggressive":
            _add_splice_source(synth, prep.src_bytes, params.src_audio, backends.max_message_bytes, run.notices)
    if prep.ref_bytes is not None:
        yield _progress(gen_pb2.STAGE_ENCODE, "encode", 0.5, "encoding reference audio")
        synth.reference_audio.CopyFrom(await _encode(backends, prep.ref_bytes, params.reference_audio,
                                                     dit_pb2.ENCODE_PURPOSE_REFERENCE, seeds[0], timeout,
                                                     dit.targets))

    metadata_by_item: dict[int, dict] = {}
    codes_by_item: dict[int, list[int]] = {}
    if plan.needed:
        assert lm is not None  # prepare_generation refused a plan without an LM
        async for event in _plan(backends, lm.targets, sent, prep.config, seeds, plan.generate_codes,
                                 synth.request_id, timeout, metadata_by_item, codes_by_item, run):
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

    async for response in _dit_stream(backends, dit.targets, synth, timeout, run):
        if isinstance(response, Restarted):
            yield _progress(gen_pb2.STAGE_DIFFUSION, "dit", 0.0, f"DiT replica {response.lost} was lost before "
                            "any audio; synthesizing again on another replica")
            continue
        kind = response.WhichOneof("event")
        if kind == "progress":
            p = response.progress
            yield _progress(gen_pb2.STAGE_DIFFUSION, "dit", p.fraction, p.message, p.step, p.total_steps)
        elif kind == "warning":
            run.notices.add(response.warning)
        elif kind == "audio_chunk":
            run.audio_chunks += 1
            if run.first_audio is None:
                run.first_audio = time.perf_counter() - run.started
                on_first_audio(run.first_audio)
            yield orchestrator_pb2.GenerateMusicResponse(audio_chunk=response.audio_chunk)
        elif kind == "item_done":
            done = response.item_done
            run.items_done += 1
            yield _progress(gen_pb2.STAGE_DECODE, "decode", (done.item_index + 1) / len(seeds),
                            f"item {done.item_index + 1}/{len(seeds)} decoded")
            yield orchestrator_pb2.GenerateMusicResponse(item_result=_item_result(
                params, metadata_by_item.get(done.item_index, first_metadata),
                codes_by_item.get(done.item_index), seeds[done.item_index], done))
        elif kind == "time_costs":
            run.dit_costs.update(response.time_costs.seconds)

    costs = time_costs(run.lm_costs, run.dit_costs, time.perf_counter() - run.started)
    yield orchestrator_pb2.GenerateMusicResponse(time_costs=gen_pb2.TimeCosts(seconds=costs))
    yield orchestrator_pb2.GenerateMusicResponse(done=run.notices.done(
        f"generated {len(seeds)} item(s) in {costs['pipeline_total_time']:.2f} s", len(seeds)))


def _add_splice_source(synth: dit_pb2.SynthesizeRequest, data: bytes, filename: str, max_message_bytes: int,
                       notices: Notices) -> None:
    """The repaint's source file for the DiT's waveform splice (dit_service/waveform_splice.py), when it fits in
    half a message (the rest of the request, its latents above all, needs the other half); else a warning."""
    limit = max_message_bytes // 2
    if len(data) > limit:
        notices.add(gen_pb2.Warning(field="repaint_wav_crossfade_sec", message=(
            f"the waveform splice was skipped: the source file ({len(data)} bytes) is over the {limit} bytes it may "
            "take of a DiT request (half of --max-message-mb), so outside the span the audio is the VAE's decode of "
            "the source rather than its own samples; upload a smaller file (flac, mp3) to keep them")))
        return
    synth.src_waveform.CopyFrom(gen_pb2.AudioInput(data=data, format=_FORMATS[detect_format(data)], filename=filename))


async def _route(router: Router, params: GenerationParams, batch_size: int, requested: str,
                 adapter: str = "") -> Choice:
    """The replicas for the request's model, once it passed the checks against that model (NOT_FOUND for a name
    nobody serves, FAILED_PRECONDITION for a task it cannot run, INVALID_ARGUMENT beyond its limits)."""
    choice, inventory = await router.choose(requested, adapter)
    if choice.info is not None:
        check_model(params, batch_size, choice.info, inventory.infos())
    return choice


async def _dit_stream(backends: Backends, targets: tuple[str, ...], synth: dit_pb2.SynthesizeRequest, timeout,
                      run: _Run):
    """DiT.Synthesize on ``targets``, started over on another of them if one is lost before any audio reached the
    client; a failure makes the next request ask the replicas for their models again."""
    try:
        async for response in backends.dit.stream("Synthesize", synth, timeout=timeout,
                                                  restart=lambda: run.first_audio is None, targets=targets):
            yield response
    except ReplicaLost as lost:
        backends.dit_models.invalidate()
        raise Unavailable(
            f"the DiT replica {lost.target} was lost after streaming {run.audio_chunks} audio chunk(s) "
            f"({run.items_done}/{len(synth.seeds)} item(s) complete): {lost.details}; the audio already sent is "
            "incomplete, retry the request") from None
    except grpc.aio.AioRpcError:
        backends.dit_models.invalidate()
        raise


async def _plan(backends: Backends, targets: tuple[str, ...], params: GenerationParams, config: GenerationConfig,
                seeds: list[int], generate_codes: bool, request_id: str, timeout, metadata_by_item: dict,
                codes_by_item: dict, run: _Run):
    """LM.Plan on ``targets``, its progress and each item's metadata forwarded as they come; a failure makes the
    next request ask the LM replicas for their models again.

    A replica lost mid-plan is replaced and the plan runs again (it is deterministic given the seeds): metadata
    the client already has is not sent twice, and must come out the same, else the request fails UNAVAILABLE
    (the client would hold an item's metadata that its result contradicts).
    """
    plan_request = lm_pb2.PlanRequest(
        params=params_to_proto(params), seeds=seeds, lm_batch_chunk_size=config.lm_batch_chunk_size,
        constrained_decoding_debug=config.constrained_decoding_debug, generate_codes=generate_codes,
        request_id=request_id)
    yield _progress(gen_pb2.STAGE_LM_PHASE1, "lm1", 0.0, "LM: planning")
    try:
        async for event in _plan_events(backends.lm, targets, plan_request, timeout, metadata_by_item,
                                        codes_by_item, run):
            yield event
    except (grpc.aio.AioRpcError, ReplicaLost):
        if backends.lm_models is not None:
            backends.lm_models.invalidate()
        raise


async def _plan_events(lm: ReplicaPool | None, targets: tuple[str, ...], plan_request: lm_pb2.PlanRequest, timeout,
                       metadata_by_item: dict, codes_by_item: dict, run: _Run):
    assert lm is not None
    forwarded: dict[int, gen_pb2.LmMetadata] = {}
    lost = ""
    async for response in lm.stream("Plan", plan_request, timeout=timeout, restart=lambda: True, targets=targets):
        if isinstance(response, Restarted):
            lost = response.lost
            yield _progress(gen_pb2.STAGE_LM_PHASE1, "lm1", 0.0,
                            f"LM replica {lost} was lost mid-plan; planning again on another replica")
            continue
        kind = response.WhichOneof("event")
        if kind == "progress":
            p = response.progress
            span = "lm2" if p.stage == gen_pb2.STAGE_LM_PHASE2 else "lm1"
            yield _progress(p.stage, span, p.fraction, p.message, p.step, p.total_steps)
        elif kind == "metadata":
            meta = response.metadata
            values = sanitize_metadata(_metadata_dict(meta.metadata))
            metadata_by_item[meta.item_index] = values
            streamed = gen_pb2.LmMetadata()
            streamed.CopyFrom(meta.metadata)
            streamed.item_index = meta.item_index  # every item plans on its own: each one's, indexed
            before = forwarded.get(meta.item_index)
            if before is None:
                forwarded[meta.item_index] = streamed
                yield orchestrator_pb2.GenerateMusicResponse(lm_metadata=streamed)
            elif before != streamed:
                raise Unavailable(
                    f"the LM replica {lost} was lost mid-plan and the replica that planned again wrote other "
                    f"metadata for item {meta.item_index} than was already streamed (the replicas differ in model "
                    "or backend); retry the request")
        elif kind == "warning":
            run.notices.add(response.warning)
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
    """The reference's check: RMS and peak both at or below 1e-5, on the audio before peak normalisation
    (the streamed chunks under the clip guard 1 / max(peak, 1)); normalisation, on by default, would lift any
    noise floor to normalization_db."""
    guard = 1.0 / max(done.peak, 1.0)
    return done.rms * guard <= SILENCE_LEVEL and done.peak * guard <= SILENCE_LEVEL
