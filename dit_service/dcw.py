"""DCW: differential correction in the wavelet domain, applied after every sampler step.

Why: flow-matching samplers drift in signal-to-noise ratio against the timestep they believe they
are at (Yu et al., "Elucidating the SNR-t Bias of Diffusion Probabilistic Models", CVPR 2026,
arXiv:2604.16044). The correction pushes the new latent's wavelet band(s) away from the step's
clean estimate ``x̂₀ = x − v·t``. Upstream ACE-Step turned it on by default on 2026-04-23.

ACE-Step latents are [B, T, C] at 25 Hz, so the transform runs along T, in fp32, and the result is
cast back to the latent dtype. Per-step strengths, with t the step's current timestep:

- ``low``:    low band  += t·scaler·(x_L − x̂₀_L)
- ``high``:   high band += (1 − t)·scaler·(x_H − x̂₀_H)
- ``double``: both, low with t·scaler and high with (1 − t)·high_scaler
- ``pix``:    no transform, x += scaler·(x − x̂₀) (no t modulation)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .wavelets import dwt1d, idwt1d


@dataclass(frozen=True)
class DCWCorrection:
    mode: str = "double"
    scaler: float = 0.05
    high_scaler: float = 0.02
    wavelet: str = "haar"

    @property
    def active(self) -> bool:
        """Whether any step can change the latent (an inactive correction leaves the old path untouched)."""
        if self.mode == "double":
            return self.scaler != 0.0 or self.high_scaler != 0.0
        return self.scaler != 0.0

    def __call__(self, x_next: torch.Tensor, denoised: torch.Tensor, t: float) -> torch.Tensor:
        """Correct ``x_next`` [B, T, C] against ``denoised`` (the step's x̂₀) at current timestep ``t``."""
        if self.mode == "pix":
            return x_next if self.scaler == 0.0 else x_next + self.scaler * (x_next - denoised)
        low = t * self.scaler if self.mode in ("low", "double") else 0.0
        if self.mode == "high":
            high = (1.0 - t) * self.scaler
        elif self.mode == "double":
            high = (1.0 - t) * self.high_scaler
        else:
            high = 0.0
        if low == 0.0 and high == 0.0:
            return x_next
        length = x_next.shape[1]
        x_low, x_high = dwt1d(x_next.float().transpose(1, 2).contiguous(), self.wavelet)
        y_low, y_high = dwt1d(denoised.float().transpose(1, 2).contiguous(), self.wavelet)
        if low != 0.0:
            x_low = x_low + low * (x_low - y_low)
        if high != 0.0:
            x_high = x_high + high * (x_high - y_high)
        out = idwt1d(x_low, x_high, self.wavelet)[:, :, :length]
        return out.transpose(1, 2).contiguous().to(x_next.dtype)
