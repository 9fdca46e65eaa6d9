"""Task handling: turns a request into per-item latent lengths, context latents, chunk masks and prompts.

Tasks (model-dit.md §5): text2music, cover, repaint, lego, extract, complete. Audio inputs arrive
already decoded as [2, n] float32 at 48 kHz; VAE encoding is injected as ``encode`` so this module
stays free of model objects.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from acestep_client.constants import FLOW_EDIT_TASKS
from acestep_client.errors import InvalidArgument
from acestep_client.validation import parse_audio_codes as parse_code_tokens

from .prompts import COVER_INSTRUCTION, DEFAULT_INSTRUCTION, TASK_INSTRUCTIONS, is_cover_instruction

TASK_TYPES = ("text2music", "cover", "repaint", "lego", "extract", "complete", "cover-nofsq")
TURBO_TASK_TYPES = ("text2music", "cover", "repaint", "cover-nofsq")
# cover-nofsq always conditions on its source as raw latents (no FSQ round trip), like repaint's context.
SOURCE_TASKS = ("repaint", "lego", "extract", "complete", "cover-nofsq")
MIN_LATENT_FRAMES = 128
REFERENCE_SECONDS = 30
REFERENCE_SEGMENT_SECONDS = 10

EncodeFn = Callable[[torch.Tensor], torch.Tensor]  # [2, n] audio → [T, C] latents


def parse_audio_codes(text: str, codebook_size: int = 64000) -> list[int]:
    """``"<|audio_code_12|><|audio_code_7|>"`` → [12, 7]; ids are clamped into the codebook like the reference."""
    return clamp_codes(parse_code_tokens(text), codebook_size)


def clamp_codes(codes: list[int], codebook_size: int = 64000) -> list[int]:
    """The LM has 65,535 code tokens, the FSQ codebook 64,000 entries: the reference clamps, so do we."""
    return [min(code, codebook_size - 1) for code in codes]


@dataclass
class ItemPlan:
    frames: int
    instruction: str
    is_cover: bool
    duration_seconds: float
    code_ids: list[int] | None = None


@dataclass
class TaskPlan:
    """Everything the sampler needs besides the text conditions, already padded to ``length`` frames."""

    items: list[ItemPlan]
    length: int
    src_latents: torch.Tensor  # [B, L, C] context channels 0..C-1 (before cover hints)
    chunk_masks: torch.Tensor  # [B, L, C] 1 = generate
    is_cover: torch.Tensor  # [B] bool
    reference_latents: torch.Tensor  # [B, timbre_frames, C]
    code_ids: list[list[int] | None]
    repaint_clean_src: torch.Tensor | None = None  # [B, L, C] original source (repaint only)
    repaint_mask: torch.Tensor | None = None  # [B, L, 1] bool, True inside the repainted span
    edit_source: torch.Tensor | None = None  # [B, L, C] the source latents a flow edit starts from


def frames_for_duration(seconds: float, sample_rate: int, hop: int) -> int:
    samples = int(round(seconds, 1) * sample_rate)
    return samples // hop


def pad_with_silence(latents: torch.Tensor, length: int, silence: torch.Tensor) -> torch.Tensor:
    """[T, C] → [length, C]: crop, or right-pad with silence frames taken from silence frame 0 onwards."""
    if latents.shape[0] >= length:
        return latents[:length]
    pad = length - latents.shape[0]
    return torch.cat([latents, silence[:pad].to(latents.dtype)], dim=0)


def prepare_reference_audio(wav: torch.Tensor, sample_rate: int, rng: random.Random) -> torch.Tensor | None:
    """Reference timbre clip: repeat to ≥ 30 s, take one random 10 s segment from each third (seeded here)."""
    wav = wav.float().clamp(-1.0, 1.0)
    if float(wav.abs().max()) < 1e-6:
        return None
    target = REFERENCE_SECONDS * sample_rate
    if wav.shape[-1] < target:
        wav = wav.repeat(1, -(-target // wav.shape[-1]))
    segment = REFERENCE_SEGMENT_SECONDS * sample_rate
    third = wav.shape[-1] // 3
    pieces = []
    for part in range(3):
        start = part * third + rng.randint(0, max(0, third - segment))
        pieces.append(wav[:, start : start + segment])
    return torch.cat(pieces, dim=-1)


def task_instruction(task_type: str, requested: str, has_codes: bool) -> str:
    if requested:
        return requested
    if task_type == "text2music" and has_codes:
        return COVER_INSTRUCTION
    return TASK_INSTRUCTIONS[task_type]


def repaint_span(start_sec: float, end_sec: float, total_frames: int, frames_per_second: float) -> tuple[int, int]:
    start = int(start_sec * frames_per_second)
    end = int(end_sec * frames_per_second)
    start = min(max(start, 0), total_frames - 1)
    end = min(max(end, start + 1), total_frames)
    return start, end


def repaint_window(req, duration: float) -> tuple[float, float, float, float]:
    """(start, end, left pad, right pad) in seconds; outpainting pads silence around the source."""
    start = req.repainting_start
    end = duration if req.repainting_end is None or req.repainting_end < 0 else req.repainting_end
    return start, end, max(-start, 0.0), max(end - duration, 0.0)


@dataclass(frozen=True)
class PaddedSpan:
    """A repaint/lego span over its source: the silence outpainting adds before and after the source (whole units
    of the source: samples or latent frames) and the span in seconds on that padded time axis."""

    left: int
    right: int
    start: float
    end: float


def padded_span(req, length: int, rate: float) -> PaddedSpan:
    """The :class:`PaddedSpan` of ``req`` over a source ``length`` units long at ``rate`` units per second."""
    start, end, left, right = repaint_window(req, length / rate)
    left_units, right_units = round(left * rate), round(right * rate)
    shift = left_units / rate
    return PaddedSpan(left_units, right_units, start + shift, end + shift)


def _source_latents(req, task: str, encode: EncodeFn, silence: torch.Tensor, sample_rate: int, hop: int):
    """The source as latents [T, C] and, for repaint/lego, the region in (padded) seconds.

    Waveforms are padded before encoding, as the reference does. Pre-encoded latents (the gRPC path,
    where EncodeAudio ran earlier) are padded with silence latent frames instead: the latent the
    VAE gives silence, so the two agree up to the encoder's edge effects.
    """
    latents = getattr(req, "src_latents", None)
    if latents is None:
        wav = req.src_audio.float().clamp(-1.0, 1.0)
        region = None
        if task in ("repaint", "lego"):
            span = padded_span(req, wav.shape[-1], sample_rate)
            if span.left or span.right:
                wav = torch.nn.functional.pad(wav, (span.left, span.right))
            region = (span.start, span.end)
        return encode(wav), region
    latents = latents.to(silence.device, silence.dtype)
    if task not in ("repaint", "lego"):
        return latents, None
    span = padded_span(req, latents.shape[0], sample_rate / hop)
    if span.left or span.right:
        latents = torch.cat([silence[: span.left], latents, silence[: span.right]], dim=0)
    return latents, (span.start, span.end)


def build_task_plan(
    req,
    *,
    encode: EncodeFn,
    silence: torch.Tensor,
    sample_rate: int,
    hop: int,
    timbre_frames: int,
) -> TaskPlan:
    """Resolve lengths, sources, chunk masks and reference latents for every batch item."""
    batch = len(req.seeds)
    frames_per_second = sample_rate / hop
    rng = random.Random(req.seeds[0])
    code_ids: list[list[int] | None] = [None] * batch
    if req.audio_codes is not None:
        codes = req.audio_codes if len(req.audio_codes) == batch else [req.audio_codes[0]] * batch
        code_ids = [list(c) if c else None for c in codes]

    task = req.task_type
    src_latents = None
    repaint_region = None
    has_source = req.src_audio is not None or getattr(req, "src_latents", None) is not None
    edit_source = None
    if req.edit.flow_edit_morph and task in FLOW_EDIT_TASKS and has_source:
        # A flow edit starts from the source and keeps its length; text2music's context stays silence and,
        # as upstream drops their hints, reads no codes.
        edit_source, _ = _source_latents(req, task, encode, silence, sample_rate, hop)
        if task == "text2music":
            code_ids = [None] * batch
    if task in SOURCE_TASKS or (task == "cover" and has_source and all(c is None for c in code_ids)):
        src_latents, repaint_region = _source_latents(req, task, encode, silence, sample_rate, hop)
    elif task == "cover" and all(c is None for c in code_ids):
        task = "text2music"  # the reference falls back when a cover has nothing to cover

    items: list[ItemPlan] = []
    for index in range(batch):
        codes = code_ids[index]
        instruction = task_instruction(task, req.instruction, codes is not None)
        if edit_source is not None:
            frames = edit_source.shape[0]
        elif codes is not None:
            frames = len(codes) * 5
        elif src_latents is not None:
            frames = src_latents.shape[0]
        elif req.duration > 0:
            frames = frames_for_duration(req.duration, sample_rate, hop)
        else:
            frames = frames_for_duration(rng.uniform(10.0, 120.0), sample_rate, hop)
        # cover-nofsq shares cover's instruction but not its FSQ hints: the raw source latents stay the context.
        is_cover = codes is not None or task == "cover" or (task != "cover-nofsq" and is_cover_instruction(instruction))
        items.append(ItemPlan(frames, instruction, is_cover, frames / frames_per_second, codes))

    length = max(MIN_LATENT_FRAMES, *(item.frames for item in items))
    channels = silence.shape[1]
    base_src = (
        silence[:length] if src_latents is None else pad_with_silence(src_latents.to(silence.dtype), length, silence)
    )
    src = base_src[None].repeat(batch, 1, 1)
    chunk = torch.ones(batch, length, channels, dtype=silence.dtype, device=silence.device)
    clean_src = None
    repaint_mask = None
    if repaint_region is not None:
        start, end = repaint_span(*repaint_region, min(length, src_latents.shape[0]), frames_per_second)
        clean_src = src.clone()
        src[:, start:end] = silence[start:end].to(src.dtype)
        chunk.zero_()
        chunk[:, start:end] = 1
        repaint_mask = torch.zeros(batch, length, 1, dtype=torch.bool, device=silence.device)
        repaint_mask[:, start:end] = True
        if task == "lego":
            clean_src, repaint_mask = None, None  # lego regenerates freely; only repaint keeps the outside

    reference = silence[:timbre_frames][None].repeat(batch, 1, 1)
    if getattr(req, "reference_latents", None) is not None:
        ref_latents = pad_with_silence(req.reference_latents.to(silence.device, silence.dtype), timbre_frames, silence)
        reference = ref_latents[None].repeat(batch, 1, 1)
    elif req.reference_audio is not None:
        clip = prepare_reference_audio(req.reference_audio, sample_rate, rng)
        if clip is not None:
            ref_latents = pad_with_silence(encode(clip).to(silence.dtype), timbre_frames, silence)
            reference = ref_latents[None].repeat(batch, 1, 1)

    if edit_source is not None:
        edit_source = pad_with_silence(edit_source.to(silence.dtype), length, silence)[None].repeat(batch, 1, 1)
    is_cover = torch.tensor([item.is_cover for item in items], dtype=torch.bool, device=silence.device)
    return TaskPlan(items, length, src, chunk, is_cover, reference, code_ids, clean_src, repaint_mask, edit_source)


def validate_codes(codes: list[list[int]] | None, batch: int, codebook_size: int) -> None:
    if codes is None:
        return
    if len(codes) not in (1, batch):
        raise InvalidArgument("audio_codes", f"allowed 1 or batch_size ({batch}) code lists, got {len(codes)}")
    for row, item in enumerate(codes):
        if item is None:
            continue
        if len(item) > 600 * 5:
            raise InvalidArgument("audio_codes", f"allowed at most 3000 codes (600 s), item {row} has {len(item)}")
        bad = [c for c in item if not isinstance(c, int) or c < 0 or c >= codebook_size]
        if bad:
            raise InvalidArgument("audio_codes", f"allowed ids 0-{codebook_size - 1}, item {row} has {bad[:3]}")


__all__ = [
    "DEFAULT_INSTRUCTION",
    "TASK_TYPES",
    "TURBO_TASK_TYPES",
    "ItemPlan",
    "TaskPlan",
    "build_task_plan",
    "parse_audio_codes",
]
