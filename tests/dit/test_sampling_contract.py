"""The DiT service takes the sampler options from the request's GenerationParams: same names, defaults and ranges
as the engine's SamplingOptions (the source of truth), refusals naming the field, and notes where upstream's
behaviour differs from what a request reads as."""

from __future__ import annotations

import dataclasses

import pytest

from acestep_client import GenerationParams
from acestep_client import constants as c
from acestep_client.convert import params_to_proto
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import dit_pb2
from dit_service import sampling_options as so
from dit_service.sampling_notes import sampling_notes
from dit_service.sampling_options import SamplingOptions
from dit_service.server import engine_request
from dit_service.wavelets import WAVELETS


def test_the_api_fields_are_the_engines_options_with_the_same_defaults_and_ranges():
    names = [f.name for f in dataclasses.fields(SamplingOptions)]
    assert {name: getattr(GenerationParams(), name) for name in names} == dataclasses.asdict(SamplingOptions())
    for name in ("SHIFT_RANGE", "INFER_METHODS", "SAMPLER_MODES", "VELOCITY_NORM_THRESHOLD_RANGE",
                 "VELOCITY_EMA_FACTOR_RANGE", "DCW_MODES", "DCW_SCALER_RANGE", "DCW_HIGH_SCALER_RANGE",
                 "DCW_WAVELETS", "MAX_TIMESTEPS_TURBO", "MAX_TIMESTEPS_BASE"):
        assert getattr(c, name) == getattr(so, name), name
    assert c.DCW_WAVELETS == WAVELETS  # every wavelet the API offers has its filters in the DiT


def _request(**fields) -> dit_pb2.SynthesizeRequest:
    return dit_pb2.SynthesizeRequest(params=params_to_proto(GenerationParams(caption="x", **fields)), seeds=[1])


def test_the_request_reaches_the_engine_as_sampling_options():
    sent = {"shift": 2.0, "infer_method": "sde", "timesteps": [0.9, 0.5, 0.0], "sampler_mode": "heun",
            "velocity_norm_threshold": 1.5, "velocity_ema_factor": 0.2, "dcw_enabled": False, "dcw_mode": "low",
            "dcw_scaler": 0.01, "dcw_high_scaler": 0.03, "dcw_wavelet": "coif2"}
    req = engine_request(_request(**sent), max_batch=8, codebook_size=64_000)
    assert dataclasses.asdict(req.sampling) == sent
    assert engine_request(_request(), 8, 64_000).sampling == SamplingOptions()  # unset: upstream's defaults


@pytest.mark.parametrize(("field", "value"), [("shift", 9.0), ("dcw_wavelet", "db3"), ("infer_method", "ddim"),
                                              ("timesteps", [0.4, 0.6])])
def test_a_raw_request_out_of_range_is_refused_naming_the_field(field, value):
    message = _request()
    if field == "timesteps":
        message.params.timesteps.extend(value)
    else:
        setattr(message.params, field, value)
    with pytest.raises(InvalidArgument) as error:
        engine_request(message, 8, 64_000)
    assert error.value.field == field


def test_turbo_refuses_more_than_20_custom_steps_and_base_takes_them(turbo_engine, base_engine):
    req = engine_request(_request(timesteps=[1 - k / 21 for k in range(21)]), 8, 64_000)
    base_engine.validate(req)
    with pytest.raises(InvalidArgument) as error:
        turbo_engine.validate(req)
    assert error.value.field == "timesteps" and "1-20 steps" in str(error.value)


def test_what_runs_differently_from_how_it_reads_is_reported():
    assert sampling_notes(SamplingOptions(), is_turbo=True) == []
    assert sampling_notes(SamplingOptions(sampler_mode="heun"), is_turbo=True) == []
    heun_sde = sampling_notes(SamplingOptions(sampler_mode="heun", infer_method="sde"), is_turbo=False)
    assert [field for field, _ in heun_sde] == ["sampler_mode"] and "ran Euler" in heun_sde[0][1]
    distilled = SamplingOptions(timesteps=[1.0, 0.9, 0.75, 0.5, 0.3, 0.125, 0])  # all distilled values: as given
    assert sampling_notes(distilled, is_turbo=True) == []
    snapped = sampling_notes(SamplingOptions(timesteps=[0.97, 0.76, 0.5, 0]), is_turbo=True)
    assert [field for field, _ in snapped] == ["timesteps"] and "[0.9545, 0.7692, 0.5, 0]" in snapped[0][1]
    assert sampling_notes(SamplingOptions(timesteps=[0.97, 0.76, 0.5, 0]), is_turbo=False) == []
