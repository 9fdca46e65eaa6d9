"""Upstream's output options through the three services (turbo stack): fades ramp the streamed audio from 0,
normalisation puts the item's peak at normalization_db, the files are written in the format asked for, and the
DiT service refuses bad values by name."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import soundfile as sf

from acestep_client import AceStepClient, GenerationConfig, GenerationParams, cli
from acestep_client.convert import params_to_proto
from acestep_client.proto.acestep.v1 import dit_pb2, dit_pb2_grpc

RATE = 48_000
FAST = {"caption": "lofi beat", "duration": 10, "bpm": 100, "keyscale": "D minor", "timesignature": "4"}
FADES = {"fade_in_duration": 1.0, "fade_out_duration": 2.0}


def _generate(address: str, save_dir=None, config: dict | None = None, **fields):
    config = GenerationConfig(batch_size=1, seeds=[7], use_random_seed=False, **(config or {}))
    with AceStepClient(address) as client:
        result = client.generate(GenerationParams(**FAST, **fields), config, save_dir=save_dir)
    assert result.success, result.error
    return result.audios[0]


def _db(peak: float) -> float:
    return 20 * np.log10(peak)


def test_fades_and_normalisation_shape_the_audio_and_the_file(stack, tmp_path):
    plain = _generate(stack.address, normalization_db=-3.0)["tensor"].numpy()
    faded = _generate(stack.address, tmp_path, {"audio_format": "wav32"}, normalization_db=-3.0, **FADES)
    audio = faded["tensor"].numpy()
    n = audio.shape[1]
    assert plain.shape == audio.shape == (2, 10 * RATE)

    # Normalised as upstream does, before the fades: the unfaded item peaks at exactly -3 dBFS ...
    assert _db(np.abs(plain).max()) == pytest.approx(-3.0, abs=1e-4)
    # ... and the fades are linear ramps on that same audio: from 0 over the first second, to 0 over the last two.
    ramp = np.ones(n, dtype=np.float32)
    ramp[:RATE] = np.linspace(0.0, 1.0, RATE)
    ramp[n - 2 * RATE:] *= np.linspace(1.0, 0.0, 2 * RATE)
    np.testing.assert_allclose(audio, plain * ramp, atol=1e-6)
    assert np.all(audio[:, 0] == 0.0) and np.all(audio[:, -1] == 0.0)
    first = np.abs(audio[:, :4800]).max(axis=0)  # the first 0.1 s stays under its ramp
    assert np.all(first <= np.linspace(0.0, 1.0, RATE)[:4800] * np.abs(plain).max() + 1e-6)
    assert np.abs(audio).max() <= 10 ** (-3 / 20) + 1e-6

    # The file: 32-bit float WAV, bit-exact, named <key>.wav; the sidecar records the options.
    assert faded["path"].endswith(".wav")
    info = sf.info(faded["path"])
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == ("WAV", "FLOAT", RATE, 2, n)
    written, _ = sf.read(faded["path"], dtype="float32", always_2d=True)
    assert np.array_equal(written.T, audio)
    assert {name: faded["params"][name] for name in (*FADES, "normalization_db")} == {**FADES, "normalization_db": -3}


def test_a_default_request_is_peak_normalised_to_minus_1_dbfs_and_can_opt_out(stack):
    default = _generate(stack.address)["tensor"].numpy()
    assert _db(np.abs(default).max()) == pytest.approx(-1.0, abs=1e-4)  # upstream's default
    raw = _generate(stack.address, enable_normalization=False)["tensor"].numpy()
    assert np.abs(raw).max() <= 1.0 + 1e-6  # only the clip guard
    np.testing.assert_allclose(default, raw * (10 ** (-1 / 20) / np.abs(raw).max()), atol=1e-6)


def test_latent_rescale_changes_the_audio_before_normalisation(stack):
    a = _generate(stack.address, enable_normalization=False)["tensor"].numpy()
    b = _generate(stack.address, enable_normalization=False, latent_rescale=0.5, latent_shift=0.1)["tensor"].numpy()
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-3)


def test_the_dit_service_refuses_bad_values_by_name(stack):
    params = params_to_proto(GenerationParams(**FAST))
    params.normalization_db = 3.0
    with grpc.insecure_channel(stack.stack.dit.address) as channel, pytest.raises(grpc.RpcError) as excinfo:
        list(dit_pb2_grpc.DiffusionServiceStub(channel).Synthesize(
            dit_pb2.SynthesizeRequest(params=params, seeds=[1]), timeout=60))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert excinfo.value.details().startswith("normalization_db: must be between -10 and 0, got 3.0")


def test_the_cli_writes_mp3_at_the_asked_rate_with_the_options_in_the_sidecar(stack, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["generate", *("--caption", "x", "--duration", "10", "--seeds", "3", "--no-thinking"),
                     "--fade-in-duration", "0.5", "--normalization-db", "-2", "--audio-format", "mp3",
                     "--mp3-bitrate", "192k", "--mp3-sample-rate", "44100",
                     "--target", stack.address, "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    [mp3] = out.glob("*.mp3")
    info = sf.info(str(mp3))
    assert (info.samplerate, info.channels, info.frames) == (44_100, 2, 10 * 44_100)
    assert mp3.stat().st_size * 8 / 10 == pytest.approx(192_000, rel=0.05)
    sidecar = json.loads(mp3.with_suffix(".json").read_text(encoding="utf-8"))
    assert (sidecar["fade_in_duration"], sidecar["normalization_db"]) == (0.5, -2.0)
