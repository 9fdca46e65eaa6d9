"""Upstream's sampler options as GenerationParams fields: defaults, range errors naming the field, the wire, keys,
request files, CLI flags and the orchestrator's turbo check. (The model side: tests/dit/test_sampling*.py.)"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from acestep_client import GenerationParams, cli
from acestep_client.cli_generate import FIELD_FLAGS, gather_inputs
from acestep_client.convert import params_from_proto, params_to_proto
from acestep_client.errors import InvalidArgument
from acestep_client.keys import LATER_DEFAULTS, audio_key
from acestep_client.proto.acestep.v1 import generation_pb2 as pb
from acestep_client.request_file import read_request_file
from orchestrator.capabilities import check_request

TURBO = pb.ModelInfo(name="acestep-v15-turbo", kind=pb.MODEL_KIND_DIT, loaded=True, is_turbo=True,
                     min_inference_steps=1, max_inference_steps=8)
BASE = pb.ModelInfo(name="acestep-v15-base", kind=pb.MODEL_KIND_DIT, loaded=True, min_inference_steps=1,
                    max_inference_steps=200)

SAMPLING_DEFAULTS = {
    "shift": 3.0, "infer_method": "ode", "timesteps": None, "sampler_mode": "euler", "velocity_norm_threshold": 0.0,
    "velocity_ema_factor": 0.0, "dcw_enabled": True, "dcw_mode": "double", "dcw_scaler": 0.05,
    "dcw_high_scaler": 0.02, "dcw_wavelet": "haar",
}
CUSTOM = {
    "shift": 2.0, "infer_method": "sde", "timesteps": [0.9, 0.6, 0.3, 0.0], "sampler_mode": "heun",
    "velocity_norm_threshold": 2.0, "velocity_ema_factor": 0.1, "dcw_enabled": False, "dcw_mode": "pix",
    "dcw_scaler": 0.1, "dcw_high_scaler": 0.0, "dcw_wavelet": "sym8",
}


def _params(**fields) -> GenerationParams:
    return GenerationParams(caption="x", **fields)


def test_defaults_are_upstreams_and_a_request_that_leaves_them_out_gets_them():
    assert {name: getattr(GenerationParams(), name) for name in SAMPLING_DEFAULTS} == SAMPLING_DEFAULTS
    assert params_from_proto(pb.GenerationParams()) == GenerationParams()  # another language's empty message
    _params(**CUSTOM).validate()
    _params().validate()


def test_every_option_round_trips_through_the_wire_and_to_dict():
    params = _params(**CUSTOM)
    wire = pb.GenerationParams.FromString(params_to_proto(params).SerializeToString())
    assert params_from_proto(wire) == params
    assert {name: params.to_dict()[name] for name in CUSTOM} == CUSTOM
    assert wire.HasField("dcw_enabled") and not wire.dcw_enabled  # false is sent, not mistaken for unset
    assert list(wire.timesteps) == [0.9, 0.6, 0.3, 0.0]


def test_no_custom_schedule_travels_as_an_empty_list_and_reads_back_as_none():
    assert params_from_proto(params_to_proto(_params(timesteps=[]))).timesteps is None
    with pytest.raises(InvalidArgument, match=r"^timesteps: must be a list"):
        params_to_proto(_params(timesteps="0.9,0.5"))


BAD = [
    ("shift", 0.5, "between 1 and 5"), ("shift", 5.5, "between 1 and 5"), ("shift", "3", "must be a number"),
    ("infer_method", "ddim", "one of ode, sde"), ("sampler_mode", "rk4", "one of euler, heun"),
    ("velocity_norm_threshold", 6.0, "between 0 and 5"), ("velocity_norm_threshold", -1.0, "between 0 and 5"),
    ("velocity_ema_factor", 0.6, "between 0 and 0.5"), ("dcw_enabled", 1, "true or false"),
    ("dcw_mode", "mid", "one of low, high, double, pix"), ("dcw_scaler", 0.2, "between 0 and 0.1"),
    ("dcw_high_scaler", -0.01, "between 0 and 0.1"), ("dcw_wavelet", "db3", "one of haar, db2, db4, sym4, sym8, coif2"),
    ("timesteps", [0.5, 0.9], "strictly decreasing"), ("timesteps", [0.9, 0.9], "strictly decreasing"),
    ("timesteps", [1.5, 0.5], "between 0 and 1"), ("timesteps", [0.5, -0.1], "between 0 and 1"),
    ("timesteps", [0.0], "1-200 steps"), ("timesteps", [float("nan")], "finite"),
    ("timesteps", [1 - i / 201 for i in range(201)], "1-200 steps (values above the final 0), got 201"),
    ("timesteps", 0.5, "must be a list"),
]


@pytest.mark.parametrize(("field", "value", "expected"), BAD, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD)])
def test_out_of_range_values_are_refused_naming_the_field_and_the_allowed_values(field, value, expected):
    with pytest.raises(InvalidArgument) as error:
        _params(**{field: value}).validate()
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ") and expected in str(error.value)


@pytest.mark.parametrize("timesteps", [[0.9, 0.5], [0.9, 0.5, 0], [1.0], [1 - i / 200 for i in range(200)] + [0]])
def test_a_final_zero_is_optional_and_base_models_take_up_to_200_steps(timesteps):
    _params(timesteps=timesteps).validate()
    check_request(_params(timesteps=timesteps), 1, [BASE])


def test_the_turbo_step_limit_is_the_orchestrators_check_naming_the_model_and_the_fix():
    """20 steps is a turbo model's limit, not the API's: the SDK passes 21; a turbo deployment refuses them."""
    params = _params(timesteps=[1 - i / 21 for i in range(21)] + [0.0])
    params.validate()
    check_request(params, 1, [BASE])
    with pytest.raises(InvalidArgument) as error:
        check_request(params, 1, [TURBO])
    message = str(error.value)
    assert error.value.field == "timesteps"
    assert "1-20 steps" in message and "acestep-v15-turbo" in message and "got 21" in message
    assert "--dit-model acestep-v15-base" in message
    check_request(_params(timesteps=[1 - i / 20 for i in range(20)] + [0.0]), 1, [TURBO])


def _key_before_these_fields(params: GenerationParams) -> str:
    """How keys were computed before upstream's later fields existed: the spec's fields only."""
    spec = {k: v for k, v in params.to_dict().items() if k not in LATER_DEFAULTS}
    h = hashlib.sha256(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def test_defaults_keep_existing_keys_and_explicit_defaults_are_the_same_request():
    """Files are named by key: adding the options must not rename a default request's file."""
    unset = params_from_proto(pb.GenerationParams(caption="x"))
    explicit = params_from_proto(params_to_proto(_params(**{**SAMPLING_DEFAULTS, "timesteps": []})))
    assert set(SAMPLING_DEFAULTS) <= set(LATER_DEFAULTS)
    assert audio_key(unset.to_dict()) == _key_before_these_fields(unset)
    assert audio_key(explicit.to_dict()) == audio_key(unset.to_dict())
    for name, value in CUSTOM.items():  # ... and each option, set to something else, is another request
        assert audio_key(_params(**{name: value}).to_dict()) != audio_key(_params().to_dict()), name


def test_request_files_take_upstreams_names_and_its_rest_timesteps_string(tmp_path):
    path = tmp_path / "request.json"
    path.write_text(json.dumps({"caption": "x", "shift": 2, "infer_method": "sde", "dcw_enabled": "false",
                                "timesteps": "0.97,0.76,0.615,0.5,0.395,0.28,0.18,0.085,0", "dcw_wavelet": "db4"}))
    request = read_request_file(path)
    assert request.warnings() == []  # no longer "unsupported"
    assert request.params["timesteps"] == [0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0.0]
    assert request.params["shift"] == 2.0 and request.params["dcw_enabled"] is False
    path.write_text(json.dumps({"caption": "x", "timesteps": [0.9, 0.5], "sampler_mode": "heun"}))
    assert read_request_file(path).params["timesteps"] == [0.9, 0.5]
    path.write_text(json.dumps({"caption": "x", "timesteps": ""}))  # upstream's REST default: no custom schedule
    assert read_request_file(path).params.get("timesteps") is None
    path.write_text(json.dumps({"caption": "x", "timesteps": "0.9,fast"}))
    with pytest.raises(InvalidArgument, match=r"^request.json: timesteps: must be a list of numbers"):
        read_request_file(path)


def _cli_params(*argv: str) -> GenerationParams:
    return gather_inputs(cli._parser().parse_args(["generate", "--caption", "x", *argv])).params


def test_cli_flags_set_each_option_and_leave_the_rest_at_upstreams_defaults():
    assert dataclasses.asdict(_cli_params()) == dataclasses.asdict(_params())
    params = _cli_params("--shift", "2", "--infer-method", "SDE", "--timesteps", "0.9,0.6,0.3,0", "--sampler-mode",
                         "heun", "--velocity-norm-threshold", "2", "--velocity-ema-factor", "0.1", "--no-dcw",
                         "--dcw-mode", "pix", "--dcw-scaler", "0.1", "--dcw-high-scaler", "0", "--dcw-wavelet", "sym8")
    assert {name: getattr(params, name) for name in CUSTOM} == CUSTOM
    assert {name: FIELD_FLAGS[name] for name in ("timesteps", "dcw_enabled", "velocity_ema_factor")} == {
        "timesteps": "--timesteps", "dcw_enabled": "--no-dcw", "velocity_ema_factor": "--velocity-ema-factor"}
    with pytest.raises(InvalidArgument, match=r"^timesteps: must be comma-separated numbers"):
        _cli_params("--timesteps", "0.9;0.5")
