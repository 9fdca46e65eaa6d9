"""The stream encodings' codec: what a client decodes is what the server encoded, within each encoding's bound."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from acestep_client import STREAM_ENCODINGS
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2 as gen
from acestep_client.wire_audio import (
    WireAudioError,
    audio_chunk,
    decode_chunk,
    encode_chunk,
    stream_encoding_name,
    stream_encoding_number,
)

RATE = 48_000
HALF_STEP = 0.5 / 32767  # the int16 rounding error, as a fraction of scale


def music(frames: int, peak: float = 0.8, seed: int = 0) -> np.ndarray:
    """A few harmonics under a decaying envelope, [2, frames], scaled to ``peak``."""
    t = np.arange(frames) / RATE
    tone = sum(np.sin(2 * np.pi * 220 * k * t + k) / k for k in range(1, 6)) * np.exp(-((t % 0.5) * 4))
    audio = np.stack([tone, np.roll(tone, 37)]) + np.random.default_rng(seed).normal(0, 0.01, (2, frames))
    return (audio * peak / np.abs(audio).max()).astype(np.float32)


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((decoded - reference) ** 2)))


def test_float32_is_exact_and_keeps_the_old_wire_layout():
    audio = music(1000, peak=3.0)
    chunk = audio_chunk(1, 500, audio, "pcm_f32le")
    assert chunk.pcm_f32le == np.ascontiguousarray(audio.T).astype("<f4").tobytes() and not chunk.data
    assert chunk.num_frames == 1000 and chunk.encoding == gen.STREAM_ENCODING_PCM_F32LE
    assert np.array_equal(decode_chunk(chunk), audio)
    # An older server sets neither encoding nor num_frames: still float32.
    old = gen.AudioChunk(item_index=0, start_frame=0, sample_rate_hz=RATE, channels=2, pcm_f32le=chunk.pcm_f32le)
    assert np.array_equal(decode_chunk(old), audio)


@pytest.mark.parametrize("encoding", ["pcm_s16le", "flac"])
@pytest.mark.parametrize("peak", [0.5, 1.0, 2.75])
def test_16_bit_encodings_stay_within_half_a_step_times_scale_even_above_full_scale(encoding, peak):
    audio = music(131_072, peak=peak)
    chunk = audio_chunk(0, 0, audio, encoding)
    assert chunk.scale == pytest.approx(max(1.0, peak), rel=1e-6)  # nothing clips: peaks above 1 widen the scale
    decoded = decode_chunk(chunk)
    assert decoded.dtype == np.float32 and decoded.shape == audio.shape
    error = float(np.abs(decoded - audio).max())
    assert error <= (HALF_STEP + 2**-21) * chunk.scale  # half an int16 step, plus float32 rounding
    assert error <= chunk.scale / 32768  # the promised bound
    assert float(np.abs(decoded).max()) == pytest.approx(peak, abs=chunk.scale / 32768)  # the peak survives


def test_flac_decodes_to_exactly_what_s16_gives_and_is_a_complete_file():
    audio = music(50_000, peak=1.7)
    flac = audio_chunk(0, 0, audio, "flac")
    assert np.array_equal(decode_chunk(flac), decode_chunk(audio_chunk(0, 0, audio, "pcm_s16le")))
    info = sf.info(io.BytesIO(flac.data))  # any FLAC reader can open a chunk on its own
    described = (info.format, info.subtype, info.frames, info.channels, info.samplerate)
    assert described == ("FLAC", "PCM_16", 50_000, 2, RATE)
    assert len(flac.data) < 50_000 * 2 * 2  # smaller than the 16-bit PCM of a tonal signal


@pytest.mark.parametrize("frames", [1, 479, 961, 81_920, 131_072])
def test_opus_decodes_to_exactly_num_frames(frames):
    audio = music(frames, peak=1.5)
    chunk = audio_chunk(0, 0, audio, "opus")
    assert sf.info(io.BytesIO(chunk.data)).subtype == "OPUS"
    decoded = decode_chunk(chunk)
    assert decoded.shape == (2, frames) and decoded.dtype == np.float32


def test_opus_from_a_decoder_off_by_less_than_an_opus_frame_is_fitted_to_num_frames():
    chunk = audio_chunk(0, 0, music(9600), "opus")
    for announced in (9600 - 960, 9600 + 960):  # e.g. a sender whose encoder did not trim the last frame
        chunk.num_frames = announced
        decoded = decode_chunk(chunk)
        assert decoded.shape == (2, announced)
    assert not decoded[:, 9600:].any()  # padded with silence


def test_opus_error_is_bounded_on_music():
    audio = music(131_072, peak=2.0)
    decoded = decode_chunk(audio_chunk(0, 0, audio, "opus"))
    assert snr_db(audio, decoded) > 20  # measured ~27 dB at libsndfile's default bitrate; lossy by design
    assert float(np.abs(decoded).max()) < 2.0 * 1.25  # scaled back above 1, not clipped at 1


def test_empty_chunks_round_trip():
    for name in STREAM_ENCODINGS:
        assert decode_chunk(audio_chunk(0, 0, np.zeros((2, 0), np.float32), name)).shape == (2, 0)


def test_non_finite_samples_do_not_break_the_compact_encodings():
    audio = music(2000)
    audio[0, 10] = np.nan
    audio[1, 20] = np.inf
    for name in ("pcm_s16le", "flac", "opus"):
        data, scale = encode_chunk(audio, name)
        assert scale == 1.0 and data  # the bad samples become 0 instead of an infinite scale
    decoded = decode_chunk(audio_chunk(0, 0, audio, "pcm_s16le"))
    assert decoded[0, 10] == 0.0 and decoded[1, 20] == 0.0 and np.isfinite(decoded).all()


def test_names_and_numbers():
    assert STREAM_ENCODINGS == ("pcm_f32le", "pcm_s16le", "flac", "opus")
    assert stream_encoding_number("FLAC") == gen.STREAM_ENCODING_FLAC
    assert stream_encoding_number(None) == stream_encoding_number(0) == gen.STREAM_ENCODING_PCM_F32LE
    assert stream_encoding_name(gen.STREAM_ENCODING_OPUS) == "opus"
    with pytest.raises(InvalidArgument, match=r"stream_encoding: must be one of pcm_f32le, pcm_s16le, flac, opus"):
        stream_encoding_number("mp3")
    with pytest.raises(InvalidArgument, match=r"stream_encoding: .*STREAM_ENCODING_OPUS \(4\), got 99"):
        stream_encoding_number(99)


def _malformed() -> dict[str, gen.AudioChunk]:
    audio = music(4800)
    s16 = audio_chunk(0, 0, audio, "pcm_s16le")
    flac = audio_chunk(0, 0, audio, "flac")
    wav = io.BytesIO()
    sf.write(wav, audio.T, RATE, format="WAV", subtype="PCM_16")
    cases = {
        "truncated s16": gen.AudioChunk(encoding=gen.STREAM_ENCODING_PCM_S16LE, data=s16.data[:-1], num_frames=4800),
        "s16 frames mismatch": gen.AudioChunk(encoding=gen.STREAM_ENCODING_PCM_S16LE, data=s16.data, num_frames=4801),
        "truncated flac": gen.AudioChunk(encoding=gen.STREAM_ENCODING_FLAC, data=flac.data[:40], num_frames=4800),
        "garbage flac": gen.AudioChunk(encoding=gen.STREAM_ENCODING_FLAC, data=b"not audio" * 50, num_frames=4800),
        "wav labelled flac": gen.AudioChunk(encoding=gen.STREAM_ENCODING_FLAC, data=wav.getvalue(), num_frames=4800),
        "flac frames mismatch": gen.AudioChunk(encoding=gen.STREAM_ENCODING_FLAC, data=flac.data, num_frames=9000),
        "flac channels mismatch": gen.AudioChunk(encoding=gen.STREAM_ENCODING_FLAC, data=flac.data, channels=1),
        "opus far off": gen.AudioChunk(encoding=gen.STREAM_ENCODING_OPUS, data=audio_chunk(0, 0, audio, "opus").data,
                                       num_frames=48_000),
        "unknown encoding": gen.AudioChunk(encoding=99, data=s16.data, num_frames=4800),
        "negative scale": gen.AudioChunk(encoding=gen.STREAM_ENCODING_PCM_S16LE, data=s16.data, scale=-1.0),
        "float32 frames mismatch": gen.AudioChunk(pcm_f32le=audio_chunk(0, 0, audio, None).pcm_f32le, num_frames=1),
    }
    return cases


@pytest.mark.parametrize("case", list(_malformed()))
def test_malformed_chunks_raise_wire_audio_error(case):
    with pytest.raises(WireAudioError, match="audio chunk of item 0 at frame 0"):
        decode_chunk(_malformed()[case])
