"""Audio files round-trip through flac / wav / mp3, and uploads are normalised to 48 kHz stereo."""

import numpy as np
import pytest

from acestep_client import InvalidArgument
from acestep_client.audio_io import (
    decode_audio,
    detect_format,
    encode_audio,
    pcm_array,
    pcm_bytes,
    read_audio,
    resample,
    to_model_audio,
    write_audio,
)


def _tone(seconds=1.0, rate=48_000):
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)


@pytest.mark.parametrize(("fmt", "tolerance"), [("wav", 0.0), ("flac", 1e-4), ("mp3", 0.05)])
def test_file_round_trip(tmp_path, fmt, tolerance):
    audio = _tone()
    path = write_audio(tmp_path / f"a.{fmt}", audio, 48_000, fmt)
    back, rate = read_audio(path)
    assert rate == 48_000 and back.shape[0] == 2 and back.dtype == np.float32
    assert detect_format(path.read_bytes()) == fmt
    if fmt == "mp3":  # the encoder adds a little delay; compare energy instead of samples
        assert abs(back.shape[1] - audio.shape[1]) < 4800
        assert np.sqrt((back**2).mean()) == pytest.approx(np.sqrt((audio**2).mean()), rel=tolerance * 4)
    else:
        assert back.shape == audio.shape
        assert np.abs(back - audio).max() <= tolerance
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


def test_write_failure_leaves_no_file(tmp_path):
    with pytest.raises(InvalidArgument):
        write_audio(tmp_path / "a.ogg", _tone(), 48_000, "ogg")
    assert list(tmp_path.iterdir()) == []


def test_garbage_bytes_are_rejected_clearly():
    with pytest.raises(InvalidArgument, match="audio"):
        decode_audio(b"not audio at all")
    with pytest.raises(InvalidArgument, match="wav, flac or mp3"):
        detect_format(b"OggS....")


def test_pcm_chunk_encoding_is_interleaved_float32_le():
    audio = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    data = pcm_bytes(audio)
    assert np.frombuffer(data, dtype="<f4").tolist() == [1.0, 3.0, 2.0, 4.0]
    assert np.array_equal(pcm_array(data), audio)


def test_resample_keeps_a_tone_and_the_duration():
    rate = 44_100
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 1000 * t)[None].astype(np.float32)
    out = resample(tone, rate, 48_000)
    assert out.shape == (1, 48_000)
    expected = np.sin(2 * np.pi * 1000 * np.arange(48_000) / 48_000)
    assert np.abs(out[0, 1000:-1000] - expected[1000:-1000]).max() < 1e-3


def test_mono_upload_becomes_clamped_stereo_48k():
    mono = np.full((1, 22_050), 1.5, dtype=np.float32)
    out = to_model_audio(mono, 22_050)
    assert out.shape == (2, 48_000) and out.max() <= 1.0


def test_encode_in_memory_matches_file(tmp_path):
    audio = _tone(0.5)
    assert decode_audio(encode_audio(audio, 48_000, "wav"))[0].shape == audio.shape
