"""A flow edit through the three services (turbo stack): the uploaded song morphed toward a new caption keeps
its length, skips the LM (as upstream), repeats exactly, reports its options and what it did not apply, and a
bad window is refused by name from a raw client."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from acestep_client import AceStepClient, GenerationConfig, GenerationParams
from acestep_client.audio_io import write_audio
from acestep_client.convert import config_to_proto, params_to_proto
from acestep_client.proto.acestep.v1 import orchestrator_pb2, orchestrator_pb2_grpc

EDIT = {"flow_edit_morph": True, "flow_edit_source_caption": "a calm piano piece", "flow_edit_n_min": 0.25,
        "flow_edit_n_max": 0.75, "flow_edit_n_avg": 2}


def _morph(address: str, src: str, **fields):
    params = GenerationParams(caption="an energetic techno track", src_audio=src, **{**EDIT, **fields})
    with AceStepClient(address) as client:
        result = client.generate(params, GenerationConfig(batch_size=1, seeds=[11], use_random_seed=False))
    assert result.success, result.error
    return result


def test_a_text2music_flow_edit_morphs_the_upload(stack, tmp_path):
    src = tmp_path / "song.wav"
    t = np.arange(48_000 * 12, dtype=np.float32) / 48_000
    write_audio(src, np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2), 48_000, "wav")
    first = _morph(stack.address, str(src))
    again = _morph(stack.address, str(src))
    other = _morph(stack.address, str(src), flow_edit_source_caption="a sad ballad")
    audio = first.audios[0]
    assert audio["tensor"].shape[-1] == 300 * 1920  # the source's 12 s of 25 Hz latents, not a planned duration
    assert np.array_equal(audio["tensor"].numpy(), again.audios[0]["tensor"].numpy())
    assert not np.allclose(audio["tensor"].numpy(), other.audios[0]["tensor"].numpy())
    assert {name: audio["params"][name] for name in EDIT} == EDIT
    assert "lm_phase1_time" not in first.extra_outputs["time_costs"]  # the LM did not run, as upstream
    warned = {w["field"]: w["message"] for w in first.extra_outputs["warnings"]}
    assert "Euler steps with APG" in warned["dcw_enabled"]  # DCW is on by default; a flow edit does not apply it


def test_a_reversed_window_from_a_raw_client_is_invalid_argument(stack):
    params = GenerationParams(caption="x", src_audio="song.wav", flow_edit_morph=True, flow_edit_n_min=0.8,
                              flow_edit_n_max=0.2)
    request = orchestrator_pb2.GenerateMusicRequest(params=params_to_proto(params),
                                                    config=config_to_proto(GenerationConfig(batch_size=1)))
    with grpc.insecure_channel(stack.address) as channel, pytest.raises(grpc.RpcError) as excinfo:
        list(orchestrator_pb2_grpc.MusicGenerationServiceStub(channel).GenerateMusic(request, timeout=60))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert excinfo.value.details().startswith("flow_edit_n_max: must be >= flow_edit_n_min (0.8)")
