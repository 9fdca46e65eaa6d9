"""Per-request sampler options, with upstream ACE-Step's names, defaults and ranges (6d467e4, 2026-06-26).

Why a separate dataclass: these knobs only change the diffusion loop, so the engine takes them as
one value (``SynthesisRequest.sampling``), and the API layer builds it from GenerationParams with
``fields_from(SamplingOptions, params)`` once the proto carries the fields.

Field (default; allowed): what it does.

- shift (3.0; 1.0-5.0): timestep shift t' = s·t / (1 + (s−1)·t). 3.0 is upstream's REST/UI/CLI default
  (its Python GenerationParams says 1.0). Turbo applies it unsnapped to inference_steps steps.
- infer_method ("ode"; ode, sde): sde predicts x̂₀ = x − v·t, then re-noises it to the next timestep.
- timesteps (None; 1-20 steps on turbo, 1-200 on base, values 0-1, strictly decreasing): a custom
  schedule that overrides inference_steps and shift. Turbo maps each value to the nearest of the 20
  timesteps it was distilled on.
- sampler_mode ("euler"; euler, heun): heun evaluates the model again at the next timestep and averages
  the two velocities (ode only; with sde it runs Euler, as upstream).
- velocity_norm_threshold (0.0; 0-5): > 0 scales v down so that ‖v‖ ≤ threshold·‖x‖ per item.
- velocity_ema_factor (0.0; 0-0.5): > 0 mixes v ← (1−f)·v + f·v_previous_step.
- dcw_enabled (True): the wavelet-domain SNR-t correction after each step (see dcw.py).
- dcw_mode ("double"; low, high, double, pix): which band(s) the correction moves.
- dcw_scaler (0.05; 0-0.1): low-band strength (the only strength in low/high/pix modes).
- dcw_high_scaler (0.02; 0-0.1): high-band strength in double mode.
- dcw_wavelet ("haar"; haar, db2, db4, sym4, sym8, coif2): the wavelet basis.

Ranges are those of upstream's UI (its Python API checks none). Where we differ on purpose:
``timesteps`` must decrease strictly and stay within the step limits (upstream truncates turbo
lists to 20 values); a trailing 0 is implied, as upstream's UI appends it, so ``[0.9, 0.5]`` and
``[0.9, 0.5, 0]`` run the same schedule; sde noise is drawn from per-item generators seeded from
the request's seeds (upstream draws unseeded noise, so its sde runs are not reproducible);
``dcw_wavelet`` is one of the six bases upstream's UI offers (its Python API takes any PyWavelets name).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from acestep_client.constants import (  # one definition of the ranges, shared with the SDK's validation
    DCW_HIGH_SCALER_RANGE,
    DCW_MODES,
    DCW_SCALER_RANGE,
    DCW_WAVELETS,
    INFER_METHODS,
    MAX_TIMESTEPS_BASE,
    MAX_TIMESTEPS_TURBO,
    SAMPLER_MODES,
    SHIFT_RANGE,
    VELOCITY_EMA_FACTOR_RANGE,
    VELOCITY_NORM_THRESHOLD_RANGE,
)
from acestep_client.errors import InvalidArgument

from .dcw import DCWCorrection


@dataclass
class SamplingOptions:
    shift: float = 3.0
    infer_method: str = "ode"
    timesteps: Sequence[float] | None = None
    sampler_mode: str = "euler"
    velocity_norm_threshold: float = 0.0
    velocity_ema_factor: float = 0.0
    dcw_enabled: bool = True
    dcw_mode: str = "double"
    dcw_scaler: float = 0.05
    dcw_high_scaler: float = 0.02
    dcw_wavelet: str = "haar"

    def validate(self, is_turbo: bool) -> None:
        """Raise InvalidArgument naming the field and its allowed range; no model work happens before this."""
        check_range("shift", self.shift, *SHIFT_RANGE)
        _check_choice("infer_method", self.infer_method, INFER_METHODS)
        _check_choice("sampler_mode", self.sampler_mode, SAMPLER_MODES)
        check_range("velocity_norm_threshold", self.velocity_norm_threshold, *VELOCITY_NORM_THRESHOLD_RANGE)
        check_range("velocity_ema_factor", self.velocity_ema_factor, *VELOCITY_EMA_FACTOR_RANGE)
        if not isinstance(self.dcw_enabled, bool):
            raise InvalidArgument("dcw_enabled", f"allowed true or false, got {self.dcw_enabled!r}")
        _check_choice("dcw_mode", self.dcw_mode, DCW_MODES)
        check_range("dcw_scaler", self.dcw_scaler, *DCW_SCALER_RANGE)
        check_range("dcw_high_scaler", self.dcw_high_scaler, *DCW_HIGH_SCALER_RANGE)
        _check_choice("dcw_wavelet", self.dcw_wavelet, DCW_WAVELETS)
        if self.timesteps is not None:
            _check_timesteps(self.timesteps, MAX_TIMESTEPS_TURBO if is_turbo else MAX_TIMESTEPS_BASE)

    def custom_schedule(self) -> list[float] | None:
        """The requested timesteps as floats, trailing zeros dropped (the samplers add the final 0 back)."""
        if self.timesteps is None:
            return None
        values = [float(t) for t in self.timesteps]
        while values and values[-1] == 0.0:
            values.pop()
        return values

    def dcw(self) -> DCWCorrection | None:
        """The DCW correction to run, or None when disabled or all its strengths are 0 (the plain path)."""
        if not self.dcw_enabled:
            return None
        correction = DCWCorrection(self.dcw_mode, self.dcw_scaler, self.dcw_high_scaler, self.dcw_wavelet)
        return correction if correction.active else None

    @property
    def heun(self) -> bool:
        """Heun runs only with the ode method; upstream falls back to Euler for sde."""
        return self.sampler_mode == "heun" and self.infer_method == "ode"


def check_range(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidArgument(name, f"allowed {low:g}-{high:g}, got {value!r}")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidArgument(name, f"allowed {', '.join(allowed)}, got {value!r}")


def _check_timesteps(timesteps: object, max_steps: int) -> None:
    if isinstance(timesteps, (str, bytes)) or not isinstance(timesteps, Sequence):
        raise InvalidArgument("timesteps", f"allowed a list of numbers in 0-1, got {timesteps!r}")
    values = []
    for value in timesteps:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidArgument("timesteps", f"allowed numbers in 0-1, got {value!r}")
        if not 0.0 <= value <= 1.0:
            raise InvalidArgument("timesteps", f"allowed values in 0-1, got {value!r}")
        values.append(float(value))
    if any(later >= earlier for earlier, later in itertools.pairwise(values)):
        raise InvalidArgument("timesteps", f"allowed strictly decreasing values, got {list(timesteps)!r}")
    steps = len(values) - (1 if values and values[-1] == 0.0 else 0)
    if not 1 <= steps <= max_steps:
        raise InvalidArgument("timesteps", f"allowed 1-{max_steps} steps (values above the final 0), got {steps}")
