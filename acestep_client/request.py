"""Building a GenerateMusicRequest: validation plus the upload bytes, before anything goes on the wire.

Every SDK entry point (both clients, ``generate_music``, the CLI) builds its request here, so a bad
field or a missing file fails the same way, locally, with ``InvalidArgument`` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from pathlib import Path

from acestep_client.audio_io import FileFormat, check_encoder, detect_format, duration_seconds
from acestep_client.audio_uploads import read_header
from acestep_client.constants import DURATION_RANGE, SAMPLE_RATE
from acestep_client.convert import config_to_proto, params_to_proto
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2, orchestrator_pb2
from acestep_client.types import GenerationConfig, GenerationParams
from acestep_client.validation import shown, validate_config, validate_params
from acestep_client.wire_audio import stream_encoding_number

_FORMAT_ENUM = {
    "flac": generation_pb2.AUDIO_FORMAT_FLAC,
    "wav": generation_pb2.AUDIO_FORMAT_WAV,
    "mp3": generation_pb2.AUDIO_FORMAT_MP3,
    "opus": generation_pb2.AUDIO_FORMAT_OPUS,  # outputs only: uploads are detected as wav, flac or mp3
    "aac": generation_pb2.AUDIO_FORMAT_AAC,
    "wav32": generation_pb2.AUDIO_FORMAT_WAV32,
}
DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024
# What output_frames_limit adds to the longest output a request can give: rounding to latent frames, a length
# libsndfile only estimates from an mp3 header.
OUTPUT_SLACK_SECONDS = 1.0
SOURCE_LENGTH_SLACK = 1.05


def read_upload(field: str, path: str, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> generation_pb2.AudioInput:
    """The file at ``path`` as an AudioInput with its detected container; errors name ``field``.

    Its header is checked as the servers check it (at most 600 s, 8-192 kHz, 1-8 channels, a src_audio at least one
    latent frame long: acestep_client/audio_uploads.py), so a file they would refuse is not sent.
    """
    if "\x00" in path:
        raise InvalidArgument(field, f"must be a file path without NUL characters, got {shown(path)}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidArgument(field, f"file not found: {path}")
    size = file.stat().st_size
    if size > max_bytes:
        raise InvalidArgument(field, f"is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB upload limit")
    data = file.read_bytes()
    read_header(data, field, source=field == "src_audio")  # refuses anything but a wav, flac or mp3 file
    return generation_pb2.AudioInput(data=data, format=_FORMAT_ENUM[detect_format(data)], filename=file.name)


def build_request(
    params: GenerationParams,
    config: GenerationConfig,
    *,
    request_id: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    stream_encoding: str | int | None = None,
) -> orchestrator_pb2.GenerateMusicRequest:
    """Validate ``params``/``config`` and read their audio files; raises InvalidArgument on bad input.

    ``stream_encoding`` (one of STREAM_ENCODINGS, None = pcm_f32le) is how the audio chunks travel back.
    """
    if not isinstance(params, GenerationParams):
        raise InvalidArgument("params", f"must be a GenerationParams, got {type(params).__name__}")
    if not isinstance(config, GenerationConfig):
        raise InvalidArgument("config", f"must be a GenerationConfig, got {type(config).__name__}")
    validate_params(params)
    validate_config(config)
    check_encoder(config.audio_format)  # e.g. aac without PyAV: refused here, before any model work
    request = orchestrator_pb2.GenerateMusicRequest(
        params=params_to_proto(params),
        config=config_to_proto(config),
        request_id=request_id or uuid.uuid4().hex,
        stream_encoding=stream_encoding_number(stream_encoding),
    )
    if params.src_audio is not None:
        request.src_audio.CopyFrom(read_upload("src_audio", params.src_audio, max_upload_bytes))
    if params.reference_audio is not None:
        request.reference_audio.CopyFrom(read_upload("reference_audio", params.reference_audio, max_upload_bytes))
    return request


def request_file_format(request: orchestrator_pb2.GenerateMusicRequest) -> FileFormat:
    """How the SDK writes the request's files: its audio_format and, for mp3, bitrate and sample rate."""
    config = request.config
    spec = FileFormat(request_audio_format(request))
    if config.HasField("mp3_bitrate"):
        spec = dataclasses.replace(spec, mp3_bitrate=config.mp3_bitrate)
    if config.HasField("mp3_sample_rate"):
        spec = dataclasses.replace(spec, mp3_sample_rate=config.mp3_sample_rate)
    return spec


def request_audio_format(request: orchestrator_pb2.GenerateMusicRequest) -> str:
    """The output container a request asked for ('flac' when unspecified, as the API's default)."""
    for name, number in _FORMAT_ENUM.items():
        if request.config.audio_format == number:
            return name
    return "flac"


def caller_paths(request: orchestrator_pb2.GenerateMusicRequest) -> dict[str, str | None]:
    """The request's own audio paths: a result reports these, never the server's echo of them (a sidecar fed back
    with --from-json uploads the files it names, so a hostile server must not choose them)."""
    return {name: getattr(request.params, name) or None for name in ("src_audio", "reference_audio")}


def output_frames_limit(request: orchestrator_pb2.GenerateMusicRequest) -> int:
    """The most frames per item a correct server can stream back for ``request``: the SDK refuses more
    (an inflated length would otherwise be allocated; see acestep_client.stream_checks).

    Without a source: 600 s, the API's longest duration (audio codes and LM-chosen durations stay within it).
    With one: the source's own length, which may be longer, or a repaint window ending at up to 1200 s
    (repainting_end's bound), plus up to 600 s of silence before it (repainting_start >= -600). A source
    whose length cannot be read from its header (a server_path) counts as 1200 s.
    """
    longest = DURATION_RANGE[1]
    if request.HasField("src_audio"):
        source = duration_seconds(request.src_audio.data) if request.src_audio.data else None
        source = (source or 0.0) * SOURCE_LENGTH_SLACK
        longest = max(source, 2 * DURATION_RANGE[1]) + DURATION_RANGE[1]
    return math.ceil((longest + OUTPUT_SLACK_SECONDS) * SAMPLE_RATE)
