"""Sampler options (upstream 6d467e4): defaults, each option's effect, DCW off = the plain path, range errors."""

from __future__ import annotations

import math

import pytest
import torch

from acestep_client.errors import InvalidArgument
from dit_service.dcw import DCWCorrection
from dit_service.engine import SynthesisRequest
from dit_service.samplers import (
    APGState,
    SamplerResult,
    base_schedule,
    guided_sample,
    shifted,
    turbo_sample,
    turbo_schedule,
)
from dit_service.sampling_options import SamplingOptions
from dit_service.wavelets import WAVELETS, dwt1d, filter_bank, idwt1d

# GenerationParams at upstream 6d467e4 (acestep/inference.py); shift is its REST/UI/CLI default.
UPSTREAM_DEFAULTS = {
    "shift": 3.0,
    "infer_method": "ode",
    "timesteps": None,
    "sampler_mode": "euler",
    "velocity_norm_threshold": 0.0,
    "velocity_ema_factor": 0.0,
    "dcw_enabled": True,
    "dcw_mode": "double",
    "dcw_scaler": 0.05,
    "dcw_high_scaler": 0.02,
    "dcw_wavelet": "haar",
}


def test_defaults_are_upstreams():
    options = SynthesisRequest().sampling
    assert {name: getattr(options, name) for name in UPSTREAM_DEFAULTS} == UPSTREAM_DEFAULTS
    assert options.dcw() == DCWCorrection("double", 0.05, 0.02, "haar")  # on by default since 2026-04-23


def test_turbo_schedule_follows_steps_unsnapped_shift_and_custom_list():
    # Upstream now honours inference_steps on turbo, with the shift as given (no snapping to 1/2/3).
    assert turbo_schedule(4, 2.5) == [shifted(t, 2.5) for t in (1.0, 0.75, 0.5, 0.25)]
    assert turbo_schedule(8, 3.0) == [1.0, 0.9545454545454546, 0.9, 0.8333333333333334, 0.75,
                                      0.6428571428571429, 0.5, 0.3]
    # A custom list maps each value to the nearest timestep the model was distilled on.
    custom = [0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085]
    assert turbo_schedule(8, 3.0, custom) == [0.9545454545454546, 0.7692307692307693, 0.625, 0.5, 0.4, 0.3,
                                              0.2222222222222222, 0.125]


def test_custom_timesteps_set_the_step_count(turbo_engine, base_engine):
    timesteps = [0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0]
    for engine in (turbo_engine, base_engine):
        req = SynthesisRequest(inference_steps=4, sampling=SamplingOptions(timesteps=timesteps))
        assert engine.diffusion_steps(req) == 8
    # The final 0 is implied: both spellings run the same base schedule.
    with_zero = base_schedule(8, 3.0, torch.float32, "cpu", SamplingOptions(timesteps=[0.9, 0.5, 0]).custom_schedule())
    without = base_schedule(8, 3.0, torch.float32, "cpu", SamplingOptions(timesteps=[0.9, 0.5]).custom_schedule())
    assert torch.equal(with_zero, without) and with_zero.tolist()[-1] == 0.0


@pytest.mark.parametrize("wavelet", WAVELETS)
def test_wavelet_transform_reconstructs_the_signal(wavelet):
    bank = filter_bank(wavelet)
    assert math.isclose(sum(bank["dec_lo"]), math.sqrt(2), rel_tol=1e-9)
    assert math.isclose(sum(h * h for h in bank["dec_lo"]), 1.0, rel_tol=1e-9)
    for length in (17, 250):
        x = torch.randn(2, 4, length, generator=torch.Generator().manual_seed(length))
        low, high = dwt1d(x, wavelet)
        assert low.shape == high.shape == (2, 4, (length + len(bank["dec_lo"]) - 1) // 2)
        torch.testing.assert_close(idwt1d(low, high, wavelet)[..., :length], x, atol=2e-6, rtol=0)


def test_dcw_pushes_away_from_the_clean_estimate():
    generator = torch.Generator().manual_seed(0)
    x, denoised = torch.randn(2, 50, 4, generator=generator), torch.randn(2, 50, 4, generator=generator)
    pix = DCWCorrection("pix", 0.1)
    torch.testing.assert_close(pix(x, denoised, 0.7), x + 0.1 * (x - denoised))
    # low mode at t = 1 moves only the low band, by t·scaler·(x_L − y_L).
    low = DCWCorrection("low", 0.1)(x, denoised, 1.0)
    (xl, xh), (yl, _) = dwt1d(x.transpose(1, 2), "haar"), dwt1d(denoised.transpose(1, 2), "haar")
    expected = idwt1d(xl + 0.1 * (xl - yl), xh, "haar").transpose(1, 2)
    torch.testing.assert_close(low, expected)
    # Nothing to correct when the step already sits on its clean estimate (turbo's last step).
    torch.testing.assert_close(DCWCorrection()(x, x, 0.3), x, atol=2e-6, rtol=0)


def _toy_velocity():
    """A deterministic nonlinear stand-in for the DiT (elementwise, so no kernel choice changes its rounding)."""

    def velocity(x, t, step, guided):
        v = torch.tanh(0.7 * x + 0.3 * x.roll(1, dims=1) + t[:, None, None])
        return (v, 0.5 * v + 0.1) if guided else v

    return velocity


def test_dcw_off_is_the_plain_euler_path_bit_for_bit():
    velocity = _toy_velocity()
    noise = torch.randn(2, 30, 4, generator=torch.Generator().manual_seed(1))
    off = SamplingOptions(dcw_enabled=False)

    schedule = turbo_schedule(8, 3.0)
    result = SamplerResult()
    list(turbo_sample(velocity, noise, schedule, result, options=off))
    times = torch.tensor(schedule)
    values, x = times.tolist(), noise  # steps in the model dtype, as the reference
    for step, t in enumerate(values):
        v = velocity(x, times[step].expand(2), step, False)
        x = x - v * times[step] if step == 7 else x - v * torch.tensor(t - values[step + 1])
    assert torch.equal(result.latents, x)

    schedule = base_schedule(6, 3.0, torch.float32, "cpu")
    list(guided_sample(velocity, noise, schedule, 7.0, False, (0.0, 1.0), result, options=off))
    apg, x = APGState(scale=7.0), noise
    for step in range(6):
        x = x - apg(*velocity(x, schedule[step].expand(2), step, True)) * (schedule[step] - schedule[step + 1])
    assert torch.equal(result.latents, x)


OPTION_CHANGES = {
    "dcw_enabled": {"dcw_enabled": False},
    "dcw_mode": {"dcw_mode": "pix"},
    "dcw_scaler": {"dcw_scaler": 0.1},
    "dcw_high_scaler": {"dcw_high_scaler": 0.08},
    "dcw_wavelet": {"dcw_wavelet": "db4"},
    "shift": {"shift": 1.5},
    "infer_method": {"infer_method": "sde"},
    "timesteps": {"timesteps": [1.0, 0.75, 0.5, 0.25]},
    "sampler_mode": {"sampler_mode": "heun"},
    "velocity_norm_threshold": {"velocity_norm_threshold": 0.3},
    "velocity_ema_factor": {"velocity_ema_factor": 0.3},
}


@pytest.fixture(scope="module")
def default_latents(turbo_engine, base_engine):
    return {
        "turbo": turbo_engine.sample_latents(SynthesisRequest(caption="folk", duration=10, seeds=[4])),
        "base": base_engine.sample_latents(SynthesisRequest(caption="folk", duration=10, seeds=[4],
                                                            inference_steps=4)),
    }


@pytest.mark.parametrize("kind", ["turbo", "base"])
@pytest.mark.parametrize("option", sorted(OPTION_CHANGES))
def test_each_option_changes_the_output(turbo_engine, base_engine, default_latents, kind, option):
    engine, steps = (turbo_engine, 8) if kind == "turbo" else (base_engine, 4)
    req = SynthesisRequest(caption="folk", duration=10, seeds=[4], inference_steps=steps,
                           sampling=SamplingOptions(**OPTION_CHANGES[option]))
    latents = engine.sample_latents(req)
    assert torch.isfinite(latents).all()
    assert (latents - default_latents[kind]).abs().max() > 1e-3


def test_sde_is_reproducible_and_independent_of_batch_position(turbo_engine):
    sde = SamplingOptions(infer_method="sde")
    alone = turbo_engine.sample_latents(SynthesisRequest(duration=10, seeds=[5], sampling=sde))
    again = turbo_engine.sample_latents(SynthesisRequest(duration=10, seeds=[5], sampling=sde))
    batch = turbo_engine.sample_latents(SynthesisRequest(duration=10, seeds=[6, 5], sampling=sde))
    assert torch.equal(alone, again)
    torch.testing.assert_close(batch[1:], alone, atol=1e-5, rtol=0)
    assert (batch[0] - batch[1]).abs().max() > 1e-2


BAD_OPTIONS = [
    ("shift", {"shift": 0.5}),
    ("shift", {"shift": 5.5}),
    ("infer_method", {"infer_method": "ddim"}),
    ("sampler_mode", {"sampler_mode": "rk4"}),
    ("velocity_norm_threshold", {"velocity_norm_threshold": -0.1}),
    ("velocity_norm_threshold", {"velocity_norm_threshold": 5.5}),
    ("velocity_ema_factor", {"velocity_ema_factor": 0.6}),
    ("velocity_ema_factor", {"velocity_ema_factor": float("nan")}),
    ("dcw_enabled", {"dcw_enabled": "yes"}),
    ("dcw_mode", {"dcw_mode": "mid"}),
    ("dcw_scaler", {"dcw_scaler": 0.2}),
    ("dcw_high_scaler", {"dcw_high_scaler": -0.01}),
    ("dcw_wavelet", {"dcw_wavelet": "db8"}),
    ("timesteps", {"timesteps": "0.9,0.5,0"}),
    ("timesteps", {"timesteps": [1.2, 0.5]}),
    ("timesteps", {"timesteps": [0.5, 0.7, 0]}),
    ("timesteps", {"timesteps": [0.5, 0, 0]}),
    ("timesteps", {"timesteps": [0]}),
    ("timesteps", {"timesteps": [1 - k / 21 for k in range(21)]}),  # 21 steps: turbo allows 20
]


@pytest.mark.parametrize(("field", "options"), BAD_OPTIONS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_OPTIONS)])
def test_out_of_range_options_name_the_field(turbo_engine, field, options):
    with pytest.raises(InvalidArgument) as error:
        turbo_engine.validate(SynthesisRequest(sampling=SamplingOptions(**options)))
    assert error.value.field == field
    assert "allowed" in str(error.value)


def test_base_allows_longer_custom_schedules(base_engine):
    base_engine.validate(SynthesisRequest(sampling=SamplingOptions(timesteps=[1 - k / 21 for k in range(21)])))
