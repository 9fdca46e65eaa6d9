"""Per-request output post-processing, with upstream ACE-Step's names, defaults and ranges (6d467e4).

What upstream does, in its order (handler decode, then inference.generate_music), and where we do it:

1. latent_rescale / latent_shift (1.0 / 0.0; 0.5-1.5 / -0.2-0.2): ``latents * rescale + shift`` on the
   final DiT latents, before the VAE. Here too: :meth:`OutputOptions.apply_to_latents`, once, before the
   first window is decoded.
2. The clip guard: an item whose decoded peak exceeds 1.0 is divided by its peak.
3. enable_normalization / normalization_db (True / -1.0; -10-0 dBFS): peak normalisation of each item to
   ``10 ** (db / 20)``, skipped when the (clip-guarded) peak is below 1e-6.
4. fade_in_duration / fade_out_duration (0 / 0 s; 0-10): linear ramps over the first / last
   ``round(seconds * 48000)`` samples (0 → 1 and 1 → 0, both ends included), applied after normalisation.

The audio streams window by window (vae_decode.py), so 2-4 cannot wait for the whole item. Fades are
linear gains that depend only on a sample's position and the item's length (known before decoding: latent
frames × hop), so each window is faded as it streams (:meth:`Fades.window`). 2 and 3 are one scalar per
item that needs the peak of the whole item, known only after its last window: the streamed samples carry the
fades but not that scalar, and ItemDone.gain carries it (:meth:`OutputOptions.gain`). Because fades and the
gain are both multiplications, ``gain × faded`` equals upstream's ``fade(normalise(clip_guard(x)))``; the
peak behind the gain is that of the unfaded audio, as upstream normalises before it fades.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from acestep_client import constants as c
from acestep_client.errors import InvalidArgument
from acestep_client.validation import check_range

from .vae_decode import peak_normalisation_gain

NORMALIZATION_FLOOR = 1e-6  # upstream leaves an item this quiet as it is rather than lift noise to full scale


@dataclass
class OutputOptions:
    fade_in_duration: float = 0.0
    fade_out_duration: float = 0.0
    enable_normalization: bool = True
    normalization_db: float = -1.0
    latent_shift: float = 0.0
    latent_rescale: float = 1.0

    def validate(self) -> None:
        """InvalidArgument naming the field and its range (the SDK's rules, for callers of the engine itself)."""
        check_range("fade_in_duration", self.fade_in_duration, *c.FADE_DURATION_RANGE)
        check_range("fade_out_duration", self.fade_out_duration, *c.FADE_DURATION_RANGE)
        if not isinstance(self.enable_normalization, bool):
            raise InvalidArgument("enable_normalization", f"must be true or false, got {self.enable_normalization!r}")
        check_range("normalization_db", self.normalization_db, *c.NORMALIZATION_DB_RANGE)
        check_range("latent_shift", self.latent_shift, *c.LATENT_SHIFT_RANGE)
        check_range("latent_rescale", self.latent_rescale, *c.LATENT_RESCALE_RANGE)

    def apply_to_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Upstream's latent post-processing; the very same tensor when both are at their no-op values."""
        if self.latent_shift == 0.0 and self.latent_rescale == 1.0:
            return latents
        return latents * self.latent_rescale + self.latent_shift

    def gain(self, peak: float) -> float:
        """The one factor an item's (faded) streamed samples are multiplied by: clip guard, then normalisation.

        ``peak`` is the item's peak before fades. Clip guard alone: 1 / max(peak, 1). With normalisation the
        product of both is target / peak, unless the guarded peak is under the floor (then the guard alone).
        """
        guard = peak_normalisation_gain(peak)
        if not self.enable_normalization or peak * guard < NORMALIZATION_FLOOR:
            return guard
        return 10.0 ** (self.normalization_db / 20.0) / peak

    def fades(self, num_samples: int, sample_rate: int) -> Fades | None:
        """The fades of an item of ``num_samples`` samples, or None when there are none."""
        fade_in = round(self.fade_in_duration * sample_rate)
        fade_out = round(self.fade_out_duration * sample_rate)
        if fade_in <= 0 and fade_out <= 0:
            return None
        return Fades(num_samples, min(max(fade_in, 0), num_samples), min(max(fade_out, 0), num_samples))


@dataclass(frozen=True)
class Fades:
    """Linear fade-in over samples [0, fade_in) and fade-out over [total - fade_out, total), as upstream's
    ``linspace(0, 1, n)`` / ``linspace(1, 0, n)`` ramps (a one-sample ramp is a single 0)."""

    total: int
    fade_in: int
    fade_out: int

    def window(self, start: int, length: int) -> torch.Tensor | None:
        """float32 gains for samples [start, start + length), or None when the window lies outside both ramps."""
        end = start + length
        touches_in = start < self.fade_in
        out_start = self.total - self.fade_out
        touches_out = self.fade_out > 0 and end > out_start
        if not (touches_in or touches_out):
            return None
        position = torch.arange(start, end, dtype=torch.float64)
        gains = torch.ones(length, dtype=torch.float64)
        if touches_in:
            ramp = position / max(self.fade_in - 1, 1)
            gains = torch.where(position < self.fade_in, gains * ramp, gains)
        if touches_out:
            ramp = 1.0 - (position - out_start) / max(self.fade_out - 1, 1)
            gains = torch.where(position >= out_start, gains * ramp, gains)
        return gains.to(torch.float32)

    def apply(self, audio: torch.Tensor, start: int) -> torch.Tensor:
        """``audio`` [..., n] (samples ``start`` onwards) with the fades applied; unchanged outside them."""
        gains = self.window(start, audio.shape[-1])
        return audio if gains is None else audio * gains.to(audio.device)

