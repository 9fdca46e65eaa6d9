"""Editing options of a synthesis request: retake, repaint strength, chunk-mask mode, cover noise, global caption.

Upstream 6d467e4's names and what its code computes (models/*/modeling_*.py generate_audio, core/generation/
handler/{generate_music,conditioning_masks,conditioning_text,repaint_step_injection}.py):

- retake_variance v (0-1) with retake_seed: the initial noise becomes cos(v·π/2)·noise(seed) +
  sin(v·π/2)·noise(retake seed), variance-preserving; v = 0 leaves the noise untouched, v = 1 is the retake
  seed's noise alone. Differs on purpose: upstream draws (and reports) random retake seeds when none is given,
  and for items after the first even when one is; here item i uses ``retake_seed + i``, or, with retake_seed
  -1, its own seed + 2^33, so a request is reproducible from its seeds alone.
- repaint_mode / repaint_strength: the fraction of sampler steps that inject the noised source outside the
  span is 1 (conservative), 0 (aggressive) or 1 − strength (balanced), as upstream's _resolve_repaint_config.
  Differs on purpose (this project's repaint rule): the region outside the span is always pasted back exactly
  after sampling, and the crossfade is inside the span (from the source into the new audio), not outside it
  over the source; its width is repaint_latent_crossfade_frames as requested (upstream accepts the field but
  derives the width from mode and strength instead: round(25·(1 − strength)), 25 conservative); aggressive
  crossfades nothing, as upstream.
- repaint_wav_crossfade_sec (0-1 s): after the VAE decode of a repaint not in "aggressive" mode, the audio outside
  the span is the source's own samples, ramped in over this many seconds just outside each edge (waveform_splice.py).
  Differs on purpose: the width is the value requested (0 = a hard cut); upstream ignores the field and uses
  0.05 s (conservative) or 0.05·(1 − strength) s (balanced). Past the source's end the decoded audio stays.
- chunk_mask_mode: "explicit" marks the span (1 inside, 0 outside), "auto" marks everything (upstream writes
  2.0 into a bool mask, which stores 1). Differs on purpose: the default is "explicit" (upstream: "auto"),
  so a repaint or lego request keeps the chunk mask it had before this option existed.
- cover_noise_strength s > 0: sampling starts at the schedule's timestep nearest 1 − s from
  t·noise + (1 − t)·src_latents, the schedule cut to start there; cover steps count from the cut schedule.
- global_caption: only on SFT-stems models (config is_lego_sft), where every caption is written as upstream
  trained them: "Global: {global}\\nLocal: {caption}\\nMask Control: true|false" ("Local:..." alone for a
  segment instruction); Mask Control is false with chunk_mask_mode "auto".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from acestep_client.constants import FLOW_EDIT_N_AVG_RANGE, FLOW_EDIT_N_RANGE, REPAINT_WAV_CROSSFADE_SEC_RANGE
from acestep_client.errors import InvalidArgument

from .sampling_options import check_range

REPAINT_MODES = ("conservative", "balanced", "aggressive")
CHUNK_MASK_MODES = ("explicit", "auto")
MAX_SEED = 2**32 - 1
RETAKE_SEED_OFFSET = 2**33  # unset retake_seed: item seed + this (sde re-noising uses + 2^32)
MAX_CROSSFADE_FRAMES = 100


@dataclass
class EditOptions:
    retake_seed: int = -1
    retake_variance: float = 0.0
    repaint_mode: str = "balanced"
    repaint_strength: float = 0.5
    repaint_latent_crossfade_frames: int = 10
    chunk_mask_mode: str = "explicit"
    cover_noise_strength: float = 0.0
    global_caption: str = ""
    repaint_wav_crossfade_sec: float = 0.0
    flow_edit_morph: bool = False
    flow_edit_source_caption: str = ""
    flow_edit_source_lyrics: str = ""
    flow_edit_n_min: float = 0.0
    flow_edit_n_max: float = 1.0
    flow_edit_n_avg: int = 1

    def validate(self) -> None:
        """Raise InvalidArgument naming the field and its allowed range."""
        seed = self.retake_seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not -1 <= seed <= MAX_SEED:
            raise InvalidArgument("retake_seed", f"allowed -1-{MAX_SEED}, got {seed!r}")
        check_range("retake_variance", self.retake_variance, 0.0, 1.0)
        _check_choice("repaint_mode", self.repaint_mode, REPAINT_MODES)
        check_range("repaint_strength", self.repaint_strength, 0.0, 1.0)
        _check_int("repaint_latent_crossfade_frames", self.repaint_latent_crossfade_frames, 0, MAX_CROSSFADE_FRAMES)
        _check_choice("chunk_mask_mode", self.chunk_mask_mode, CHUNK_MASK_MODES)
        check_range("cover_noise_strength", self.cover_noise_strength, 0.0, 1.0)
        for name in ("global_caption", "flow_edit_source_caption", "flow_edit_source_lyrics"):
            if not isinstance(getattr(self, name), str):
                raise InvalidArgument(name, f"allowed a string, got {type(getattr(self, name)).__name__}")
        check_range("repaint_wav_crossfade_sec", self.repaint_wav_crossfade_sec, *REPAINT_WAV_CROSSFADE_SEC_RANGE)
        if not isinstance(self.flow_edit_morph, bool):
            raise InvalidArgument("flow_edit_morph", f"allowed true or false, got {self.flow_edit_morph!r}")
        check_range("flow_edit_n_min", self.flow_edit_n_min, *FLOW_EDIT_N_RANGE)
        check_range("flow_edit_n_max", self.flow_edit_n_max, self.flow_edit_n_min, FLOW_EDIT_N_RANGE[1])
        _check_int("flow_edit_n_avg", self.flow_edit_n_avg, *FLOW_EDIT_N_AVG_RANGE)

    def retake_seeds(self, seeds: list[int]) -> list[int]:
        """One retake seed per item (see the module docstring)."""
        if self.retake_seed >= 0:
            return [self.retake_seed + index for index in range(len(seeds))]
        return [int(seed) + RETAKE_SEED_OFFSET for seed in seeds]

    def mix_retake(self, noise: torch.Tensor, retake_noise: torch.Tensor) -> torch.Tensor:
        """cos(v·π/2)·noise + sin(v·π/2)·retake_noise; the noise itself at v = 0."""
        if self.retake_variance <= 0.0:
            return noise
        angle = self.retake_variance * (math.pi / 2.0)
        return math.cos(angle) * noise + math.sin(angle) * retake_noise

    @property
    def injection_ratio(self) -> float:
        """Fraction of sampler steps that inject the noised source outside the repainted span."""
        if self.repaint_mode == "aggressive":
            return 0.0
        if self.repaint_mode == "conservative":
            return 1.0
        return 1.0 - self.repaint_strength

    @property
    def crossfade_frames(self) -> int:
        """Frames blended inside each edge of the span; aggressive blends none, as upstream."""
        return 0 if self.repaint_mode == "aggressive" else self.repaint_latent_crossfade_frames

    def cover_start(self, times: list[float]) -> int | None:
        """Index of the schedule value (times: the step start values) nearest 1 − cover_noise_strength, or None."""
        if self.cover_noise_strength <= 0.0:
            return None
        level = 1.0 - self.cover_noise_strength
        nearest = min(times, key=lambda t: abs(t - level))
        return times.index(nearest)


def lego_caption(caption: str, global_caption: str, instruction: str, chunk_mask_mode: str) -> str:
    """The caption block SFT-stems models were trained on (upstream conditioning_text.py)."""
    control = "Mask Control: false" if chunk_mask_mode == "auto" else "Mask Control: true"
    if "a segment" in instruction.lower():
        return f"Local: {caption}\n{control}"
    return f"Global: {global_caption}\nLocal: {caption}\n{control}"


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(name, f"allowed {low}-{high}, got {value!r}")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidArgument(name, f"allowed {', '.join(allowed)}, got {value!r}")


def edit_notes(edit: EditOptions, task_type: str, is_lego_sft: bool) -> list[tuple[str, str]]:
    """(field, message) for each editing option this request set but its task or model does not read."""
    notes = []
    if edit.global_caption and not is_lego_sft:
        notes.append(("global_caption", "only SFT-stems models (config is_lego_sft) read a global caption; this "
                                        "model ignored it (as upstream)"))
    defaults = EditOptions()
    repaint_fields = ("repaint_mode", "repaint_strength", "repaint_latent_crossfade_frames",
                      "repaint_wav_crossfade_sec")
    changed = [name for name in repaint_fields if getattr(edit, name) != getattr(defaults, name)]
    if changed and task_type != "repaint":
        notes.append((changed[0], f"{', '.join(changed)} apply to task_type=repaint only; this {task_type} request "
                                  f"ignored them (as upstream)"))
    elif edit.repaint_wav_crossfade_sec > 0.0 and edit.repaint_mode == "aggressive":
        notes.append(("repaint_wav_crossfade_sec", "an aggressive repaint splices no source samples in, so there was "
                                                   "nothing to crossfade (as upstream)"))
    if edit.chunk_mask_mode != defaults.chunk_mask_mode and task_type not in ("repaint", "lego"):
        notes.append(("chunk_mask_mode", f"the chunk mask marks everything on a {task_type} request either way; "
                                         f"chunk_mask_mode changed nothing"))
    return notes
