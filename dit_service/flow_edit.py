"""Flow edit (upstream #1156, in 6d467e4): morph an existing clip toward a new caption/lyrics.

Instead of denoising from noise, the edit integrates the difference of two velocities from the source
latents x_src: at each step of the window [n_min, n_max] of the schedule,

    z_src = (1 − t)·x_src + t·ε            (ε fresh per draw, from the item's generator)
    z_tar = z_edit + z_src − x_src
    Δv    = mean over n_avg draws of v_tar(z_tar) − v_src(z_src)
    z_edit ← z_edit + (t_next − t)·Δv

where v_src is conditioned on the source's caption/lyrics and v_tar on the request's. After n_max the target
alone Euler-denoises x_tar = z_edit + z_src − x_src (one more draw) to t = 0. Each branch keeps its own APG
momentum and its own previous velocity (for the EMA); within a step every draw starts from the same momentum
and the momentum then advances once, with the draws' mean guidance difference, as upstream. The velocity
norm clamp applies per draw, the EMA once per step on the mean.

Upstream's v1 runs Euler + APG only: DCW, Heun, ADG and sde are not applied (the server says so in warnings),
and turbo models run without CFG (CFG-distilled). The schedule is the linear one with ``shift`` (or the custom
timesteps as given, a final 0 implied) on every model, as upstream builds it for flow edit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from acestep_client.constants import FLOW_EDIT_TASKS

from .edit_options import EditOptions
from .samplers import APGState, SamplerResult, check_stop, clamp_velocity_norm
from .sampling_options import SamplingOptions

# velocity(x, t, guided) -> v, or (v_cond, v_uncond) when guided.
BranchVelocity = Callable[[torch.Tensor, torch.Tensor, bool], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]
NoiseDraw = Callable[[], torch.Tensor]  # a fresh standard normal [B, T, C], item i from its own generator


@dataclass
class FlowEditWindow:
    n_min: float = 0.0
    n_max: float = 1.0
    n_avg: int = 1

    def steps(self, total: int) -> tuple[int, int]:
        """(first edited step, first target-only step), truncated like upstream's ``int(total · n)``."""
        return int(total * self.n_min), int(total * self.n_max)


@dataclass
class _Branch:
    """One trajectory's guidance state: APG momentum and the previous step's velocity (for the EMA)."""

    velocity: BranchVelocity
    apg: APGState
    previous: torch.Tensor | None = None


def flow_edit_sample(
    source_velocity: BranchVelocity,
    target_velocity: BranchVelocity,
    source: torch.Tensor,
    schedule: torch.Tensor,
    window: FlowEditWindow,
    draw_noise: NoiseDraw,
    result: SamplerResult,
    guidance_scale: float = 1.0,
    cfg_interval: tuple[float, float] = (0.0, 1.0),
    velocity_norm_threshold: float = 0.0,
    velocity_ema_factor: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[int]:
    """Yield after every step of ``schedule`` (N+1 values ending at 0); ``result.latents`` holds the edit."""
    values = schedule.tolist()
    total = len(values) - 1
    first, stop = window.steps(total)
    use_cfg = guidance_scale > 1.0
    src = _Branch(source_velocity, APGState(scale=guidance_scale))
    tar = _Branch(target_velocity, APGState(scale=guidance_scale))
    batch = source.shape[0]
    edit = source.clone()
    x_tar: torch.Tensor | None = None
    result.latents = edit

    def guided(branch: _Branch, x: torch.Tensor, t: torch.Tensor, cfg_now: bool):
        """(velocity, cond − uncond or None) of one forward; APG moves the branch's momentum."""
        out = branch.velocity(x, t.expand(batch), use_cfg)
        if not use_cfg:
            return out, None
        v_cond, v_uncond = out
        if not cfg_now:
            return v_cond, None
        return branch.apg(v_cond, v_uncond), v_cond - v_uncond

    def clamp(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return clamp_velocity_norm(v, x, velocity_norm_threshold) if velocity_norm_threshold > 0.0 else v

    def smooth(branch: _Branch, v: torch.Tensor) -> torch.Tensor:
        if velocity_ema_factor > 0.0 and branch.previous is not None:
            v = (1.0 - velocity_ema_factor) * v + velocity_ema_factor * branch.previous
        branch.previous = v
        return v

    for step in range(total):
        if step < first:
            yield step
            continue
        check_stop(should_stop)
        t, t_value = schedule[step], values[step]
        cfg_now = use_cfg and cfg_interval[0] <= t_value <= cfg_interval[1]
        dt = (schedule[step + 1] - t).to(source.dtype)
        if step < stop:
            before = (src.apg.running, tar.apg.running)
            sums = [torch.zeros_like(edit), torch.zeros_like(edit)]
            diffs: list[torch.Tensor | None] = [None, None]
            for _ in range(window.n_avg):
                src.apg.running, tar.apg.running = before
                noise = draw_noise()
                z_src = (1.0 - t_value) * source + t_value * noise
                z_tar = edit + z_src - source
                for index, (branch, z) in enumerate(((src, z_src), (tar, z_tar))):
                    v, diff = guided(branch, z, t, cfg_now)
                    sums[index] = sums[index] + clamp(v, z)
                    if diff is not None:
                        diffs[index] = diff if diffs[index] is None else diffs[index] + diff
            for branch, pre, diff in zip((src, tar), before, diffs, strict=True):
                branch.apg.running = pre
                if diff is not None:  # one momentum update per step, with the draws' mean difference
                    mean = diff / window.n_avg
                    branch.apg.running = mean if pre is None else mean + branch.apg.momentum * pre
            v_src = smooth(src, sums[0] / window.n_avg)
            v_tar = smooth(tar, sums[1] / window.n_avg)
            edit = edit + dt * (v_tar - v_src)
            result.latents = edit
        else:
            if x_tar is None:
                noise = draw_noise()
                x_tar = edit + ((1.0 - t_value) * source + t_value * noise) - source
            v, _ = guided(tar, x_tar, t, cfg_now)
            x_tar = x_tar + dt * smooth(tar, clamp(v, x_tar))
            result.latents = x_tar
        yield step


def flow_edit_notes(
    edit: EditOptions, task_type: str, sampling: SamplingOptions, use_adg: bool
) -> list[tuple[str, str]]:
    """(field, message) for a flow edit that did not run, or options it does not apply; [] otherwise."""
    if not edit.flow_edit_morph:
        return []
    if task_type not in FLOW_EDIT_TASKS:
        return [("flow_edit_morph", f"a flow edit applies to task_type {', '.join(FLOW_EDIT_TASKS)}; this "
                                    f"{task_type} request ran without it (as upstream)")]
    skipped = [name for name, on in (("dcw_enabled", sampling.dcw_enabled), ("sampler_mode=heun", sampling.heun),
                                     ("infer_method=sde", sampling.infer_method == "sde"), ("use_adg", use_adg)) if on]
    if not skipped:
        return []
    return [(skipped[0].split("=")[0], f"a flow edit runs Euler steps with APG guidance: {', '.join(skipped)} did "
                                       f"not apply (as upstream's flow edit v1)")]
