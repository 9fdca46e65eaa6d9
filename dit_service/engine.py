"""Public DiT-side API: ``DiTEngine.load(...)``, ``validate``, ``encode_audio``, ``synthesize``.

``synthesize`` is a generator of events (step progress, audio windows, item done, time costs) so a
server can stream audio while later windows are still being decoded, and cancel between steps.
Requests may run concurrently, one thread each: their DiT forwards and VAE window decodes go through
the engine's :class:`ForwardBatcher`, which merges compatible calls into one forward.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch

from acestep_client.constants import BASE_MODEL_HINT, MAX_CAPTION_CHARS
from acestep_client.errors import FailedPrecondition, InvalidArgument, NotFound
from acestep_client.tracing import record_stage, start_stage
from acestep_client.validation import check_repainting

from .adapters import AdapterLibrary, AdapterUse, adapter_rows
from .adapters.library import DEFAULT_CACHE_MB, MIB
from .batch_ops import DiTCall, run_dit, run_vae, vae_key
from .batcher import BatchOp, BatchSession, ForwardBatcher
from .edit_options import EditOptions, lego_caption
from .flow_edit import BranchVelocity, FlowEditWindow, flow_edit_sample
from .loading import LoadedCheckpoint, load_checkpoint
from .model.text_encoder import CAPTION_MAX_TOKENS, LYRIC_MAX_TOKENS
from .model.vae import encode_audio_to_latents, vae_hop
from .output_options import OutputOptions
from .prompts import DEFAULT_INSTRUCTION, caption_prompt, lyric_prompt, metas_string
from .samplers import SamplerResult, base_schedule, guided_sample, injection_steps, turbo_sample, turbo_schedule
from .sampling_options import SamplingOptions
from .stop_points import add_stop_points, stoppable
from .tasks import (
    FLOW_EDIT_TASKS,
    SOURCE_TASKS,
    TASK_TYPES,
    TURBO_TASK_TYPES,
    TaskPlan,
    build_task_plan,
    padded_span,
    parse_audio_codes,
    prepare_reference_audio,
    task_instruction,
    validate_codes,
)
from .vae_decode import iter_decoded_windows
from .waveform_splice import repaint_splice

MAX_BATCH = 8
MAX_SEED = 2**32 - 1
TURBO_MAX_STEPS = 8  # turbo runs its fixed 8-step schedule whatever it is asked
BASE_MAX_STEPS = 200
DEFAULT_STEPS = 8  # what an unset inference_steps means (the API default)
MAX_DURATION_S = 600.0
REPAINT_CROSSFADE_FRAMES = 10
# Every convolution too: at full rate one takes seconds on a long CPU input (a 4-minute upload: 2-3 s each on
# a 2-core machine).
_VAE_STOP_MODULES = frozenset({"OobleckEncoderBlock", "OobleckDecoderBlock", "OobleckResidualUnit", "Conv1d",
                               "ConvTranspose1d"})

__all__ = [
    "AudioWindow",
    "DiTEngine",
    "ItemDone",
    "StepProgress",
    "SynthesisRequest",
    "TimeCosts",
    "parse_audio_codes",
]


@dataclass
class SynthesisRequest:
    task_type: str = "text2music"  # text2music|cover|repaint|lego|extract|complete
    instruction: str = ""  # "" -> the task's default instruction
    caption: str = ""
    lyrics: str = ""
    instrumental: bool = False
    vocal_language: str = "unknown"
    bpm: int | None = None
    keyscale: str = ""
    timesignature: str = ""
    duration: float = -1.0  # seconds; <=0 = from codes/src audio, else random 10-120 like the reference
    inference_steps: int = 8
    guidance_scale: float = 7.0
    use_adg: bool = False
    cfg_interval_start: float = 0.0
    cfg_interval_end: float = 1.0
    repainting_start: float = 0.0
    repainting_end: float = -1.0
    audio_cover_strength: float = 1.0
    seeds: list[int] = field(default_factory=lambda: [0])  # one per batch item; batch_size == len(seeds)
    audio_codes: list[list[int]] | None = None  # per item 5 Hz code ids (from the LM), or None
    src_audio: torch.Tensor | None = None  # [2, n] float32 48 kHz
    src_waveform: torch.Tensor | None = None  # [2, n] 48 kHz; repaint splice (waveform_splice.py)
    reference_audio: torch.Tensor | None = None  # [2, n] float32 48 kHz
    initial_noise: torch.Tensor | None = None  # optional explicit noise [B, T, C] for numerics comparisons
    # Already-encoded sources (the gRPC path: EncodeAudio ran first); they take the place of the waveforms.
    src_latents: torch.Tensor | None = None  # [T, C] from encode_audio
    reference_latents: torch.Tensor | None = None  # [T, C] from encode_reference
    # shift, ode/sde, Euler/Heun, custom timesteps, velocity clamp/EMA, DCW (upstream's defaults).
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    # latent shift/rescale before the VAE; normalisation and fades of the decoded audio (upstream's defaults).
    output: OutputOptions = field(default_factory=OutputOptions)
    # retake noise, repaint strength, chunk-mask mode, cover noise, SFT-stems global caption (edit_options.py).
    edit: EditOptions = field(default_factory=EditOptions)
    adapter: str = ""  # a LoRA/LoKr adapter of this model (the engine's AdapterLibrary); "" = none
    adapter_scale: float = 1.0  # 0-1: ΔW is multiplied by it; 0 gives the base model's numbers exactly


@dataclass
class StepProgress:
    step: int
    total: int


@dataclass
class AudioWindow:
    item: int
    start_sample: int
    pcm: torch.Tensor  # float32 CPU [2, n] at 48 kHz, faded (OutputOptions), NOT yet scaled by ItemDone.gain


@dataclass
class ItemDone:
    """Multiply the item's streamed windows by ``gain`` to get the final audio (OutputOptions.gain: the clip guard
    1 / max(peak, 1), or with normalisation 10^(normalization_db/20) / peak, the peak taken before fades).

    That peak is only known once every window is decoded, so streamed windows carry the fades but not the gain.
    """

    item: int
    seed: int
    num_samples: int
    peak: float = 0.0  # of the streamed (faded) windows
    gain: float = 1.0
    rms: float = 0.0  # of the streamed windows; with peak it answers the silence check


@dataclass
class TimeCosts:
    values: dict[str, float]


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not isinstance(value, (int, float)) or math.isnan(value) or not low <= value <= high:
        raise InvalidArgument(name, f"allowed {low}-{high}, got {value!r}")


def _check_audio(name: str, wav: torch.Tensor | None, min_samples: int = 1, max_samples: int | None = None) -> None:
    if wav is None:
        return
    if not isinstance(wav, torch.Tensor) or wav.dim() != 2 or wav.shape[0] != 2 or wav.shape[1] == 0:
        shape = tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__
        raise InvalidArgument(name, f"allowed a float tensor [2, n>0] at 48 kHz, got {shape}")
    if wav.shape[1] < min_samples:  # the VAE encodes whole 1,920-sample frames: shorter gives no latents at all
        raise InvalidArgument(name, f"allowed at least {min_samples} samples ({min_samples / 48_000:g} s at 48 kHz, "
                                    f"one latent frame), got {wav.shape[1]}")
    if max_samples is not None and wav.shape[1] > max_samples:
        raise InvalidArgument(name, f"allowed at most {max_samples} samples ({max_samples / 48_000:g} s at 48 kHz), "
                                    f"got {wav.shape[1]}")
    if not torch.isfinite(wav).all():
        raise InvalidArgument(name, "allowed finite samples, got NaN/inf")


def _check_latents(name: str, latents: torch.Tensor | None, channels: int, max_frames: int) -> None:
    if latents is None:
        return
    if latents.dim() != 2 or latents.shape[1] != channels or not 0 < latents.shape[0] <= max_frames:
        raise InvalidArgument(name, f"allowed latents [T in 1-{max_frames}, {channels}], got {tuple(latents.shape)}")
    if not torch.isfinite(latents).all():  # NaN latents would decode to NaN audio and an OK status
        raise InvalidArgument(name, "allowed finite latents, got NaN/inf")


class DiTEngine:
    sample_rate: int = 48000

    def __init__(
        self,
        loaded: LoadedCheckpoint,
        variant: str,
        device: str,
        dtype: torch.dtype,
        batcher: ForwardBatcher | None = None,
        adapters: AdapterLibrary | None = None,
    ):
        self.loaded = loaded
        self.adapters = adapters  # None: requests naming an adapter get NOT_FOUND
        self.variant = variant
        self.device = torch.device(device)
        self.dtype = dtype
        self.config = loaded.config
        self.model = loaded.model
        self.vae = loaded.vae
        self.text_encoder = loaded.text_encoder
        self.silence_latent = loaded.silence_latent
        self.is_turbo = bool(loaded.config.is_turbo)
        self.sample_rate = int(getattr(self.vae.config, "sampling_rate", 48000))
        self.hop = vae_hop(self.vae)
        self.codebook_size = self.model.tokenizer.quantizer.codebook_size
        # Without a window (the default) a lone request runs as if unbatched; servers pass a few ms.
        self.batcher = batcher or ForwardBatcher()
        self._dit_op = BatchOp("dit", partial(run_dit, self.model.decoder))
        self._vae_op = BatchOp("vae", partial(run_vae, self.vae))
        # The VAE's layers take seconds each on long CPU inputs; the DiT checks between its layers (decoder.py).
        add_stop_points((m for m in self.vae.modules() if type(m).__name__ in _VAE_STOP_MODULES), "VAE")

    @classmethod
    def load(
        cls,
        checkpoints: str | Path,
        variant: str = "acestep-v15-turbo",
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        compile_kernels: bool = False,
        batcher: ForwardBatcher | None = None,
        adapters: str | Path | None = None,
        adapter_cache_mb: float = DEFAULT_CACHE_MB,
    ) -> DiTEngine:
        """Load a released-layout checkpoint root; ``compile_kernels`` torch.compiles DiT layers and Snake (GPU).

        ``adapters``: a folder of LoRA/LoKr adapters (one subfolder each) served per request, loaded on first use
        into a cache of ``adapter_cache_mb``.
        """
        loaded = load_checkpoint(checkpoints, variant, device, dtype, compile_kernels)
        library = None
        if adapters:
            library = AdapterLibrary(adapters, loaded.model.decoder, variant, device, dtype,
                                     int(adapter_cache_mb * MIB))
        return cls(loaded, variant, device, dtype, batcher, library)

    @property
    def latent_channels(self) -> int:
        return int(self.config.audio_acoustic_hidden_dim)

    # What this model can do: :meth:`validate` enforces it, ListModels reports it so callers check first.
    @property
    def task_types(self) -> tuple[str, ...]:
        return TURBO_TASK_TYPES if self.is_turbo else TASK_TYPES

    @property
    def max_inference_steps(self) -> int:
        return TURBO_MAX_STEPS if self.is_turbo else BASE_MAX_STEPS

    def caption_cut(self, req: SynthesisRequest) -> str | None:
        """Why the caption is not read whole, or None: the text encoder reads only the first
        ``CAPTION_MAX_TOKENS`` tokens of its prompt (instruction, caption, then the metadata lines), as upstream
        tokenizes it with truncation. Token counts are those of the item prompts' common form.
        """
        count = self.text_encoder.tokenizer.count
        instruction = task_instruction(req.task_type, req.instruction, req.audio_codes is not None)
        metas = metas_string(req.bpm, req.timesignature, req.keyscale, req.duration if req.duration > 0 else None)
        prompt = caption_prompt(instruction, req.caption, metas)
        total = count(prompt)
        if total <= CAPTION_MAX_TOKENS or not req.caption:
            return None
        added = count("")  # the end-of-text the post-processor appends
        before = prompt[: prompt.index(req.caption)]
        room = CAPTION_MAX_TOKENS - count(before)  # the window less the text before the caption and the end-of-text
        caption_tokens = count(req.caption) - added
        kept = max(0, min(caption_tokens, room))
        cut = f"kept {kept} of its {caption_tokens} tokens" if kept < caption_tokens else "the caption fit"
        return (
            f"the DiT text encoder reads the first {CAPTION_MAX_TOKENS} tokens of its caption prompt and this one "
            f"has {total}: {cut}, and the bpm/key/duration lines after it were not read (as upstream does); "
            f"shorten the caption to keep all of it"
        )

    # ------------------------------------------------------------------ validation
    def validate(self, req: SynthesisRequest) -> None:
        """Reject bad requests before any model work; messages name the field and the allowed range."""
        if req.task_type not in TASK_TYPES:
            raise InvalidArgument("task_type", f"allowed {', '.join(TASK_TYPES)}, got {req.task_type!r}")
        if self.is_turbo and req.task_type not in TURBO_TASK_TYPES:
            raise FailedPrecondition(
                f"task_type {req.task_type!r} needs a non-turbo DiT (e.g. acestep-v15-base, -sft, -xl-base); "
                f"{self.variant} is a turbo model (is_turbo in its config.json) and only supports "
                f"{', '.join(TURBO_TASK_TYPES)}; {BASE_MODEL_HINT}"
            )
        if not isinstance(req.seeds, list) or not 1 <= len(req.seeds) <= MAX_BATCH:
            raise InvalidArgument("seeds", f"allowed 1-{MAX_BATCH} seeds (one per batch item), got {req.seeds!r}")
        for seed in req.seeds:
            if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
                raise InvalidArgument("seeds", f"allowed integers 0-{MAX_SEED}, got {seed!r}")
        if req.duration > 0:
            _check_range("duration", req.duration, 10.0, MAX_DURATION_S)
        if req.bpm is not None:
            _check_range("bpm", req.bpm, 30, 300)
        if len(req.caption) > MAX_CAPTION_CHARS:
            raise InvalidArgument("caption", f"allowed at most {MAX_CAPTION_CHARS} characters, got {len(req.caption)}")
        if len(req.lyrics) > 4096:
            raise InvalidArgument("lyrics", f"allowed at most 4096 characters, got {len(req.lyrics)}")
        for name in ("keyscale", "timesignature", "vocal_language"):
            if len(getattr(req, name)) > 32:
                raise InvalidArgument(name, f"allowed at most 32 characters, got {len(getattr(req, name))}")
        max_steps = self.max_inference_steps
        if not isinstance(req.inference_steps, int) or not 1 <= req.inference_steps <= max_steps:
            raise InvalidArgument("inference_steps", f"allowed 1-{max_steps}, got {req.inference_steps!r}")
        _check_range("guidance_scale", req.guidance_scale, 1.0, 15.0)
        if not isinstance(req.sampling, SamplingOptions):
            raise InvalidArgument("sampling", f"allowed a SamplingOptions, got {type(req.sampling).__name__}")
        req.sampling.validate(self.is_turbo)
        if not isinstance(req.output, OutputOptions):
            raise InvalidArgument("output", f"allowed an OutputOptions, got {type(req.output).__name__}")
        req.output.validate()
        if not isinstance(req.edit, EditOptions):
            raise InvalidArgument("edit", f"allowed an EditOptions, got {type(req.edit).__name__}")
        req.edit.validate()
        _check_range("cfg_interval_start", req.cfg_interval_start, 0.0, 1.0)
        _check_range("cfg_interval_end", req.cfg_interval_end, 0.0, 1.0)
        if req.cfg_interval_start > req.cfg_interval_end:
            raise InvalidArgument(
                "cfg_interval_start",
                f"allowed <= cfg_interval_end ({req.cfg_interval_end}), got {req.cfg_interval_start}",
            )
        _check_range("audio_cover_strength", req.audio_cover_strength, 0.0, 1.0)
        max_frames = self.max_latent_frames
        _check_audio("src_audio", req.src_audio, min_samples=self.hop, max_samples=max_frames * self.hop)
        _check_audio("reference_audio", req.reference_audio, max_samples=max_frames * self.hop)
        _check_latents("src_latents", req.src_latents, self.latent_channels, max_frames)
        _check_latents("reference_latents", req.reference_latents, self.latent_channels, max_frames)
        if req.task_type in SOURCE_TASKS and req.src_audio is None and req.src_latents is None:
            raise InvalidArgument("src_audio", f"allowed: required for task_type {req.task_type!r}, got none")
        if self.flow_edits(req) and req.src_audio is None and req.src_latents is None:
            raise InvalidArgument("src_audio", "allowed: required with flow_edit_morph (the audio it morphs), got none")
        end = req.repainting_end
        if req.task_type in ("repaint", "lego") and end is not None and 0 <= end <= req.repainting_start:
            raise InvalidArgument(
                "repainting_end",
                f"allowed > repainting_start ({req.repainting_start}) or -1, got {req.repainting_end}",
            )
        self._check_repaint_length(req)
        validate_codes(req.audio_codes, len(req.seeds), self.codebook_size)
        self.validate_adapter(req)
        if req.initial_noise is not None and (
            req.initial_noise.dim() != 3
            or req.initial_noise.shape[0] != len(req.seeds)
            or req.initial_noise.shape[2] != self.latent_channels
        ):
            raise InvalidArgument(
                "initial_noise",
                f"allowed [batch={len(req.seeds)}, frames, {self.latent_channels}], "
                f"got {tuple(req.initial_noise.shape)}",
            )

    @property
    def max_latent_frames(self) -> int:
        """The longest audio the model takes, in latent frames: its silence latent's (15,000: 600 s at 25 Hz)."""
        return int(self.silence_latent.shape[0])

    def _check_repaint_length(self, req: SynthesisRequest) -> None:
        """repaint/lego: the source with the silence its span adds (as _source_latents pads it) fits the model."""
        if req.task_type not in ("repaint", "lego"):
            return
        end = -1 if req.repainting_end is None else req.repainting_end
        check_repainting(req.repainting_start, end)
        fps = self.sample_rate / self.hop
        if req.src_latents is not None:
            length = req.src_latents.shape[0]
            span = padded_span(req, length, fps)
            seconds, frames = length / fps, span.left + length + span.right
        elif req.src_audio is not None:
            length = req.src_audio.shape[-1]
            span = padded_span(req, length, self.sample_rate)
            seconds, frames = length / self.sample_rate, (span.left + length + span.right) // self.hop
        else:
            return
        if frames > self.max_latent_frames:
            check_repainting(req.repainting_start, end, seconds)  # names the field to change
            raise InvalidArgument("repainting_end", f"allowed a repainted length of at most "
                                                    f"{self.max_latent_frames / fps:g} s, got {frames / fps:g} s")

    def validate_adapter(self, req: SynthesisRequest) -> None:
        """The adapter exists here and fits this model (from its files' headers; nothing is loaded)."""
        _check_range("adapter_scale", req.adapter_scale, 0.0, 1.0)
        if not isinstance(req.adapter, str):
            raise InvalidArgument("adapter", f"allowed an adapter name, got {type(req.adapter).__name__}")
        if not req.adapter:
            return
        if self.adapters is None:
            raise NotFound(
                f"adapter {req.adapter!r} not found: this DiT ({self.variant}) serves no adapters "
                f"(start it with --adapters DIR)"
            )
        self.adapters.spec(req.adapter)

    def _adapter_use(self, req: SynthesisRequest) -> AdapterUse | None:
        """The request's adapter, loaded (or from the cache); None for none or scale 0."""
        if not req.adapter or req.adapter_scale == 0.0:
            return None
        if self.adapters is None:
            self.validate_adapter(req)  # raises NotFound
        return self.adapters.use(req.adapter, req.adapter_scale)

    # ------------------------------------------------------------------ audio encoding
    @torch.inference_mode()
    def _encode_latents(self, wav: torch.Tensor) -> torch.Tensor:
        """[2, n] audio → [T, C] latents in the model dtype."""
        latents = encode_audio_to_latents(self.vae, wav.float().clamp(-1, 1)[None])
        return latents[0].to(device=self.device, dtype=self.dtype)

    @torch.inference_mode()
    def encode_audio(
        self, wav: torch.Tensor, should_stop: Callable[[], bool] = lambda: False
    ) -> tuple[torch.Tensor, list[int]]:
        """[2, n] 48 kHz → (latents [T, C] float32 CPU, 5 Hz code ids) — the src-audio-to-codes path.

        Raises ``Cancelled`` at the VAE's next layer once ``should_stop()`` turns true.
        """
        _check_audio("audio", wav, min_samples=self.hop, max_samples=self.max_latent_frames * self.hop)
        with stoppable(should_stop):
            latents = self._encode_latents(wav)
        _, indices = self.model.tokenizer(latents[None], self.silence_latent)
        return latents.float().cpu(), indices[0, :, 0].tolist()

    @torch.inference_mode()
    def encode_reference(
        self, wav: torch.Tensor, seed: int = 0, should_stop: Callable[[], bool] = lambda: False
    ) -> torch.Tensor:
        """Timbre reference: three seeded 10 s segments, VAE-encoded → latents [T, C] float32 CPU."""
        _check_audio("reference_audio", wav, max_samples=self.max_latent_frames * self.hop)
        clip = prepare_reference_audio(wav, self.sample_rate, random.Random(seed))
        if clip is None:  # silent: the model uses the silence latent, as the reference does
            return self.silence_latent[: self.config.timbre_fix_frame].float().cpu()
        with stoppable(should_stop):
            return self._encode_latents(clip).float().cpu()

    # ------------------------------------------------------------------ conditioning
    def _text_conditions(
        self,
        plan: TaskPlan,
        req: SynthesisRequest,
        instructions: list[str],
        text_length: int | None = None,
        lyrics_as_given: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``lyrics_as_given``: empty lyrics stay empty (a flow edit's source side), else they read [Instrumental]."""
        tokenizer = self.text_encoder.tokenizer
        instrumental = req.instrumental or not req.lyrics.strip()
        lyrics = "[Instrumental]" if instrumental and not lyrics_as_given else req.lyrics
        captions, lyric_texts = [], []
        for item, instruction in zip(plan.items, instructions, strict=True):
            metas = metas_string(req.bpm, req.timesignature, req.keyscale, item.duration_seconds)
            captions.append(caption_prompt(instruction, self._caption(req, instruction), metas))
            lyric_texts.append(lyric_prompt(req.vocal_language or "unknown", lyrics))
        caption_ids = [tokenizer.encode(text, CAPTION_MAX_TOKENS) for text in captions]
        text = tokenizer.pad(caption_ids, self.device, length=text_length)
        lyric = tokenizer.batch(lyric_texts, LYRIC_MAX_TOKENS, self.device)
        text_hidden = self.text_encoder.encode_captions(text.ids).to(self.dtype)
        lyric_embeddings = self.text_encoder.embed_lyrics(lyric.ids).to(self.dtype)
        return text_hidden, text.mask, lyric_embeddings, lyric.mask

    def _caption(self, req: SynthesisRequest, instruction: str) -> str:
        """The caption as the model was trained to read it: SFT-stems models take upstream's Global/Local block."""
        if not getattr(self.config, "is_lego_sft", False):
            return req.caption
        return lego_caption(req.caption, req.edit.global_caption, instruction, req.edit.chunk_mask_mode)

    def _encoder_states(self, plan, req, instructions, text_length=None, lyrics_as_given=False) -> torch.Tensor:
        text_hidden, text_mask, lyric_emb, lyric_mask = self._text_conditions(
            plan, req, instructions, text_length, lyrics_as_given
        )
        order = torch.arange(len(plan.items), device=self.device)
        encoder_hidden, _ = self.model.encoder(
            text_hidden, text_mask, lyric_emb, lyric_mask, plan.reference_latents, order
        )
        return encoder_hidden

    def _context(self, plan: TaskPlan) -> torch.Tensor:
        """[src | chunk mask] with cover items' src replaced by 25 Hz hints (from codes or tokenized src)."""
        src = plan.src_latents.clone()
        for index, codes in enumerate(plan.code_ids):
            if codes is not None:
                ids = torch.tensor(codes, dtype=torch.long, device=self.device)[None]
                hints = self.model.codes_to_hints(ids)[0]
                src[index] = _fit_length(hints, plan.length, self.silence_latent)
        needs_tokenized = [i for i, item in enumerate(plan.items) if item.is_cover and plan.code_ids[i] is None]
        if needs_tokenized:
            hints = self.model.latents_to_hints(plan.src_latents[needs_tokenized], self.silence_latent)
            src[needs_tokenized] = hints
        return torch.cat([src, plan.chunk_masks], dim=-1)

    def _noise(self, req: SynthesisRequest, length: int) -> torch.Tensor:
        if req.initial_noise is not None:
            if req.initial_noise.shape[1] != length:
                raise InvalidArgument(
                    "initial_noise", f"allowed {length} frames for this request, got {req.initial_noise.shape[1]}"
                )
            return req.initial_noise.to(device=self.device, dtype=self.dtype)
        return self._seeded_noise(req.seeds, length)

    def _seeded_noise(self, seeds: list[int], length: int) -> torch.Tensor:
        """[B, length, C]: item i drawn from its own generator seeded ``seeds[i]`` (batch-position independent)."""
        parts = []
        for seed in seeds:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
            parts.append(
                torch.randn(
                    (1, length, self.latent_channels), generator=generator, device=self.device, dtype=self.dtype
                )
            )
        return torch.cat(parts, dim=0)

    # ------------------------------------------------------------------ synthesis
    def synthesize(
        self, req: SynthesisRequest, should_stop: Callable[[], bool] = lambda: False
    ) -> Iterator[StepProgress | AudioWindow | ItemDone | TimeCosts]:
        """Generate, then decode window by window; raises ``Cancelled`` when ``should_stop()`` turns true."""
        self.validate(req)
        events = self._synthesize(req, should_stop)
        while True:
            # Inference mode only while computing, never while suspended at a yield: the caller's
            # thread (e.g. an event loop interleaving several requests) must not inherit it. The same for
            # the stop points of the work on this thread (the source-audio VAE encode; forwards run on the
            # batcher's thread).
            with torch.inference_mode(), stoppable(should_stop):
                try:
                    event = next(events)
                except StopIteration:
                    return
            yield event

    @torch.inference_mode()
    def sample_latents(self, req: SynthesisRequest, should_stop: Callable[[], bool] = lambda: False) -> torch.Tensor:
        """Run conditioning + sampling only and return the final latents [B, L, C] (numerics comparisons)."""
        self.validate(req)
        with self.batcher.session(should_stop) as session, stoppable(should_stop):
            run = self._diffuse(req, session)
            while True:
                try:
                    next(run)
                except StopIteration as done:
                    return done.value[0]

    def _forward(self, session: BatchSession, x, t, context, cross_kv, adapter: AdapterUse | None) -> torch.Tensor:
        """``decoder(x, t, context, cross_kv)`` through the batcher (maybe merged with other requests' rows,
        whatever adapters they use: each row gets its own)."""
        call = DiTCall(x, t, context, cross_kv, adapter)
        return session.submit(self._dit_op, call.key(), call.rows, call)

    def _decode_window(self, session: BatchSession, latents: torch.Tensor) -> torch.Tensor:
        """One VAE window through the batcher."""
        return session.submit(self._vae_op, vae_key(latents), latents.shape[0], latents)

    def _diffuse(self, req: SynthesisRequest, session: BatchSession):
        """Generator of StepProgress; returns (latents [B, L, C], encoder seconds, diffusion seconds)."""
        start = time.perf_counter()
        adapter = self._adapter_use(req)  # loaded before any model work: a broken file fails the request here
        plan = build_task_plan(
            req,
            encode=self._encode_latents,
            silence=self.silence_latent,
            sample_rate=self.sample_rate,
            hop=self.hop,
            timbre_frames=self.config.timbre_fix_frame,
        )
        if req.edit.chunk_mask_mode == "auto":
            plan.chunk_masks.fill_(1)  # upstream's "auto": the model decides what to keep
        instructions = [item.instruction for item in plan.items]
        encoder_hidden = self._encoder_states(plan, req, instructions)
        context = self._context(plan)
        should_stop = session.should_stop
        use_cfg = not self.is_turbo and req.guidance_scale > 1.0
        # Conditions are computed per request, alone: merging happens only at the decoder forward.
        condition = self._cross_kv(encoder_hidden, use_cfg, adapter)
        if plan.edit_source is not None:
            return (yield from self._flow_edit(req, session, plan, context, condition, use_cfg, start, adapter))

        schedule = self._schedule(req)
        total_steps = len(schedule) if self.is_turbo else len(schedule) - 1
        cover_steps = total_steps
        non_cover = None
        if req.audio_cover_strength < 1.0 and bool(plan.is_cover.any()):
            # Upstream's base loop counts cover steps from inference_steps even under custom timesteps.
            # With cover noise, upstream counts them from the cut schedule.
            cut = req.edit.cover_noise_strength > 0.0
            counted = total_steps if self.is_turbo or cut else req.inference_steps
            cover_steps = int(counted * req.audio_cover_strength)
            non_cover = self._branch(session, *self._non_cover_condition(plan, req, use_cfg, adapter))
        cover = self._branch(session, condition, context)

        def velocity(x: torch.Tensor, t: torch.Tensor, step: int, guided: bool):
            branch = non_cover if non_cover is not None and step >= cover_steps else cover
            return branch(x, t, guided)

        noise = self._noise(req, plan.length)
        if req.edit.retake_variance > 0.0:
            noise = req.edit.mix_retake(noise, self._seeded_noise(req.edit.retake_seeds(req.seeds), plan.length))
        post_step = self._repaint_injection(plan, noise, total_steps, req.edit.injection_ratio)
        start_x = noise
        if req.edit.cover_noise_strength > 0.0:
            # The schedule already starts at the timestep nearest 1 - strength (_schedule); renoise the source there.
            t_start = float(schedule[0])
            start_x = t_start * noise + (1 - t_start) * plan.src_latents.to(noise.dtype)
        encoder_time = time.perf_counter() - start

        sde_noise = self._sde_noise(req) if req.sampling.infer_method == "sde" else None
        result = SamplerResult()
        start_diffusion = time.perf_counter()
        if self.is_turbo:
            steps = turbo_sample(velocity, start_x, schedule, result, should_stop, post_step, req.sampling, sde_noise)
        else:
            cfg_interval = (req.cfg_interval_start, req.cfg_interval_end)
            steps = guided_sample(
                velocity,
                start_x,
                schedule,
                req.guidance_scale,
                req.use_adg,
                cfg_interval,
                result,
                should_stop,
                post_step,
                req.sampling,
                sde_noise,
            )
        for step in steps:
            yield StepProgress(step=step + 1, total=total_steps)
        latents = result.latents
        if plan.repaint_mask is not None:
            latents = _paste_outside(latents, plan.repaint_clean_src, plan.repaint_mask, req.edit.crossfade_frames)
        return latents, encoder_time, time.perf_counter() - start_diffusion

    def _synthesize(self, req: SynthesisRequest, should_stop: Callable[[], bool]):
        # One batcher session for the request's whole life: the batcher starts a merged forward early
        # only once every open session has a call waiting.
        with self.batcher.session(should_stop) as session:
            yield from self._synthesize_in(req, session)

    def _synthesize_in(self, req: SynthesisRequest, session: BatchSession):
        should_stop = session.should_stop
        start_total = time.perf_counter()
        batch = len(req.seeds)
        splice = repaint_splice(req, self.sample_rate, self.hop)  # None unless a repaint keeps its source audio
        began_ns = time.time_ns()
        latents, encoder_time, diffusion_time = yield from self._diffuse(req, session)
        diffused_ns = time.time_ns()
        record_stage("dit.encode", began_ns, began_ns + int(encoder_time * 1e9), items=batch)
        record_stage("dit.diffusion", diffused_ns - int(diffusion_time * 1e9), diffused_ns, items=batch,
                     steps=self.diffusion_steps(req))
        latents = req.output.apply_to_latents(latents)  # upstream: on the final latents, before the VAE
        length = latents.shape[1]
        num_samples = length * self.hop
        fades = req.output.fades(num_samples, self.sample_rate)  # the length is known before decoding
        total_steps = self.diffusion_steps(req)
        start_vae = time.perf_counter()
        unfaded_peaks = torch.zeros(batch, dtype=torch.float64)  # what normalisation divides by, as upstream
        peaks = torch.zeros(batch, dtype=torch.float64)
        energy = torch.zeros(batch, dtype=torch.float64)
        decode = partial(self._decode_window, session)
        vae_span = start_stage("dit.vae_decode", items=batch)  # its windows below; ended once all are decoded
        window_began = time.time_ns()
        for start_sample, audio in iter_decoded_windows(self.vae, latents, self.hop, should_stop, decode=decode):
            audio_cpu = audio.cpu()
            record_stage("dit.vae_window", window_began, parent=vae_span, start_sample=start_sample,
                         samples=audio_cpu.shape[-1])
            if splice is not None:  # upstream splices right after the decode, before normalisation and fades
                audio_cpu = splice.apply(audio_cpu, start_sample)
            unfaded_peaks = torch.maximum(unfaded_peaks, audio_cpu.abs().amax(dim=(1, 2)).double())
            if fades is not None:
                audio_cpu = fades.apply(audio_cpu, start_sample)
            peaks = torch.maximum(peaks, audio_cpu.abs().amax(dim=(1, 2)).double())
            energy += audio_cpu.double().square().sum(dim=(1, 2))
            for item in range(batch):
                yield AudioWindow(item=item, start_sample=start_sample, pcm=audio_cpu[item].contiguous())
            window_began = time.time_ns()
        vae_time = time.perf_counter() - start_vae
        if vae_span is not None:
            vae_span.end()
        for item, seed in enumerate(req.seeds):
            peak = float(peaks[item])
            rms = float((energy[item] / max(num_samples * audio_cpu.shape[1], 1)).sqrt())
            yield ItemDone(item, seed, num_samples, peak, req.output.gain(float(unfaded_peaks[item])), rms)
        total = time.perf_counter() - start_total
        yield TimeCosts(
            {
                "encoder_time_cost": encoder_time,
                "diffusion_time_cost": diffusion_time,
                "diffusion_per_step_time_cost": diffusion_time / max(total_steps, 1),
                "vae_decode_time_cost": vae_time,
                "offload_time_cost": 0.0,
                "total_time_cost": total,
            }
        )

    def _schedule(self, req: SynthesisRequest) -> list[float] | torch.Tensor:
        """Turbo: timesteps without the final 0 (list); base/sft: N+1 timesteps ending at 0 (model dtype)."""
        options = req.sampling
        if self.is_turbo:
            full = turbo_schedule(req.inference_steps, options.shift, options.custom_schedule())
            start = req.edit.cover_start(full)
        else:
            full = base_schedule(req.inference_steps, options.shift, self.dtype, self.device, options.custom_schedule())
            start = req.edit.cover_start(full[:-1].tolist())
        return full if start is None else full[start:]  # cover noise: start where the renoised source sits

    def diffusion_steps(self, req: SynthesisRequest) -> int:
        """Sampler steps this request runs (custom timesteps decide over inference_steps)."""
        if self.flow_edits(req):
            return len(self._flow_edit_schedule(req)) - 1
        schedule = self._schedule(req)
        return len(schedule) if self.is_turbo else len(schedule) - 1

    def _sde_noise(self, req: SynthesisRequest):
        """sde re-noising draws from one generator per item, seeded seed + 2^32 (never an initial-noise seed),
        so a request is reproducible and an item's audio does not depend on its batch position."""
        generators = [torch.Generator(device=self.device).manual_seed(int(seed) + 2**32) for seed in req.seeds]

        def draw(x: torch.Tensor) -> torch.Tensor:
            shape = (1, *x.shape[1:])
            return torch.cat(
                [torch.randn(shape, generator=g, device=x.device, dtype=x.dtype) for g in generators], dim=0
            )

        return draw

    def _non_cover_condition(self, plan: TaskPlan, req: SynthesisRequest, use_cfg: bool, adapter: AdapterUse | None):
        """Condition used after ``cover_steps``: default instruction, text2music context (silence src)."""
        main_ids = [
            self.text_encoder.tokenizer.encode(
                caption_prompt(
                    item.instruction,
                    self._caption(req, item.instruction),
                    metas_string(req.bpm, req.timesignature, req.keyscale, item.duration_seconds),
                ),
                CAPTION_MAX_TOKENS,
            )
            for item in plan.items
        ]
        text_length = max(len(ids) for ids in main_ids)
        hidden = self._encoder_states(plan, req, [DEFAULT_INSTRUCTION] * len(plan.items), text_length)
        src = self.silence_latent[: plan.length][None].expand(len(plan.items), -1, -1)
        context = torch.cat([src.to(self.dtype), plan.chunk_masks], dim=-1)
        return self._cross_kv(hidden, use_cfg, adapter), context

    def _cross_kv(self, encoder_hidden: torch.Tensor, use_cfg: bool, adapter: AdapterUse | None):
        """(cross-attention K/V, with CFG those of [cond; null], and the adapter) of one condition.

        The adapter changes the K/V projections too, the null condition's as well: upstream's adapter is part of
        the decoder, so both CFG halves run through it.
        """
        decoder = self.model.decoder
        with adapter_rows([(encoder_hidden.shape[0], adapter)]):
            kv = decoder.precompute_cross_kv(encoder_hidden)
            if not use_cfg:
                return kv, None, adapter
            # Materialised like the reference's torch.cat: a stride-0 (expanded) input takes another
            # GEMM path on CPU and rounds differently in bf16.
            null = self.model.null_condition_emb.to(self.dtype).expand_as(encoder_hidden).contiguous()
            return kv, _cat_kv(kv, decoder.precompute_cross_kv(null)), adapter

    def _branch(self, session: BatchSession, condition, context: torch.Tensor) -> BranchVelocity:
        """velocity(x, t, guided) under one condition: v, or (v_cond, v_uncond) from one doubled forward
        (both halves with the request's adapter)."""
        kv, kv_cfg, adapter = condition

        def velocity(x: torch.Tensor, t: torch.Tensor, guided: bool):
            if guided:
                doubled = (torch.cat([x, x]), torch.cat([t, t]), torch.cat([context, context]))
                return self._forward(session, *doubled, kv_cfg, adapter).chunk(2)
            return self._forward(session, x, t, context, kv, adapter)

        return velocity

    def flow_edits(self, req: SynthesisRequest) -> bool:
        """Whether this request runs a flow edit (upstream ignores flow_edit_morph on other tasks)."""
        return req.edit.flow_edit_morph and req.task_type in FLOW_EDIT_TASKS

    def _flow_edit_schedule(self, req: SynthesisRequest) -> torch.Tensor:
        """Upstream builds a flow edit's schedule alike on every model: linear with shift, or the custom one."""
        options = req.sampling
        return base_schedule(req.inference_steps, options.shift, self.dtype, self.device, options.custom_schedule())

    def _flow_edit(self, req, session, plan, context, target, use_cfg, start, adapter):
        """Morph ``plan.edit_source`` from the source caption/lyrics toward the request's (flow_edit.py)."""
        edit = req.edit
        source_req = replace(req, caption=edit.flow_edit_source_caption, lyrics=edit.flow_edit_source_lyrics)
        instructions = [item.instruction for item in plan.items]
        source_hidden = self._encoder_states(plan, source_req, instructions, lyrics_as_given=True)
        source = self._cross_kv(source_hidden, use_cfg, adapter)
        # Upstream's forward-noise generators: the retake seeds when retake is on, else the item seeds.
        seeds = edit.retake_seeds(req.seeds) if edit.retake_variance > 0.0 else req.seeds
        generators = [torch.Generator(device=self.device).manual_seed(int(seed)) for seed in seeds]
        shape = (1, plan.length, self.latent_channels)

        def draw() -> torch.Tensor:
            parts = [torch.randn(shape, generator=g, device=self.device, dtype=self.dtype) for g in generators]
            return torch.cat(parts)

        schedule = self._flow_edit_schedule(req)
        window = FlowEditWindow(edit.flow_edit_n_min, edit.flow_edit_n_max, edit.flow_edit_n_avg)
        result = SamplerResult()
        encoder_time = time.perf_counter() - start
        start_diffusion = time.perf_counter()
        steps = flow_edit_sample(
            self._branch(session, source, context),
            self._branch(session, target, context),
            plan.edit_source.to(self.dtype),
            schedule,
            window,
            draw,
            result,
            guidance_scale=req.guidance_scale if use_cfg else 1.0,
            cfg_interval=(req.cfg_interval_start, req.cfg_interval_end),
            velocity_norm_threshold=req.sampling.velocity_norm_threshold,
            velocity_ema_factor=req.sampling.velocity_ema_factor,
            should_stop=session.should_stop,
        )
        total = len(schedule) - 1
        for step in steps:
            yield StepProgress(step=step + 1, total=total)
        return result.latents, encoder_time, time.perf_counter() - start_diffusion

    def _repaint_injection(self, plan: TaskPlan, noise: torch.Tensor, total_steps: int, ratio: float = 0.5):
        """Re-impose the noised source outside the span after each of the first round(ratio·N) steps."""
        if plan.repaint_mask is None:
            return None
        limit = injection_steps(total_steps, ratio)
        clean, mask = plan.repaint_clean_src, plan.repaint_mask

        def inject(x: torch.Tensor, step: int, t_next: float) -> torch.Tensor:
            if step >= limit:
                return x
            return torch.where(mask, x, (t_next * noise + (1 - t_next) * clean).to(x.dtype))

        return inject


def _fit_length(latents: torch.Tensor, length: int, silence: torch.Tensor) -> torch.Tensor:
    if latents.shape[0] >= length:
        return latents[:length]
    return torch.cat([latents, silence[: length - latents.shape[0]].to(latents.dtype)], dim=0)


def _cat_kv(first, second):
    return [(torch.cat([k1, k2]), torch.cat([v1, v2])) for (k1, v1), (k2, v2) in zip(first, second, strict=True)]


def _paste_outside(
    latents: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor, frames: int = REPAINT_CROSSFADE_FRAMES
) -> torch.Tensor:
    """Keep the source bit-exact outside the repainted span; crossfade over the span's first/last ``frames``."""
    inside = mask[0, :, 0]
    positions = torch.nonzero(inside).flatten()
    start, end = int(positions[0]), int(positions[-1]) + 1
    weight = torch.ones(latents.shape[1], 1, dtype=torch.float32, device=latents.device)
    fade = min(frames, (end - start) // 2)
    if fade > 0:
        ramp = torch.arange(1, fade + 1, dtype=torch.float32, device=latents.device)[:, None] / (fade + 1)
        weight[start : start + fade] = ramp
        weight[end - fade : end] = ramp.flip(0)
    blended = (weight * latents.float() + (1 - weight) * clean.float()).to(latents.dtype)
    return torch.where(mask, blended, clean)
