"""Audio files in and out: FLAC, WAV and MP3 through soundfile (libsndfile, bundled in its wheel).

Arrays are float32, channels first (``[channels, samples]``), as the API's tensors are.
"""

from __future__ import annotations

import functools
import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from acestep_client.constants import AUDIO_FORMATS, CHANNELS, SAMPLE_RATE
from acestep_client.errors import InvalidArgument

# (soundfile format, subtype). FLAC at 16 bit as the reference saves it; WAV as float (lossless).
_WRITE_AS = {"flac": ("FLAC", "PCM_16"), "wav": ("WAV", "FLOAT"), "mp3": ("MP3", "MPEG_LAYER_III")}


def _check_format(audio_format: str) -> tuple[str, str]:
    if audio_format not in _WRITE_AS:
        raise InvalidArgument("audio_format", f"must be one of {', '.join(AUDIO_FORMATS)}, got {audio_format!r}")
    return _WRITE_AS[audio_format]


def encode_audio(audio: np.ndarray, sample_rate: int, audio_format: str) -> bytes:
    """Encode ``[channels, samples]`` float audio into a file's bytes."""
    container, subtype = _check_format(audio_format)
    buffer = io.BytesIO()
    frames = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).T)
    sf.write(buffer, frames, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, audio_format: str) -> Path:
    """Write atomically (temp file + rename), so a failure never leaves a partial file behind."""
    path = Path(path)
    data = encode_audio(audio, sample_rate, audio_format)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a file's bytes into ``([channels, samples]`` float32, sample_rate)."""
    try:
        frames, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise InvalidArgument("audio", f"is not a readable wav/flac/mp3 file: {exc}") from None
    return np.ascontiguousarray(frames.T), int(rate)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    path = Path(path)
    if not path.is_file():
        raise InvalidArgument("audio", f"file not found: {path}")
    return decode_audio(path.read_bytes())


def detect_format(data: bytes) -> str:
    """The container of an audio file's bytes, from its magic number."""
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    raise InvalidArgument("audio", "is not a wav, flac or mp3 file")


def _sinc_kernel(up: int, down: int, half_width: int = 16, beta: float = 8.6) -> np.ndarray:
    """Kaiser-windowed sinc low-pass for polyphase resampling at up/down."""
    cutoff = 1.0 / max(up, down)
    taps = 2 * half_width * max(up, down) + 1
    t = np.arange(taps) - (taps - 1) / 2
    return (up * cutoff * np.sinc(cutoff * t) * np.kaiser(taps, beta)).astype(np.float64)


def resample(audio: np.ndarray, source_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited polyphase resampling of ``[channels, samples]`` audio, done in blocks."""
    if source_rate == target_rate:
        return np.asarray(audio, dtype=np.float32)
    if source_rate <= 0:
        raise InvalidArgument("audio", f"sample rate must be positive, got {source_rate}")
    g = math.gcd(source_rate, target_rate)
    up, down = target_rate // g, source_rate // g
    kernel = _sinc_kernel(up, down)
    pad = (len(kernel) - 1) // 2
    n_in = audio.shape[-1]
    n_out = (n_in * up + down - 1) // down
    # Output m sits at upsampled position m*down; its taps touch inputs (m*down + pad - j)/up.
    per_phase = (len(kernel) + up - 1) // up
    padded_kernel = np.zeros(per_phase * up)
    padded_kernel[: len(kernel)] = kernel
    phases = padded_kernel.reshape(per_phase, up).T  # [up, per_phase], phases[p, k] = kernel[k*up + p]
    src = np.pad(np.asarray(audio, dtype=np.float64), ((0, 0), (per_phase, per_phase)))
    out = np.empty((audio.shape[0], n_out), dtype=np.float32)
    block = 1 << 15
    for start in range(0, n_out, block):
        m = np.arange(start, min(start + block, n_out))
        position = m * down + pad
        base, phase = position // up, position % up
        index = base[:, None] - np.arange(per_phase)[None, :] + per_phase
        valid = (index >= 0) & (index < src.shape[1])
        taps = phases[phase]
        for ch in range(audio.shape[0]):
            gathered = np.where(valid, src[ch][np.clip(index, 0, src.shape[1] - 1)], 0.0)
            out[ch, m] = (gathered * taps).sum(axis=1)
    return out


def to_model_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Any file's audio as the model takes it: stereo, 48 kHz, float32, clamped to [-1, 1]."""
    if audio.ndim != 2 or audio.shape[0] < 1:
        raise InvalidArgument("audio", f"must have shape [channels, samples], got {audio.shape}")
    if audio.shape[0] == 1:
        audio = np.repeat(audio, CHANNELS, axis=0)
    audio = audio[:CHANNELS]
    audio = resample(audio, sample_rate, SAMPLE_RATE)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def pcm_bytes(audio: np.ndarray) -> bytes:
    """``[channels, samples]`` -> interleaved float32 little-endian, as AudioChunk carries it."""
    return np.ascontiguousarray(np.asarray(audio, dtype="<f4").T).tobytes()


def pcm_array(data: bytes, channels: int = CHANNELS) -> np.ndarray:
    """Inverse of :func:`pcm_bytes`."""
    return np.frombuffer(data, dtype="<f4").reshape(-1, channels).T.astype(np.float32)
