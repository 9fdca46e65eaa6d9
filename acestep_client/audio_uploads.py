"""Uploaded audio files (src_audio, reference_audio): checked from their header, then decoded within bounds.

A compressed file can declare far more audio than its size suggests (104 KB of FLAC holding 700 s of silence; 444 bytes
of WAV at 1 Hz that resample to 200 s at 48 kHz). Its sample rate, channels and length are read from the header and
checked before any sample is decoded, and decoding stops once it passes the limit, in case the header understated
it (a FLAC may leave its length unset). The SDK checks before sending, the orchestrator before encoding and the DiT
before decoding, each naming the field the file came in.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from acestep_client import constants as c
from acestep_client.audio_io import decode_audio, detect_format, unreadable
from acestep_client.errors import InvalidArgument

_UNKNOWN_FRAMES = 2**62  # libsndfile reports SF_COUNT_MAX when a header leaves the length unset


@dataclass(frozen=True)
class AudioHeader:
    """What a file's header declares; ``frames`` is None when it does not say."""

    frames: int | None
    sample_rate: int
    channels: int

    def model_samples(self, frames: int | None = None) -> int | None:
        """Samples per channel at 48 kHz once resampled (what the VAE encodes)."""
        frames = self.frames if frames is None else frames
        return None if frames is None else -(-frames * c.SAMPLE_RATE // self.sample_rate)


def _seconds(frames: int, rate: int) -> str:
    return f"{frames / rate:.6g} s"


def _check_length(field: str, header: AudioHeader, frames: int, *, source: bool) -> None:
    limit = c.UPLOAD_MAX_SECONDS
    if frames > limit * header.sample_rate:
        raise InvalidArgument(field, f"must be at most {limit:g} seconds long, got "
                                     f"{_seconds(frames, header.sample_rate)} ({frames} frames at "
                                     f"{header.sample_rate} Hz)")
    if frames == 0:
        raise InvalidArgument(field, "holds no audio (0 frames)")
    if source and header.model_samples(frames) < c.MIN_SOURCE_SAMPLES:
        shortest = c.MIN_SOURCE_SAMPLES / c.SAMPLE_RATE
        raise InvalidArgument(field, f"must be at least {shortest:g} s long (one {c.MIN_SOURCE_SAMPLES}-sample latent "
                                     f"frame at {c.SAMPLE_RATE} Hz, the shortest the VAE encodes), got "
                                     f"{_seconds(frames, header.sample_rate)} ({frames} frames at "
                                     f"{header.sample_rate} Hz)")


def read_header(data: bytes, field: str, *, source: bool) -> AudioHeader:
    """The checked header of an upload; ``source`` (src_audio) also needs one latent frame of audio.

    Raises InvalidArgument naming ``field`` for anything but a wav/flac/mp3 file at 8-192 kHz with 1-8 channels and
    at most 600 s of audio.
    """
    try:
        detect_format(data)
    except InvalidArgument:
        raise InvalidArgument(field, "is not a wav, flac or mp3 file") from None
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise unreadable(field, exc) from None
    frames = int(info.frames)
    header = AudioHeader(None if frames >= _UNKNOWN_FRAMES else frames, int(info.samplerate), int(info.channels))
    low, high = c.UPLOAD_SAMPLE_RATE_RANGE
    if not low <= header.sample_rate <= high:
        raise InvalidArgument(field, f"sample rate must be between {low} and {high} Hz, got {header.sample_rate} Hz")
    if not 1 <= header.channels <= c.UPLOAD_MAX_CHANNELS:
        raise InvalidArgument(field, f"must have 1-{c.UPLOAD_MAX_CHANNELS} channels, got {header.channels}")
    if header.frames is not None:
        _check_length(field, header, header.frames, source=source)
    return header


def decode_upload(data: bytes, field: str, *, source: bool) -> tuple[np.ndarray, int]:
    """An upload as (``[channels <= 2, samples]`` float32, sample rate), its header checked first.

    Only the first two channels are kept (as upstream uses them), block by block, and decoding stops one block past
    600 s whatever the header said, so memory stays within two channels of 600 s at the file's rate.
    """
    header = read_header(data, field, source=source)
    limit = math.floor(c.UPLOAD_MAX_SECONDS * header.sample_rate)
    audio, rate = decode_audio(data, field=field, max_frames=limit, max_channels=c.CHANNELS)
    _check_length(field, header, audio.shape[1], source=source)
    return audio, rate
