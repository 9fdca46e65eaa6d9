"""Compact audio on the wire, through the real LM + DiT + orchestrator: every stream encoding gives the same
song (exactly, within half a 16-bit step, or within Opus's loss) at a fraction of float32's bytes."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import soundfile as sf

from acestep_client import AceStepClient, RemoteDiT, generate_music
from acestep_client.constants import SAMPLE_RATE
from acestep_client.proto.acestep.v1 import dit_pb2, dit_pb2_grpc, orchestrator_pb2_grpc
from acestep_client.proto.acestep.v1 import generation_pb2 as gen
from acestep_client.request import build_request
from acestep_client.types import GenerationConfig, GenerationParams

# Everything fixed, no LM needed: the orchestrator path and the in-process RemoteDiT path give the same song.
# No peak normalisation: the item gain stays 1 (the tiny model's items peak below 1), so what these tests
# measure is the wire's own error, half a 16-bit step at most.
PARAMS = GenerationParams(caption="x", thinking=False, use_cot_metas=False, duration=10, bpm=100,
                          keyscale="D minor", timesignature="4", vocal_language="en", enable_normalization=False)
HALF_STEP = 0.5 / 32767 + 1e-7  # plus float32 rounding of the decode (samples up to 1: ulp 6e-8)
CONFIG = GenerationConfig(batch_size=2, use_random_seed=False, seeds=[11, 12])
ONE_ITEM = GenerationConfig(batch_size=1, use_random_seed=False, seeds=[11], audio_format="wav")
FRAMES = 10 * SAMPLE_RATE


@pytest.fixture(scope="module")
def exact(stack) -> list[np.ndarray]:
    """The float32 (exact) items of the request."""
    with AceStepClient(stack.address) as client:
        result = client.generate(PARAMS, CONFIG)
    assert result.success, result.error
    return [audio["tensor"].numpy() for audio in result.audios]


def _generate(stack, encoding: str, **kwargs):
    with AceStepClient(stack.address, stream_encoding=encoding) as client:
        result = client.generate(PARAMS, CONFIG, **kwargs)
    assert result.success, result.error
    return result


@pytest.mark.parametrize("encoding", ["pcm_s16le", "flac"])
def test_16_bit_encodings_give_the_float32_song_within_half_a_step(stack, exact, encoding):
    result = _generate(stack, encoding)
    for audio, reference in zip(result.audios, exact, strict=True):
        tensor = audio["tensor"].numpy()
        assert tensor.dtype == np.float32 and tensor.shape == reference.shape == (2, FRAMES)
        # Each chunk is sent divided by scale = max(1, its peak) (1 here): the wire adds at most half a 16-bit step.
        assert np.abs(tensor - reference).max() <= HALF_STEP


def _band(audio: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """``audio`` with only the frequencies in [low_hz, high_hz) kept (FFT mask)."""
    spectrum = np.fft.rfft(audio, axis=-1)
    freqs = np.fft.rfftfreq(audio.shape[-1], 1 / SAMPLE_RATE)
    return np.fft.irfft(spectrum * ((freqs >= low_hz) & (freqs < high_hz)), n=audio.shape[-1], axis=-1)


def test_opus_gives_the_right_length_with_bounded_error(stack, exact):
    result = _generate(stack, "opus")
    for audio, reference in zip(result.audios, exact, strict=True):
        tensor = audio["tensor"].numpy()
        assert tensor.dtype == np.float32 and tensor.shape == reference.shape
        # The tiny random model writes broadband noise plus a 0.3 DC offset: Opus's worst case. Opus drops DC
        # (its encoder's high-pass) and keeps band energies rather than noise waveforms, so the whole-signal
        # SNR is ~0.3 dB. Above 50 Hz it measured 9.6 dB (27 dB on music-like audio, tests/client); bands +-0.5 dB.
        ref, got = _band(reference, 50, 24_000), _band(tensor, 50, 24_000)
        assert 10 * np.log10(np.sum(ref**2) / np.sum((got - ref) ** 2)) > 7
        for low, high in ((1_000, 4_000), (4_000, 8_000), (8_000, 16_000), (16_000, 20_000)):
            energy_db = 10 * np.log10(np.sum(_band(tensor, low, high) ** 2) / np.sum(_band(reference, low, high) ** 2))
            assert abs(energy_db) < 1, (low, high, energy_db)  # each band as loud as in the float32 song


def test_files_on_disk_follow_audio_format_not_the_stream(stack, tmp_path):
    with AceStepClient(stack.address, stream_encoding="opus") as client:
        result = client.generate(PARAMS, ONE_ITEM, save_dir=tmp_path)
    assert result.success, result.error
    info = sf.info(result.audios[0]["path"])
    assert (info.format, info.subtype, info.frames, info.samplerate) == ("WAV", "FLOAT", FRAMES, SAMPLE_RATE)


def test_orchestrator_forwards_the_chunks_as_encoded_and_they_are_smaller(stack):
    sizes: dict[str, int] = {}
    with AceStepClient(stack.address) as client:
        for encoding in ("pcm_f32le", "pcm_s16le", "flac", "opus"):
            chunks = [e.audio_chunk for e in client.stream(PARAMS, ONE_ITEM, stream_encoding=encoding)
                      if e.WhichOneof("event") == "audio_chunk"]
            assert {c.encoding for c in chunks} == {gen.StreamEncoding.Value(f"STREAM_ENCODING_{encoding.upper()}")}
            assert sum(c.num_frames for c in chunks) == FRAMES  # num_frames always set; nothing lost
            assert all(c.scale >= 1 for c in chunks)
            sizes[encoding] = sum(len(c.pcm_f32le) + len(c.data) for c in chunks)
    assert sizes["pcm_f32le"] == FRAMES * 2 * 4  # float32 exactly as before
    assert sizes["pcm_s16le"] == sizes["pcm_f32le"] // 2
    assert sizes["flac"] < sizes["pcm_s16le"] * 1.05  # the model's noise barely compresses
    assert sizes["opus"] < sizes["pcm_f32le"] / 8


def test_in_process_pipeline_passes_the_encoding_to_the_dit(stack, exact):
    result = generate_music(RemoteDiT(stack.stack.dit.address), None, PARAMS, CONFIG, stream_encoding="flac")
    assert result.success, result.error
    for audio, reference in zip(result.audios, exact, strict=True):
        error = np.abs(audio["tensor"].numpy() - reference).max()
        assert 0 < error <= HALF_STEP  # FLAC, not float32: the DiT got the encoding


def test_unknown_stream_encoding_numbers_are_invalid_argument_naming_the_field(stack):
    request = build_request(PARAMS, CONFIG)
    request.stream_encoding = 99
    with grpc.insecure_channel(stack.address) as channel:
        stub = orchestrator_pb2_grpc.MusicGenerationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as front:
            list(stub.GenerateMusic(request, timeout=30))
    synth = dit_pb2.SynthesizeRequest(params=request.params, seeds=[1], stream_encoding=99)
    with grpc.insecure_channel(stack.stack.dit.address) as channel, pytest.raises(grpc.RpcError) as dit:
        list(dit_pb2_grpc.DiffusionServiceStub(channel).Synthesize(synth, timeout=30))
    for error in (front.value, dit.value):
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("stream_encoding: must be 0 (unspecified) or one of STREAM_ENCODING_")
        assert "STREAM_ENCODING_OPUS (4), got 99" in error.details()
