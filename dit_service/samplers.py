"""Flow-matching samplers: turbo (fixed 8-step shifted schedule) and base/sft (Euler + CFG via APG or ADG).

Convention: x_t = t·noise + (1 − t)·x0, t = 1 is noise; the model predicts v ≈ noise − x0.
Samplers are generators that yield after every step so callers can stream progress and cancel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from acestep_client.errors import Cancelled

# velocity(x, t, step, use_cfg) -> v, or (v_cond, v_uncond) when use_cfg is True.
VelocityFn = Callable[[torch.Tensor, torch.Tensor, int, bool], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]
# post_step(x, step, t_next) -> x; used for repaint source injection.
PostStepFn = Callable[[torch.Tensor, int, float], torch.Tensor]

TURBO_STEPS = 8
TURBO_SHIFTS = (1, 2, 3)


def snap_turbo_shift(shift: float) -> int:
    """Turbo checkpoints were distilled on shifts 1, 2, 3: snap to the nearest, ties to the lower."""
    return min(TURBO_SHIFTS, key=lambda s: (abs(s - shift), s))


def shifted(t: float, shift: float) -> float:
    return shift * t / (1 + (shift - 1) * t)


def turbo_timesteps(shift: float) -> list[float]:
    """The 8 predefined turbo timesteps (float64), from 1 down to shift-mapped 1/8."""
    snapped = snap_turbo_shift(shift)
    return [shifted(1 - k / TURBO_STEPS, snapped) for k in range(TURBO_STEPS)]


def base_timesteps(steps: int, shift: float, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """N+1 timesteps from 1 to 0, computed in the model dtype like the reference (bf16 linspace matters)."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=dtype, device=device)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    return t


@dataclass
class APGState:
    """Adaptive projected guidance along the time axis (dim 1) with a momentum buffer per generation."""

    scale: float
    momentum: float = -0.75
    norm_threshold: float = 2.5
    eta: float = 0.0
    running: torch.Tensor | None = None

    def __call__(self, v_cond: torch.Tensor, v_uncond: torch.Tensor) -> torch.Tensor:
        diff = v_cond - v_uncond
        self.running = diff if self.running is None else diff + self.momentum * self.running
        diff = self.running
        norm = diff.norm(p=2, dim=1, keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(norm), self.norm_threshold / norm)
        d64, c64 = diff.double(), v_cond.double()
        unit = torch.nn.functional.normalize(c64, dim=1)
        parallel = (d64 * unit).sum(dim=1, keepdim=True) * unit
        orthogonal = (d64 - parallel).to(diff.dtype)
        return v_cond + (self.scale - 1) * (orthogonal + self.eta * parallel.to(diff.dtype))


def adg_velocity(
    x: torch.Tensor, v_cond: torch.Tensor, v_uncond: torch.Tensor, sigma: float, scale: float
) -> torch.Tensor:
    """Adaptive dual guidance: rotate the conditional clean estimate away from the unconditional one.

    Precision follows the reference: clean estimates in the latent dtype, angles in float64, the
    perpendicular component in float32, the result cast back to the latent dtype.
    """
    omega = max(scale - 1.0, 0.0) + 1e-3
    sigma_t = torch.tensor(sigma, dtype=x.dtype, device=x.device)
    x0_c = x - sigma_t * v_cond
    x0_u = x - sigma_t * v_uncond
    delta = x0_c - x0_u
    c64, u64 = x0_c.double(), x0_u.double()
    unit_c = c64 / torch.linalg.norm(c64, dim=-1, keepdim=True)
    unit_u = u64 / torch.linalg.norm(u64, dim=-1, keepdim=True)
    cos_theta = (unit_c * unit_u).sum(-1, keepdim=True).clamp(-1 + 1e-6, 1 - 1e-6)
    theta = torch.acos(cos_theta)
    theta_new = (omega * theta).clamp(-3.14 / 6, 3.14 / 6)
    delta32, u32 = delta.float(), x0_u.float()
    proj = (delta32 * u32).sum(-1, keepdim=True) / ((u32 * u32).sum(-1, keepdim=True) + 1e-8) * u32
    perp = delta32 - proj
    sin_theta = torch.sin(theta)
    # torch.where instead of the reference's mask products: identical unless sin θ == 0, where the
    # reference produces NaN and this falls back to the small-angle branch.
    rotated = perp * torch.sin(theta_new) / torch.where(sin_theta > 1e-3, sin_theta, torch.ones_like(sin_theta))
    perp_new = torch.where(sin_theta > 1e-3, rotated, perp * omega)
    x_new = torch.cos(theta_new) * x0_c + perp_new
    return ((x - x_new) / sigma_t).to(x.dtype)


def _check_stop(should_stop: Callable[[], bool]) -> None:
    if should_stop():
        raise Cancelled("synthesis cancelled between diffusion steps")


@dataclass
class SamplerResult:
    latents: torch.Tensor | None = None


def turbo_sample(
    velocity: VelocityFn,
    noise: torch.Tensor,
    shift: float,
    result: SamplerResult,
    should_stop: Callable[[], bool] = lambda: False,
    post_step: PostStepFn | None = None,
) -> Iterator[int]:
    """Fixed 8-step Euler; the last step jumps straight to the clean estimate x − v·t. No CFG (distilled)."""
    schedule = torch.tensor(turbo_timesteps(shift), dtype=noise.dtype, device=noise.device)
    values = schedule.tolist()
    x = noise
    for step, t_value in enumerate(values):
        _check_stop(should_stop)
        t = schedule[step].expand(x.shape[0])
        v = velocity(x, t, step, False)
        if step == len(values) - 1:
            x = x - v * schedule[step]
        else:
            dt = torch.tensor(t_value - values[step + 1], dtype=x.dtype, device=x.device)
            x = x - v * dt
            if post_step is not None:
                x = post_step(x, step, values[step + 1])
        result.latents = x
        yield step
    result.latents = x


def guided_sample(
    velocity: VelocityFn,
    noise: torch.Tensor,
    steps: int,
    shift: float,
    guidance_scale: float,
    use_adg: bool,
    cfg_interval: tuple[float, float],
    result: SamplerResult,
    should_stop: Callable[[], bool] = lambda: False,
    post_step: PostStepFn | None = None,
) -> Iterator[int]:
    """Base/SFT Euler sampler with CFG (APG by default, ADG on request) inside the cfg interval."""
    schedule = base_timesteps(steps, shift, noise.dtype, noise.device)
    values = schedule.tolist()
    apg = APGState(scale=guidance_scale)
    use_cfg = guidance_scale > 1.0
    x = noise
    for step in range(steps):
        _check_stop(should_stop)
        t_value = values[step]
        t = schedule[step].expand(x.shape[0])
        # Like the reference, the doubled [cond; uncond] batch runs on every step once CFG is on;
        # outside the cfg interval only the conditional half is used.
        out = velocity(x, t, step, use_cfg)
        if not use_cfg:
            v = out
        elif cfg_interval[0] <= t_value <= cfg_interval[1]:
            v_cond, v_uncond = out
            v = adg_velocity(x, v_cond, v_uncond, t_value, guidance_scale) if use_adg else apg(v_cond, v_uncond)
        else:
            v = out[0]
        x = x - v * (schedule[step] - schedule[step + 1])
        if post_step is not None and step < steps - 1:
            x = post_step(x, step, values[step + 1])
        result.latents = x
        yield step
    result.latents = x


def injection_steps(total_steps: int, ratio: float = 0.5) -> int:
    """Repaint source injection runs after the first round(ratio·N) updates (Python rounding, as upstream)."""
    return round(total_steps * ratio)
