"""Flow-matching samplers: turbo (distilled, no CFG) and base/sft (CFG via APG or ADG), as upstream 6d467e4.

Options (SamplingOptions): ode/sde, Euler/Heun, velocity norm clamp and EMA, DCW, custom timesteps.

Convention: x_t = t·noise + (1 − t)·x0, t = 1 is noise; the model predicts v ≈ noise − x0.
Samplers are generators that yield after every step so callers can stream progress and cancel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from acestep_client.errors import Cancelled

from .sampling_options import MAX_TIMESTEPS_TURBO as MAX_TURBO_TIMESTEPS
from .sampling_options import SamplingOptions

# velocity(x, t, step, use_cfg) -> v, or (v_cond, v_uncond) when use_cfg is True.
VelocityFn = Callable[[torch.Tensor, torch.Tensor, int, bool], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]
# post_step(x, step, t_next) -> x; used for repaint source injection.
PostStepFn = Callable[[torch.Tensor, int, float], torch.Tensor]
# sde_noise(x) -> fresh standard normal noise shaped like x (the engine draws it from per-item seeded generators).
NoiseFn = Callable[[torch.Tensor], torch.Tensor]

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


def check_stop(should_stop: Callable[[], bool]) -> None:
    if should_stop():
        raise Cancelled("synthesis cancelled between diffusion steps")


@dataclass
class SamplerResult:
    latents: torch.Tensor | None = None


def cfg_velocity(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain classifier-free guidance; upstream's Heun corrector uses it so APG momentum moves once per step."""
    return v_uncond + scale * (v_cond - v_uncond)


def clamp_velocity_norm(v: torch.Tensor, x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Scale each item's v so that ‖v‖ ≤ threshold·‖x‖ (norms over frames and channels)."""
    v_norm = torch.norm(v, dim=(1, 2), keepdim=True)
    x_norm = torch.norm(x, dim=(1, 2), keepdim=True) + 1e-10
    return v * torch.clamp(threshold * x_norm / (v_norm + 1e-10), max=1.0)


def _shape_velocity(
    v: torch.Tensor, x: torch.Tensor, mix_with: torch.Tensor | None, options: SamplingOptions
) -> torch.Tensor:
    """Norm clamp against x, then EMA with ``mix_with`` (the previous step's v, or the predictor's v)."""
    if options.velocity_norm_threshold > 0.0:
        v = clamp_velocity_norm(v, x, options.velocity_norm_threshold)
    if options.velocity_ema_factor > 0.0 and mix_with is not None:
        factor = options.velocity_ema_factor
        v = (1.0 - factor) * v + factor * mix_with
    return v


def _renoise(x0: torch.Tensor, t: float, noise: torch.Tensor) -> torch.Tensor:
    """SDE step: put the clean estimate back at noise level ``t`` with fresh noise."""
    return t * noise + (1 - t) * x0


VALID_TURBO_TIMESTEPS = sorted({t for shift in TURBO_SHIFTS for t in turbo_timesteps(shift)}, reverse=True)


def turbo_schedule(steps: int | None, shift: float, custom: Sequence[float] | None = None) -> list[float]:
    """Turbo timesteps (without the final 0), as upstream 6d467e4 picks them.

    A custom list wins: each value (float32, as upstream's handler sends it) maps to the nearest of the
    20 timesteps the model was distilled on, at most 20 steps. Else ``steps`` (1-8 through the API)
    steps of the linear schedule with the shift applied as given, not snapped. Without either, the
    distilled 8-step table of the nearest shift in {1, 2, 3}.
    """
    if custom:
        values = torch.tensor(list(custom)[:MAX_TURBO_TIMESTEPS], dtype=torch.float32).tolist()
        return [min(VALID_TURBO_TIMESTEPS, key=lambda valid, t=t: abs(valid - t)) for t in values]
    if steps is not None and steps > 0:
        n = min(int(steps), MAX_TURBO_TIMESTEPS)
        raw = [1.0 - i / n for i in range(n)]
        return [shifted(t, shift) for t in raw] if shift != 1.0 else raw
    return turbo_timesteps(shift)


def base_schedule(
    steps: int, shift: float, dtype: torch.dtype, device: torch.device | str, custom: Sequence[float] | None = None
) -> torch.Tensor:
    """Base/SFT timesteps including the final 0; a custom list is used as given (float32, then the model dtype)."""
    if custom:
        return torch.tensor([*custom, 0.0], dtype=torch.float32, device=device).to(dtype)
    return base_timesteps(steps, shift, dtype, device)


def turbo_sample(
    velocity: VelocityFn,
    noise: torch.Tensor,
    schedule: Sequence[float],
    result: SamplerResult,
    should_stop: Callable[[], bool] = lambda: False,
    post_step: PostStepFn | None = None,
    options: SamplingOptions | None = None,
    sde_noise: NoiseFn | None = None,
) -> Iterator[int]:
    """Turbo sampler: no CFG (distilled); the last step jumps straight to the clean estimate x − v·t.

    Per step, as upstream: velocity (norm clamp, EMA), then an ode Euler / Heun step or an sde re-noise,
    then DCW against x − v·t, then ``post_step`` (repaint injection).
    """
    options = options or SamplingOptions()
    dcw = options.dcw()
    draw = sde_noise or torch.randn_like
    times = torch.tensor(list(schedule), dtype=noise.dtype, device=noise.device)
    values = times.tolist()
    last = len(values) - 1
    x, previous = noise, None
    for step, t_now in enumerate(values):
        check_stop(should_stop)
        batch = x.shape[0]
        v = _shape_velocity(velocity(x, times[step].expand(batch), step, False), x, previous, options)
        x_before, v_first = x, v
        if step == last:
            x = x - v * times[step]
        else:
            t_next = values[step + 1]
            dt = torch.tensor(t_now - t_next, dtype=x.dtype, device=x.device)
            if options.infer_method == "sde":
                x = _renoise(x - v * times[step], t_next, draw(x))
            elif options.heun:
                x_pred = x - v * dt
                v2 = velocity(x_pred, times[step + 1].expand(batch), step, False)
                v = 0.5 * (v + _shape_velocity(v2, x_pred, v, options))
                x = x - v * dt
            else:
                x = x - v * dt
        if dcw is not None:
            x = dcw(x, x_before - v_first * times[step], t_now)
        previous = v
        if post_step is not None and step < last:
            x = post_step(x, step, values[step + 1])
        result.latents = x
        yield step
    result.latents = x


def guided_sample(
    velocity: VelocityFn,
    noise: torch.Tensor,
    schedule: torch.Tensor,
    guidance_scale: float,
    use_adg: bool,
    cfg_interval: tuple[float, float],
    result: SamplerResult,
    should_stop: Callable[[], bool] = lambda: False,
    post_step: PostStepFn | None = None,
    options: SamplingOptions | None = None,
    sde_noise: NoiseFn | None = None,
) -> Iterator[int]:
    """Base/SFT sampler over ``schedule`` (N+1 values ending at 0) with CFG (APG, or ADG on request).

    Heun's corrector guides with plain CFG (ADG when asked and t > 0), so APG momentum moves once per
    step. The sde re-noise level is the unshifted 1 − (k+1)/N whatever the schedule, as upstream.
    """
    options = options or SamplingOptions()
    dcw = options.dcw()
    draw = sde_noise or torch.randn_like
    values = schedule.tolist()
    steps = len(values) - 1
    apg = APGState(scale=guidance_scale)
    use_cfg = guidance_scale > 1.0

    def guide(out, x: torch.Tensor, t_value: float, corrector: bool) -> torch.Tensor:
        # Like the reference, the doubled [cond; uncond] batch runs on every step once CFG is on;
        # outside the cfg interval only the conditional half is used.
        if not use_cfg:
            return out
        v_cond, v_uncond = out
        if not cfg_interval[0] <= t_value <= cfg_interval[1]:
            return v_cond
        if use_adg and (not corrector or t_value > 0):
            return adg_velocity(x, v_cond, v_uncond, t_value, guidance_scale)
        if corrector:
            return cfg_velocity(v_cond, v_uncond, guidance_scale)
        return apg(v_cond, v_uncond)

    x, previous = noise, None
    for step in range(steps):
        check_stop(should_stop)
        t_now, t_next = values[step], values[step + 1]
        batch = x.shape[0]
        v = guide(velocity(x, schedule[step].expand(batch), step, use_cfg), x, t_now, False)
        v = _shape_velocity(v, x, previous, options)
        x_before, v_first = x, v
        if options.infer_method == "sde":
            t_next = 1.0 - (step + 1) / steps
            x = _renoise(x - v * schedule[step], t_next, draw(x))
        else:
            dt = schedule[step] - schedule[step + 1]
            if options.heun:
                x_pred = x - v * dt
                out = velocity(x_pred, schedule[step + 1].expand(batch), step, use_cfg)
                v2 = guide(out, x_pred, t_next, True)
                v = 0.5 * (v + _shape_velocity(v2, x_pred, v, options))
            x = x - v * dt
        if dcw is not None:
            x = dcw(x, x_before - v_first * schedule[step], t_now)
        previous = v
        if post_step is not None:  # after the last step too, as upstream's base loop (turbo's stops before it)
            x = post_step(x, step, t_next)
        result.latents = x
        yield step
    result.latents = x


def injection_steps(total_steps: int, ratio: float = 0.5) -> int:
    """Repaint source injection runs after the first round(ratio·N) updates (Python rounding, as upstream)."""
    return round(total_steps * ratio)
