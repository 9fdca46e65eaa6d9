"""What a request's sampler options ran as, where that differs from what they say: warnings, never silence.

Upstream changes two requests without a word, and we run them as upstream does (so the same request gives
upstream's audio) but say so in GenerationDone.warnings:
- ``sampler_mode="heun"`` with ``infer_method="sde"`` runs Euler steps (Heun is defined for the ODE only);
- ``timesteps`` on a turbo model run as the nearest of the 20 timesteps the model was distilled on.
"""

from __future__ import annotations

from .samplers import turbo_schedule
from .sampling_options import SamplingOptions

_SAME = 1e-6  # float32 rounding of a requested timestep is not a change worth a warning


def sampling_notes(options: SamplingOptions, is_turbo: bool) -> list[tuple[str, str]]:
    """(field, message) for each option that runs differently from how it reads; [] for most requests."""
    notes = []
    if options.sampler_mode == "heun" and options.infer_method == "sde":
        notes.append(("sampler_mode", "heun runs with infer_method=ode only; this sde request ran Euler steps "
                                      "(as upstream)"))
    custom = options.custom_schedule()
    if is_turbo and custom:
        ran = turbo_schedule(None, options.shift, custom)
        if any(abs(a - b) > _SAME for a, b in zip(ran, custom, strict=True)):
            shown = ", ".join(f"{t:.4g}" for t in ran)
            notes.append(("timesteps", f"a turbo model runs only the 20 timesteps it was distilled on: each value "
                                       f"ran as the nearest of them, [{shown}, 0] (as upstream)"))
    return notes
