"""Upstream's sampler options through the three services (turbo stack): they change the audio, repeat exactly per
seed (sde included), are reported back, keep a default request's key, and bad values are refused by name."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from acestep_client import AceStepClient, GenerationConfig, GenerationParams, cli
from acestep_client.convert import config_to_proto, params_to_proto
from acestep_client.keys import LATER_DEFAULTS
from acestep_client.proto.acestep.v1 import dit_pb2, dit_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc

FAST = {"caption": "lofi beat", "duration": 10, "bpm": 100, "keyscale": "D minor", "timesignature": "4"}
# sde + heun (runs Euler under sde, as upstream: reported) + no DCW + a custom schedule that a turbo model
# snaps to its distilled timesteps (reported) + velocity EMA.
CUSTOM = {"infer_method": "sde", "sampler_mode": "heun", "dcw_enabled": False, "timesteps": [0.97, 0.76, 0.5, 0.28, 0],
          "velocity_ema_factor": 0.1}


def _generate(address: str, **fields):
    config = GenerationConfig(batch_size=1, seeds=[7], use_random_seed=False)
    with AceStepClient(address) as client:
        result = client.generate(GenerationParams(**FAST, **fields), config)
    assert result.success, result.error
    return result


def test_options_change_the_audio_repeat_per_seed_and_are_reported(stack):
    default, custom, again = _generate(stack.address), _generate(stack.address, **CUSTOM), \
        _generate(stack.address, **CUSTOM)
    a, b, b2 = (r.audios[0]["tensor"].numpy() for r in (default, custom, again))
    assert a.shape == b.shape
    assert not np.array_equal(a, b)
    assert np.array_equal(b, b2)  # sde noise is seeded: the same request and seed give the same audio

    params = custom.audios[0]["params"]
    assert {name: params[name] for name in CUSTOM} == {**CUSTOM, "timesteps": [0.97, 0.76, 0.5, 0.28, 0.0]}
    warned = {w["field"]: w["message"] for w in custom.extra_outputs["warnings"]}
    assert "ran Euler" in warned["sampler_mode"] and "distilled" in warned["timesteps"]
    assert {w["field"] for w in default.extra_outputs["warnings"]}.isdisjoint({"sampler_mode", "timesteps"})
    # A default request keeps the key it had before these fields existed; the custom one is another request.
    default_params = default.audios[0]["params"]
    assert {name: default_params[name] for name in LATER_DEFAULTS if name in CUSTOM} == \
        {name: LATER_DEFAULTS[name] for name in CUSTOM}
    assert default.audios[0]["key"] != custom.audios[0]["key"] == again.audios[0]["key"]


def test_dcw_off_alone_changes_the_audio(stack):
    """DCW is on by default (upstream since 2026-04-23); dcw_enabled=False is the plain sampler."""
    a = _generate(stack.address).audios[0]["tensor"].numpy()
    b = _generate(stack.address, dcw_enabled=False).audios[0]["tensor"].numpy()
    assert not np.array_equal(a, b)


def _raw_generate(address: str, params: GenerationParams) -> grpc.RpcError:
    request = orchestrator_pb2.GenerateMusicRequest(params=params_to_proto(params),
                                                    config=config_to_proto(GenerationConfig(batch_size=1)))
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as excinfo:
        list(orchestrator_pb2_grpc.MusicGenerationServiceStub(channel).GenerateMusic(request, timeout=60))
    return excinfo.value


def test_bad_values_from_a_raw_client_are_invalid_argument_naming_the_field(stack):
    error = _raw_generate(stack.address, GenerationParams(**FAST, dcw_scaler=0.5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("dcw_scaler: must be between 0 and 0.1")
    # 21 steps are the API's to allow, a turbo model's to refuse: checked before any model work, with the fix.
    error = _raw_generate(stack.address, GenerationParams(**FAST, timesteps=[1 - k / 21 for k in range(21)]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("timesteps: must have 1-20 steps") and "acestep-v15-base" in error.details()


def test_the_dit_service_itself_refuses_bad_values_by_name(stack):
    params = params_to_proto(GenerationParams(**FAST))
    params.dcw_wavelet = "db3"
    with grpc.insecure_channel(stack.stack.dit.address) as channel, pytest.raises(grpc.RpcError) as excinfo:
        list(dit_pb2_grpc.DiffusionServiceStub(channel).Synthesize(
            dit_pb2.SynthesizeRequest(params=params, seeds=[1]), timeout=60))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert excinfo.value.details().startswith("dcw_wavelet: must be one of haar, db2, db4, sym4, sym8, coif2")


def test_the_cli_flags_reach_the_sidecar_and_a_bad_one_names_the_flag(stack, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["generate", "--caption", "x", "--duration", "10", "--seeds", "3", "--no-thinking",
                     "--infer-method", "sde", "--timesteps", "0.9,0.5,0.3", "--no-dcw", "--shift", "2",
                     "--target", stack.address, "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    sidecar = json.loads(next(out.glob("*.json")).read_text(encoding="utf-8"))
    assert (sidecar["infer_method"], sidecar["timesteps"], sidecar["dcw_enabled"], sidecar["shift"]) == \
        ("sde", [0.9, 0.5, 0.3], False, 2.0)
    capsys.readouterr()
    code = cli.main(["generate", "--caption", "x", "--dcw-scaler", "0.5", "--target", stack.address,
                     "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2 and "--dcw-scaler: must be between 0 and 0.1, got 0.5" in capsys.readouterr().err
