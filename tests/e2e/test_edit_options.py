"""Upstream's editing options through the three services (turbo stack): a repaint with retake noise, aggressive
repainting, the "auto" chunk mask and cover noise changes the audio and repeats exactly, the options are reported
back, a default request keeps its key, and a bad value is refused by name."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from acestep_client import AceStepClient, GenerationConfig, GenerationParams
from acestep_client.audio_io import read_audio, to_model_audio, write_audio
from acestep_client.convert import config_to_proto, params_to_proto
from acestep_client.keys import LATER_DEFAULTS
from acestep_client.proto.acestep.v1 import orchestrator_pb2, orchestrator_pb2_grpc

EDITS = {"retake_seed": 5, "retake_variance": 0.4, "repaint_mode": "aggressive", "chunk_mask_mode": "auto",
         "cover_noise_strength": 0.3, "global_caption": "a rock song"}


def _repaint(address: str, src: str, **fields) -> tuple[np.ndarray, dict, str, list[str]]:
    params = GenerationParams(task_type="repaint", src_audio=src, repainting_start=2.0, repainting_end=6.0,
                              caption="lofi beat", thinking=False, use_cot_metas=False, **fields)
    with AceStepClient(address) as client:
        result = client.generate(params, GenerationConfig(batch_size=1, seeds=[7], use_random_seed=False))
    assert result.success, result.error
    audio = result.audios[0]
    warned = [w["field"] for w in result.extra_outputs["warnings"]]
    return audio["tensor"].numpy(), audio["params"], audio["key"], warned


def test_edit_options_change_the_repaint_repeat_and_are_reported(stack, tmp_path):
    src = tmp_path / "song.wav"
    t = np.arange(48_000 * 10, dtype=np.float32) / 48_000
    write_audio(src, np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2), 48_000, "wav")
    default, default_params, default_key, default_warned = _repaint(stack.address, str(src))
    edited, params, key, warned = _repaint(stack.address, str(src), **EDITS)
    again, _, key_again, _ = _repaint(stack.address, str(src), **EDITS)
    assert default.shape == edited.shape and not np.array_equal(default, edited)
    assert np.array_equal(edited, again)  # the retake seed is part of the request: the same audio again
    assert {name: params[name] for name in EDITS} == EDITS
    assert {name: default_params[name] for name in EDITS} == {name: LATER_DEFAULTS[name] for name in EDITS}
    assert default_key != key == key_again
    # The turbo model is no SFT-stems model: its ignoring the global caption is said, not silent.
    assert "global_caption" in warned and "global_caption" not in default_warned


def test_a_bad_value_from_a_raw_client_is_invalid_argument_naming_the_field(stack):
    params = GenerationParams(caption="lofi beat", duration=10, repaint_strength=1.5)
    request = orchestrator_pb2.GenerateMusicRequest(params=params_to_proto(params),
                                                    config=config_to_proto(GenerationConfig(batch_size=1)))
    with grpc.insecure_channel(stack.address) as channel, pytest.raises(grpc.RpcError) as excinfo:
        list(orchestrator_pb2_grpc.MusicGenerationServiceStub(channel).GenerateMusic(request, timeout=60))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert excinfo.value.details().startswith("repaint_strength: must be between 0 and 1")


def test_a_repaint_keeps_the_uploaded_samples_outside_the_span(stack, tmp_path):
    """The orchestrator sends the uploaded file along (SynthesizeRequest.src_waveform); the DiT splices its samples
    in after the VAE decode (repaint_wav_crossfade_sec 0: a hard cut). Without normalisation only the clip guard
    scales the item, and the float32 stream carries the samples exactly."""
    src = tmp_path / "song.wav"
    t = np.arange(48_000 * 10, dtype=np.float32) / 48_000
    rng = np.random.default_rng(3)
    tone = 0.3 * np.sin(2 * np.pi * 330 * t)
    write_audio(src, np.stack([tone + 0.05 * rng.standard_normal(t.size), tone]).astype(np.float32), 48_000, "wav")
    uploaded = to_model_audio(*read_audio(src))
    audio, params, _, _ = _repaint(stack.address, str(src), repaint_wav_crossfade_sec=0.0, enable_normalization=False)
    assert params["repaint_wav_crossfade_sec"] == 0.0
    assert audio.shape == uploaded.shape
    outside = np.concatenate([audio[:, : 2 * 48_000], audio[:, 6 * 48_000 :]], axis=1)
    expected = np.concatenate([uploaded[:, : 2 * 48_000], uploaded[:, 6 * 48_000 :]], axis=1)
    assert float(np.abs(audio).max()) <= 1.0  # the clip guard, the item's whole gain here, is 1
    assert np.array_equal(outside, expected), float(np.abs(outside - expected).max())
    # Inside the span the audio is new, not the upload.
    assert not np.allclose(audio[:, 2 * 48_000 : 6 * 48_000], uploaded[:, 2 * 48_000 : 6 * 48_000], atol=1e-3)
