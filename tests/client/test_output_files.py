"""Every output format the SDK writes decodes back (soundfile, or PyAV for aac) with the right length, channels
and sample rate, and the mp3 options do what they say (bitrate in the frame headers, 44.1 kHz resampled)."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import soundfile as sf

from acestep_client import GenerationConfig, GenerationParams, InvalidArgument
from acestep_client.audio_io import FileFormat, check_encoder, mp3_compression_level, write_audio
from acestep_client.constants import AUDIO_FORMATS, MP3_BITRATES
from acestep_client.request import build_request, request_file_format

RATE = 48_000
FRAMES = RATE * 2 + 321  # not a multiple of any codec's frame size


def _music(frames: int = FRAMES, rate: int = RATE) -> np.ndarray:
    """Decaying harmonic notes, a different one per channel: codecs treat it like music, unlike white noise."""
    t = np.arange(frames) / rate
    out = np.zeros((2, frames))
    for channel, notes in enumerate(((220.0, 330.0, 440.0), (277.0, 415.0, 554.0))):
        for k, f0 in enumerate(notes):
            envelope = np.exp(-4 * ((t - 0.6 * k) % 0.6)) * (t >= 0.6 * k)
            for harmonic in range(1, 6):
                out[channel] += 0.12 / harmonic * envelope * np.sin(2 * np.pi * f0 * harmonic * t + harmonic)
    return out.astype(np.float32)


def _snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((decoded - reference) ** 2)))


def _read_aac(data: bytes) -> tuple[np.ndarray, int, int]:
    """(decoded [channels, n], sample rate, the length the MP4 states) through PyAV."""
    av = pytest.importorskip("av")
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        stated = int(stream.duration * stream.time_base * stream.codec_context.sample_rate)
        frames = [frame.to_ndarray() for frame in container.decode(stream)]
        return np.concatenate(frames, axis=1), stream.codec_context.sample_rate, stated


# (format, file extension, soundfile container/subtype, SNR floor in dB; None = bit-exact float32)
CASES = [
    ("flac", "flac", ("FLAC", "PCM_16"), 70.0),  # and within one 16-bit step, below
    ("wav", "wav", ("WAV", "FLOAT"), None),
    ("wav32", "wav", ("WAV", "FLOAT"), None),
    ("mp3", "mp3", ("MP3", "MPEG_LAYER_III"), 20.0),  # measured 25.9 dB
    ("opus", "opus", ("OGG", "OPUS"), 18.0),  # measured 24.3 dB
]


@pytest.mark.parametrize(("fmt", "extension", "container", "snr_floor"), CASES)
def test_soundfile_formats_decode_to_the_written_length_channels_and_rate(tmp_path, fmt, extension, container,
                                                                          snr_floor):
    audio = _music()
    spec = FileFormat(fmt)
    assert spec.extension == extension
    path = write_audio(tmp_path / f"song.{spec.extension}", audio, RATE, spec)
    info = sf.info(str(path))
    assert (info.format, info.subtype) == container
    assert (info.samplerate, info.channels, info.frames) == (RATE, 2, FRAMES)
    decoded, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == RATE and decoded.shape == (FRAMES, 2)  # exact: libsndfile trims encoder delay and padding
    if snr_floor is None:
        assert np.array_equal(decoded.T, audio)
    else:
        assert _snr_db(audio, decoded.T) > snr_floor
    if fmt == "flac":
        assert np.abs(decoded.T - audio).max() <= 1 / 32767


def test_aac_is_an_m4a_that_pyav_decodes_to_the_written_length_channels_and_rate(tmp_path):
    pytest.importorskip("av")
    audio = _music()
    path = write_audio(tmp_path / "song.m4a", audio, RATE, "aac")
    decoded, rate, stated = _read_aac(path.read_bytes())
    assert rate == RATE and decoded.shape[0] == 2
    assert stated == FRAMES  # the MP4 edit list states the exact length ...
    assert FRAMES <= decoded.shape[1] < FRAMES + 1024  # ... a decoder may also return the last frame's padding
    # The priming is skipped (the edit list), so samples line up from the first one.
    assert _snr_db(audio, decoded[:, :FRAMES]) > 18.0  # measured 23.9 dB
    bitrate = path.stat().st_size * 8 / (FRAMES / RATE)
    assert 100_000 < bitrate < 160_000  # FFmpeg's default 128 kb/s, plus the container


def _mp3_header(data: bytes) -> tuple[int, int]:
    """(kb/s, Hz) of the first MPEG-1 layer III frame header."""
    start = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]) if data[:3] == b"ID3" else 0
    index = next(i for i in range(start, len(data) - 1) if data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0)
    bitrates = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
    return bitrates[data[index + 2] >> 4], (44_100, 48_000, 32_000)[(data[index + 2] >> 2) & 3]


@pytest.mark.parametrize("bitrate", MP3_BITRATES)
def test_mp3_is_written_at_the_constant_bitrate_asked_for(tmp_path, bitrate):
    audio = _music()
    path = write_audio(tmp_path / "song.mp3", audio, RATE, FileFormat("mp3", mp3_bitrate=bitrate))
    kbps = int(bitrate.removesuffix("k"))
    assert _mp3_header(path.read_bytes()) == (kbps, RATE)
    measured = path.stat().st_size * 8 / (FRAMES / RATE) / 1000
    assert kbps <= measured < kbps * 1.05  # constant bitrate (+ the info frame)


def test_mp3_at_44100_is_resampled_to_the_same_duration(tmp_path):
    audio = _music()
    path = write_audio(tmp_path / "song.mp3", audio, RATE, FileFormat("mp3", mp3_sample_rate=44_100))
    assert _mp3_header(path.read_bytes()) == (128, 44_100)
    decoded, rate = sf.read(str(path), dtype="float32", always_2d=True)
    expected_frames = -(-FRAMES * 441 // 480)  # ceil: the resampler keeps every input sample's span
    assert rate == 44_100 and decoded.shape == (expected_frames, 2)
    # The same music at the new rate: compare with the signal synthesised at 44.1 kHz directly.
    assert _snr_db(_music(expected_frames, 44_100), decoded.T) > 20.0  # measured 25.9 dB


def test_compression_level_mapping_is_libsndfiles_linear_320_to_32_scale():
    for bitrate in MP3_BITRATES:
        level = mp3_compression_level(bitrate)
        assert int(320 - level * 288) == int(bitrate.removesuffix("k"))  # how libsndfile turns it into kb/s
    with pytest.raises(InvalidArgument, match=r"^mp3_bitrate: must be one of 128k, 192k, 256k, 320k"):
        mp3_compression_level("96k")


def test_the_request_carries_the_file_options_to_the_writer():
    config = GenerationConfig(audio_format="mp3", mp3_bitrate="320k", mp3_sample_rate=44_100)
    request = build_request(GenerationParams(caption="x"), config)
    assert request_file_format(request) == FileFormat("mp3", "320k", 44_100)
    assert request_file_format(build_request(GenerationParams(caption="x"), GenerationConfig())) == FileFormat()
    for fmt in AUDIO_FORMATS:
        sent = build_request(GenerationParams(caption="x"), GenerationConfig(audio_format=fmt))
        assert request_file_format(sent).audio_format == fmt


def test_aac_without_pyav_is_refused_before_sending_naming_audio_format(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # what an install without the `aac` extra looks like to imports
    with pytest.raises(InvalidArgument, match=r"^audio_format: aac files are encoded with PyAV") as excinfo:
        build_request(GenerationParams(caption="x"), GenerationConfig(audio_format="aac"))
    assert "pip install 'acestep-grpc[aac]'" in str(excinfo.value)
    check_encoder("opus")  # every other format is soundfile's and always available
