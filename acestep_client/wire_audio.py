"""Audio chunks on the wire: the request's StreamEncoding, encoded once on the DiT side and decoded in the SDK.

float32 PCM stays the default and goes into ``AudioChunk.pcm_f32le`` exactly as before, so older clients
keep working. The compact encodings put their bytes in ``AudioChunk.data``:

- ``pcm_s16le``: interleaved int16, ``round(samples / scale * 32767)``; decoded back within
  ``0.5 / 32767 * scale`` of the float32 samples (half a 16-bit step).
- ``flac``: the same int16 samples as one complete 16-bit FLAC file per chunk, so it decodes to exactly
  what ``pcm_s16le`` gives (soundfile's own float<->int16 conversion is asymmetric, hence int16 in and out).
- ``opus``: one complete Ogg Opus file per chunk (libsndfile, the encoder's default bitrate), lossy. Each
  chunk is encoded on its own so any chunk decodes alone; libsndfile honours the Ogg pre-skip and end
  trimming, so a chunk decodes to exactly ``num_frames`` frames (a decoder that returns up to one Opus
  frame more or less is padded or trimmed to ``num_frames``).

``scale`` = max(1, peak of the chunk): the raw decoder output may exceed 1 (the item's gain is applied
after the stream), and dividing by it before quantising means nothing clips. ``num_frames`` is always
set by the sender (FLAC and Opus chunks without it are refused: their frames are unknown before decoding).
Anything a chunk says that does not add up raises :class:`WireAudioError`, which the SDK turns into a failed
result (DATA_LOSS), never an exception out of ``generate``. Nothing is allocated from an unchecked number:
:func:`announced_frames` checks a chunk's header against its byte count before the SDK keeps it, and a FLAC or
Opus file is read only up to the frames its chunk announced, whatever its own header claims.

Only numpy and soundfile: this module is part of the light SDK and must not import torch or server code.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import soundfile as sf

from acestep_client.constants import CHANNELS, SAMPLE_RATE, STREAM_ENCODINGS
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2

DEFAULT_STREAM_ENCODING = "pcm_f32le"
_BY_NAME: dict[str, int] = {
    "pcm_f32le": generation_pb2.STREAM_ENCODING_PCM_F32LE,
    "pcm_s16le": generation_pb2.STREAM_ENCODING_PCM_S16LE,
    "flac": generation_pb2.STREAM_ENCODING_FLAC,
    "opus": generation_pb2.STREAM_ENCODING_OPUS,
}
assert tuple(_BY_NAME) == STREAM_ENCODINGS
_BY_NUMBER = {number: name for name, number in _BY_NAME.items()}
INT16_FULL_SCALE = 32767.0
# Opus codes 2.5-60 ms frames; a decoder that does not trim the last one may return up to 60 ms more.
OPUS_FRAME_SLACK = 2880
# What a FLAC or Opus chunk may carry beyond its samples' float32 size: container headers (a 1-frame FLAC
# chunk is ~100 bytes, a 1-frame Opus one ~1.1 KiB). The compressed data itself is smaller than float32.
COMPRESSED_HEADER_ALLOWANCE = 64 * 1024
_RAW_WIDTH = {"pcm_f32le": 4, "pcm_s16le": 2}


class WireAudioError(ValueError):
    """An AudioChunk whose bytes do not decode to what it announces (truncated, wrong container, frames...)."""


def stream_encoding_number(encoding: str | int | None) -> int:
    """The StreamEncoding enum number of a name ('flac'), or of a number already; raises InvalidArgument.

    ``None`` and 0 (unspecified) mean float32 PCM. Names are case-insensitive.
    """
    if encoding is None:
        return generation_pb2.STREAM_ENCODING_PCM_F32LE
    if isinstance(encoding, str):
        number = _BY_NAME.get(encoding.strip().lower())
        if number is None:
            raise InvalidArgument("stream_encoding", f"must be one of {', '.join(STREAM_ENCODINGS)}, got {encoding!r}")
        return number
    if isinstance(encoding, bool) or not isinstance(encoding, (int, np.integer)):
        raise InvalidArgument("stream_encoding", f"must be a name ({', '.join(STREAM_ENCODINGS)}), got {encoding!r}")
    if encoding == generation_pb2.STREAM_ENCODING_UNSPECIFIED:
        return generation_pb2.STREAM_ENCODING_PCM_F32LE
    if int(encoding) not in _BY_NUMBER:
        allowed = ", ".join(f"{generation_pb2.StreamEncoding.Name(n)} ({n})" for n in sorted(_BY_NUMBER))
        raise InvalidArgument("stream_encoding", f"must be 0 (unspecified) or one of {allowed}, got {int(encoding)}")
    return int(encoding)


def stream_encoding_name(encoding: str | int | None) -> str:
    """'pcm_f32le', 'pcm_s16le', 'flac' or 'opus' for a name or enum number; raises InvalidArgument."""
    return _BY_NUMBER[stream_encoding_number(encoding)]


def _frames_first(audio: np.ndarray) -> np.ndarray:
    """``[channels, frames]`` -> contiguous float32 ``[frames, channels]``, non-finite samples as 0."""
    array = np.asarray(audio, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"audio must be [channels, frames], got shape {array.shape}")
    return np.ascontiguousarray(np.nan_to_num(array.T, nan=0.0, posinf=0.0, neginf=0.0))


def _scale_of(frames: np.ndarray) -> float:
    """max(1, peak) as the float32 the proto carries, so sender and receiver use the very same number."""
    peak = float(np.abs(frames).max()) if frames.size else 0.0
    return float(np.float32(max(1.0, peak)))


def _to_int16(frames: np.ndarray, scale: float) -> np.ndarray:
    scaled = frames / np.float32(scale) * np.float32(INT16_FULL_SCALE)
    return np.clip(np.rint(scaled), -INT16_FULL_SCALE, INT16_FULL_SCALE).astype("<i2")


def _from_int16(values: np.ndarray, scale: float) -> np.ndarray:
    return values.astype(np.float32) * np.float32(scale / INT16_FULL_SCALE)


def encode_chunk(audio: np.ndarray, encoding: str | int | None) -> tuple[bytes, float]:
    """``[channels, frames]`` float audio -> (bytes, scale) for ``encoding``.

    float32 gives the interleaved little-endian floats of ``AudioChunk.pcm_f32le`` and scale 1; every
    other encoding gives ``AudioChunk.data`` of the samples divided by ``scale`` = max(1, chunk peak).
    """
    name = stream_encoding_name(encoding)
    if name == "pcm_f32le":
        array = np.asarray(audio, dtype="<f4")
        if array.ndim != 2:
            raise ValueError(f"audio must be [channels, frames], got shape {array.shape}")
        return np.ascontiguousarray(array.T).tobytes(), 1.0
    frames = _frames_first(audio)
    scale = _scale_of(frames)
    if frames.shape[0] == 0:
        return b"", scale
    if name == "pcm_s16le":
        return _to_int16(frames, scale).tobytes(), scale
    buffer = io.BytesIO()
    if name == "flac":
        sf.write(buffer, _to_int16(frames, scale), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    else:
        sf.write(buffer, frames / np.float32(scale), SAMPLE_RATE, format="OGG", subtype="OPUS")
    return buffer.getvalue(), scale


def audio_chunk(item_index: int, start_frame: int, audio: np.ndarray, encoding: str | int | None):
    """The AudioChunk the DiT service streams for ``[channels, frames]`` audio: encoded once, here."""
    number = stream_encoding_number(encoding)
    data, scale = encode_chunk(audio, number)
    chunk = generation_pb2.AudioChunk(
        item_index=item_index,
        start_frame=start_frame,
        sample_rate_hz=SAMPLE_RATE,
        channels=audio.shape[0],
        encoding=number,
        num_frames=audio.shape[1],
        scale=scale,
    )
    if number == generation_pb2.STREAM_ENCODING_PCM_F32LE:
        chunk.pcm_f32le = data
    else:
        chunk.data = data
    return chunk


def _read_file(data: bytes, container: str, subtype: str, dtype: str, channels: int,
               limit: int) -> tuple[np.ndarray, int]:
    """A FLAC / Ogg Opus file -> ([frames, channels], sample rate), at most ``limit + 1`` frames read (the header's
    length is the sender's word: never allocated from); the container and channel count must be the ones named."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as handle:
            if handle.format != container or handle.subtype != subtype:
                raise WireAudioError(f"holds {handle.format}/{handle.subtype}, expected {container}/{subtype}")
            if handle.channels != channels:
                raise WireAudioError(f"announces {channels} channels, its data holds {handle.channels}")
            return handle.read(frames=limit + 1, dtype=dtype, always_2d=True), handle.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError, OverflowError) as exc:
        if isinstance(exc, WireAudioError):
            raise
        raise WireAudioError(f"is not a readable {container}/{subtype} file: {exc}") from None


def decode_chunk(chunk: generation_pb2.AudioChunk) -> np.ndarray:
    """Any AudioChunk -> float32 ``[channels, num_frames]``, multiplied back by its scale.

    Exact for float32; within half a 16-bit step (times scale) for pcm_s16le and flac. Raises
    WireAudioError when the chunk is malformed.
    """
    where = f"audio chunk of item {chunk.item_index} at frame {chunk.start_frame}"
    try:
        name = stream_encoding_name(chunk.encoding)
    except InvalidArgument:
        raise WireAudioError(f"{where}: unknown encoding {chunk.encoding}") from None
    channels = chunk.channels or CHANNELS
    if channels < 1:
        raise WireAudioError(f"{where}: channels must be positive, got {chunk.channels}")
    expected = chunk.num_frames  # 0: an older sender that did not set it (float32 only then)
    if expected < 0:
        raise WireAudioError(f"{where}: num_frames must not be negative, got {expected}")
    if name == "pcm_f32le":
        samples = _raw_pcm(chunk.pcm_f32le, 4, "<f4", channels, where).astype(np.float32)
    else:
        scale = chunk.scale or 1.0
        if not math.isfinite(scale) or scale <= 0:
            raise WireAudioError(f"{where}: scale must be a positive number, got {scale}")
        if not chunk.data:
            samples = np.zeros((0, channels), dtype=np.float32)
        elif name == "pcm_s16le":
            samples = _from_int16(_raw_pcm(chunk.data, 2, "<i2", channels, where), scale)
        elif name == "flac":
            samples = _from_int16(_decoded(chunk, "FLAC", "PCM_16", "int16", channels, where), scale)
        else:
            samples = _decoded(chunk, "OGG", "OPUS", "float32", channels, where) * np.float32(scale)
            samples = _fit_opus(samples, expected, where)
    if expected and samples.shape[0] != expected:
        raise WireAudioError(f"{where}: announces {expected} frames, its {name} data holds {samples.shape[0]}")
    return np.ascontiguousarray(samples.T)


def decode_chunks(chunks: Sequence[generation_pb2.AudioChunk]) -> list[np.ndarray]:
    """:func:`decode_chunk` of each, in order; FLAC and Opus chunks decode on parallel threads (Opus decodes at
    only ~25x real time with the soundfile wheel's libopus, and libsndfile releases the GIL)."""
    heavy = sum(chunk.encoding in (generation_pb2.STREAM_ENCODING_FLAC, generation_pb2.STREAM_ENCODING_OPUS)
                for chunk in chunks)
    workers = min(heavy, os.cpu_count() or 1, 8)
    if workers < 2:
        return [decode_chunk(chunk) for chunk in chunks]
    with ThreadPoolExecutor(workers, thread_name_prefix="acestep-decode") as pool:
        return list(pool.map(decode_chunk, chunks))


def announced_frames(chunk: generation_pb2.AudioChunk) -> int:
    """The frames a chunk carries, from its fields and byte count alone (nothing decoded or allocated).

    Raises WireAudioError unless the chunk is the API's audio (stereo, 48 kHz; 0 reads as those) in a known
    encoding whose payload can hold what it announces: raw PCM exactly, FLAC/Opus no more than their float32
    size plus :data:`COMPRESSED_HEADER_ALLOWANCE` (so a tiny ``num_frames`` cannot carry a huge payload).
    """
    where = f"audio chunk of item {chunk.item_index} at frame {chunk.start_frame}"
    try:
        name = stream_encoding_name(chunk.encoding)
    except InvalidArgument:
        raise WireAudioError(f"{where}: unknown encoding {chunk.encoding}") from None
    if chunk.channels not in (0, CHANNELS):
        raise WireAudioError(f"{where}: announces {chunk.channels} channels, the item's audio has {CHANNELS}")
    if chunk.sample_rate_hz not in (0, SAMPLE_RATE):
        raise WireAudioError(f"{where}: announces {chunk.sample_rate_hz} Hz, the item's audio is at {SAMPLE_RATE} Hz")
    announced = chunk.num_frames
    if announced < 0:
        raise WireAudioError(f"{where}: num_frames must not be negative, got {announced}")
    payload = chunk.pcm_f32le if name == "pcm_f32le" else chunk.data
    width = _RAW_WIDTH.get(name)
    if width is not None:
        frame_bytes = width * CHANNELS
        if len(payload) % frame_bytes:
            raise WireAudioError(f"{where}: {len(payload)} bytes are not whole frames of {CHANNELS} x {width}-byte "
                                 "samples")
        held = len(payload) // frame_bytes
        if announced and announced != held:
            raise WireAudioError(f"{where}: announces {announced} frames, its {name} data holds {held}")
        return held
    if payload and not announced:
        raise WireAudioError(f"{where}: a {name} chunk must announce its num_frames")
    if not payload and announced:
        raise WireAudioError(f"{where}: announces {announced} frames, carries no {name} data")
    if len(payload) > announced * CHANNELS * 4 + COMPRESSED_HEADER_ALLOWANCE:
        raise WireAudioError(f"{where}: {len(payload)} bytes of {name} for {announced} frames, more than float32 "
                             "samples take")
    return announced


def _raw_pcm(data: bytes, width: int, dtype: str, channels: int, where: str) -> np.ndarray:
    if len(data) % (width * channels):
        raise WireAudioError(f"{where}: {len(data)} bytes are not whole frames of {channels} x {width}-byte samples")
    return np.frombuffer(data, dtype=dtype).reshape(-1, channels)


def _decoded(chunk, container: str, subtype: str, dtype: str, channels: int, where: str) -> np.ndarray:
    if not chunk.num_frames:
        raise WireAudioError(f"{where}: a {container}/{subtype} chunk must announce its num_frames")
    limit = chunk.num_frames + (OPUS_FRAME_SLACK if container == "OGG" else 0)
    try:
        frames, rate = _read_file(chunk.data, container, subtype, dtype, channels, limit)
    except WireAudioError as exc:
        raise WireAudioError(f"{where}: {exc}") from None
    if rate != (chunk.sample_rate_hz or SAMPLE_RATE):
        raise WireAudioError(f"{where}: announces {chunk.sample_rate_hz} Hz, its data is at {rate} Hz")
    return frames


def _fit_opus(samples: np.ndarray, expected: int, where: str) -> np.ndarray:
    """Pad or trim an Opus chunk by at most one Opus frame to ``expected`` frames; more is an error."""
    if not expected or samples.shape[0] == expected:
        return samples
    if abs(samples.shape[0] - expected) > OPUS_FRAME_SLACK:
        raise WireAudioError(f"{where}: announces {expected} frames, its opus data holds {samples.shape[0]}")
    if samples.shape[0] > expected:
        return samples[:expected]
    return np.pad(samples, ((0, expected - samples.shape[0]), (0, 0)))
