"""Uploads are checked from their header before they are decoded, and decoding stays within 600 s and two channels."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from acestep_client import InvalidArgument
from acestep_client.audio_io import decode_audio
from acestep_client.audio_uploads import decode_upload, read_header
from acestep_client.request import read_upload


def _file(frames: int, rate: int = 48_000, channels: int = 2, container: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    ramp = np.linspace(-0.5, 0.5, frames * channels, dtype=np.float32).reshape(frames, channels)
    sf.write(buffer, ramp + np.arange(channels, dtype=np.float32) * 0.01, rate, format=container)
    return buffer.getvalue()


def _silent_flac(seconds: int, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, 1, format="FLAC", subtype="PCM_16") as file:
        for _ in range(seconds):
            file.write(np.zeros(rate, dtype=np.float32))
    return buffer.getvalue()


def _refusal(data: bytes, field: str = "src_audio", source: bool = True) -> str:
    with pytest.raises(InvalidArgument) as excinfo:
        read_header(data, field, source=source)
    assert excinfo.value.field == field
    return str(excinfo.value)


@pytest.mark.parametrize(("frames", "rate", "ok"), [
    (1920, 48_000, True), (1919, 48_000, False),
    (1764, 44_100, True), (1763, 44_100, False),  # 1,764 frames resample to exactly 1,920 at 48 kHz
    (320, 8000, True), (319, 8000, False),
])
def test_a_source_needs_one_latent_frame_a_reference_does_not(frames, rate, ok):
    data = _file(frames, rate)
    if ok:
        assert read_header(data, "src_audio", source=True).frames == frames
    else:
        assert "at least 0.04 s" in _refusal(data)
    assert read_header(data, "reference_audio", source=False).sample_rate == rate


@pytest.mark.parametrize(("data", "text"), [
    (_file(200, rate=1, channels=1), "sample rate must be between 8000 and 192000 Hz, got 1 Hz"),
    (_file(4800, rate=7999), "got 7999 Hz"),
    (_file(4800, rate=192_001), "got 192001 Hz"),
    (_file(4800, channels=9), "must have 1-8 channels, got 9"),
    (_file(0), "holds no audio"),
    (b"RIFF\0\0\0\0WAVEfmt " + bytes(40), "not a readable"),
    (b"OggS" + bytes(40), "not a wav, flac or mp3 file"),
])
def test_headers_outside_the_bounds_are_refused_naming_the_field(data, text):
    assert text in _refusal(data, "reference_audio", source=False)


def test_600_s_is_the_longest_upload_and_the_header_decides_before_decoding():
    assert read_header(_silent_flac(600), "src_audio", source=True).frames == 600 * 8000
    flac = _silent_flac(700)
    assert len(flac) < 100_000
    assert "at most 600 seconds long, got 700 s" in _refusal(flac)


def test_decoding_keeps_the_first_two_channels_and_resumes_across_blocks():
    data = _file(300_000, channels=5)  # more than one 2^18-frame block
    audio, rate = decode_upload(data, "src_audio", source=True)
    whole, _ = decode_audio(data)
    assert rate == 48_000 and audio.shape == (2, 300_000) and whole.shape == (5, 300_000)
    assert np.array_equal(audio, whole[:2])


def test_a_flac_hiding_its_length_is_cut_off_past_600_s():
    data = bytearray(_silent_flac(700))
    data[21] &= 0xF0  # STREAMINFO total samples: 0 = unknown
    data[22:26] = b"\0\0\0\0"
    assert read_header(bytes(data), "src_audio", source=True).frames is None
    audio, _ = decode_audio(bytes(data), max_frames=600 * 8000)
    assert 600 * 8000 < audio.shape[1] < 700 * 8000  # stopped one block past the limit, not at the end
    with pytest.raises(InvalidArgument, match="at most 600 seconds"):
        decode_upload(bytes(data), "src_audio", source=True)


def test_a_truncated_flac_is_invalid_argument_not_a_crash():
    data = _file(48_000, container="FLAC")
    with pytest.raises(InvalidArgument) as excinfo:
        decode_upload(data[:100], "data", source=True)
    assert excinfo.value.field == "data"


def test_the_sdk_checks_a_file_before_sending_it(tmp_path):
    path = tmp_path / "tiny.wav"
    path.write_bytes(_file(200, rate=1, channels=1))
    with pytest.raises(InvalidArgument) as excinfo:
        read_upload("src_audio", str(path))
    assert excinfo.value.field == "src_audio" and "sample rate" in str(excinfo.value)
    with pytest.raises(InvalidArgument, match="without NUL characters"):
        read_upload("reference_audio", f"{path}\x00.txt")
    path.write_bytes(_file(4800))
    assert read_upload("src_audio", str(path)).filename == "tiny.wav"
