"""Audio files in and out. Arrays are float32, channels first (``[channels, samples]``), as the API's tensors are.

Which library writes each output format (GenerationConfig.audio_format), and how:

- ``flac``: soundfile (libsndfile, bundled in its wheel), 16-bit, as the reference saves it.
- ``wav``: soundfile, 32-bit float samples (what upstream's torchaudio/soundfile path writes for float audio).
- ``wav32``: soundfile, 32-bit float WAV, upstream's explicit float format; the file is ``.wav``.
- ``mp3``: soundfile (libsndfile's LAME encoder), constant bitrate ``mp3_bitrate`` (libsndfile's compression
  level maps linearly onto 320-32 kb/s: :func:`mp3_compression_level`), at ``mp3_sample_rate``; 44100 Hz is
  resampled here (:func:`resample`, band-limited polyphase, numpy only).
- ``opus``: soundfile (libsndfile's libopus), Ogg Opus at 48 kHz, the encoder's default bitrate.
- ``aac``: PyAV (FFmpeg's native AAC-LC encoder at its default 128 kb/s, as upstream's ffmpeg path), in an MP4
  container (``.m4a``) whose edit list marks the encoder's priming and the exact length: raw ADTS (upstream's
  ``.aac``) cannot, and starts with 1024 extra samples. PyAV is optional: ``pip install 'acestep-grpc[aac]'``;
  without it ``aac`` is refused before the request is sent (:func:`check_encoder`).

Reading (uploads) is soundfile's: wav, flac and mp3.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from acestep_client.constants import AUDIO_FORMATS, CHANNELS, MP3_BITRATES, MP3_SAMPLE_RATES, SAMPLE_RATE
from acestep_client.errors import InvalidArgument
from acestep_client.extras import AAC_EXTRA_INSTALL

# soundfile's (format, subtype) of each format it writes; aac goes through PyAV.
_WRITE_AS = {
    "flac": ("FLAC", "PCM_16"),
    "wav": ("WAV", "FLOAT"),
    "wav32": ("WAV", "FLOAT"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}
EXTENSIONS = {"wav32": "wav", "aac": "m4a"}  # the others: the format's name


@dataclass(frozen=True)
class FileFormat:
    """How the SDK writes a result's files: GenerationConfig's audio_format plus its mp3 options."""

    audio_format: str = "flac"
    mp3_bitrate: str = "128k"
    mp3_sample_rate: int = SAMPLE_RATE

    @classmethod
    def of(cls, value: str | FileFormat) -> FileFormat:
        """A FileFormat from itself or a bare format name (the mp3 options at their defaults)."""
        return value if isinstance(value, FileFormat) else cls(value)

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.audio_format, self.audio_format)


def _check_format(audio_format: str) -> None:
    if audio_format not in AUDIO_FORMATS:
        raise InvalidArgument("audio_format", f"must be one of {', '.join(AUDIO_FORMATS)}, got {audio_format!r}")


def check_encoder(audio_format: str) -> None:
    """InvalidArgument naming audio_format when this install cannot write it (aac without PyAV)."""
    _check_format(audio_format)
    if audio_format == "aac" and importlib.util.find_spec("av") is None:
        raise InvalidArgument(
            "audio_format", f"aac files are encoded with PyAV (FFmpeg), which is not installed: {AAC_EXTRA_INSTALL}, "
                            "or choose flac, wav, wav32, mp3 or opus (soundfile)")


def mp3_compression_level(bitrate: str) -> float:
    """libsndfile's MP3 compression level for a constant ``bitrate`` ("128k"): it sets LAME's bitrate to
    ``int(320 - level * 288)`` kb/s at 32-48 kHz, so aim half a kb/s above the target to land on it exactly."""
    if bitrate not in MP3_BITRATES:
        raise InvalidArgument("mp3_bitrate", f"must be one of {', '.join(MP3_BITRATES)}, got {bitrate!r}")
    kbps = int(bitrate.removesuffix("k"))
    return max(0.0, (320.0 - (kbps + 0.5)) / 288.0)


def _encode_aac(frames: np.ndarray, sample_rate: int) -> bytes:
    """[channels, samples] float32 -> AAC-LC in MP4 bytes, through PyAV (imported only here: optional)."""
    try:
        import av
    except ImportError:
        check_encoder("aac")
        raise
    layout = "stereo" if frames.shape[0] == 2 else "mono"
    buffer = io.BytesIO()
    # movie_timescale = the sample rate: the edit list then states the length to the sample, not to the ms.
    with av.open(buffer, mode="w", format="ipod", options={"movie_timescale": str(sample_rate)}) as container:
        stream = container.add_stream("aac", rate=sample_rate, layout=layout)
        stream.time_base = Fraction(1, sample_rate)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(frames), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = 0  # with timestamps the encoder's priming packets get negative ones, hence the edit list
        frame.time_base = stream.time_base
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def encode_audio(audio: np.ndarray, sample_rate: int, audio_format: str | FileFormat) -> bytes:
    """Encode ``[channels, samples]`` float audio into a file's bytes."""
    spec = FileFormat.of(audio_format)
    _check_format(spec.audio_format)
    samples = np.asarray(audio, dtype=np.float32)
    if spec.audio_format == "aac":
        return _encode_aac(samples, sample_rate)
    container, subtype = _WRITE_AS[spec.audio_format]
    options: dict[str, object] = {}
    if spec.audio_format == "mp3":
        if spec.mp3_sample_rate not in MP3_SAMPLE_RATES:
            allowed = " or ".join(str(rate) for rate in MP3_SAMPLE_RATES)
            raise InvalidArgument("mp3_sample_rate", f"must be {allowed} (Hz), got {spec.mp3_sample_rate!r}")
        options = {"compression_level": mp3_compression_level(spec.mp3_bitrate), "bitrate_mode": "CONSTANT"}
        samples = resample(samples, sample_rate, spec.mp3_sample_rate)
        sample_rate = spec.mp3_sample_rate
    buffer = io.BytesIO()
    sf.write(buffer, np.ascontiguousarray(samples.T), sample_rate, format=container, subtype=subtype, **options)
    return buffer.getvalue()


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_audio(
    path: str | os.PathLike, audio: np.ndarray, sample_rate: int, audio_format: str | FileFormat
) -> Path:
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


_READ_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError)
_BLOCK_FRAMES = 1 << 18


def unreadable(field: str, exc: BaseException) -> InvalidArgument:
    """InvalidArgument naming ``field`` for a file libsndfile could not read, with its reason."""
    reason = getattr(exc, "error_string", None) or str(exc).split(": ")[-1]
    return InvalidArgument(field, f"is not a readable wav/flac/mp3 file: {reason}")


def decode_audio(
    data: bytes, *, field: str = "audio", max_frames: int | None = None, max_channels: int | None = None
) -> tuple[np.ndarray, int]:
    """Decode a file's bytes into ``([channels, samples]`` float32, sample_rate).

    Read block by block: a header may leave the length unset (a streamed FLAC). ``max_frames`` stops reading once
    more than that many frames came (the caller sees ``max_frames + 1`` or fewer); ``max_channels`` keeps the first
    ones only, so a many-channel file never sits in memory whole.
    """
    blocks: list[np.ndarray] = []
    total = 0
    try:
        with sf.SoundFile(io.BytesIO(data)) as file:
            rate = int(file.samplerate)
            while max_frames is None or total <= max_frames:
                block = file.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if not len(block):
                    break
                total += len(block)
                blocks.append(np.ascontiguousarray(block[:, :max_channels].T))
            channels = min(file.channels, max_channels or file.channels)
    except _READ_ERRORS as exc:
        raise unreadable(field, exc) from None
    if not blocks:
        return np.zeros((channels, 0), dtype=np.float32), rate
    return (np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]), rate


def duration_seconds(data: bytes) -> float | None:
    """An audio file's length in seconds from its header (nothing decoded); None when it cannot be read."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as handle:
            if handle.samplerate > 0 and handle.frames >= 0:
                return handle.frames / handle.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError, OverflowError):
        pass
    return None


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
