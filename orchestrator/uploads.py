"""The audio a generate_music request uploads: which files it names, and their bytes.

An AudioInput alone is enough: when GenerateMusicRequest.src_audio (or reference_audio) carries bytes
or a server path and params leave the path unset, the params take the upload's name
(``AudioInput.filename``, else ``"upload"``), so a client need not name the file twice. A params path
without an AudioInput is an error that says exactly that.

Every upload's header is checked here, before the DiT decodes or encodes anything (acestep_client/audio_uploads.py):
at most 600 s, 8-192 kHz, 1-8 channels, a source at least one latent frame long; a repaint's padded length too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from acestep_client.audio_uploads import AudioHeader, read_header
from acestep_client.convert import check_enum
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.proto.acestep.v1 import orchestrator_pb2
from acestep_client.types import GenerationParams
from acestep_client.validation import check_repainting, shown

UPLOAD_FIELDS = ("src_audio", "reference_audio")
DEFAULT_UPLOAD_NAME = "upload"


def name_uploads(request: orchestrator_pb2.GenerateMusicRequest, params: GenerationParams) -> GenerationParams:
    """``params`` with each unset upload path named after the request's AudioInput for it, if one came."""
    names = {}
    for field in UPLOAD_FIELDS:
        upload: gen_pb2.AudioInput = getattr(request, field)
        check_enum(f"{field}.format", gen_pb2.AudioFormat, upload.format)
        if getattr(params, field) is None and upload.WhichOneof("source") is not None:
            names[field] = upload.filename or DEFAULT_UPLOAD_NAME
    return dataclasses.replace(params, **names) if names else params


def read_upload(upload: gen_pb2.AudioInput, field: str, named: str, root: Path | None,
                max_bytes: int | None = None) -> tuple[bytes, AudioHeader]:
    """The bytes of the file params name ``named`` (inline, or a server path under ``root``) and its checked
    header (a wav, flac or mp3 file within the upload bounds)."""
    data = _upload_bytes(upload, field, named, root, max_bytes)
    return data, read_header(data, field, source=field == "src_audio")


def check_repaint_length(params: GenerationParams, header: AudioHeader) -> None:
    """repaint/lego: the source with the silence its span adds is at most 600 s (the length its header declares)."""
    if params.task_type not in ("repaint", "lego"):
        return
    if header.frames is not None:
        check_repainting(params.repainting_start, params.repainting_end, header.frames / header.sample_rate)


def _upload_bytes(upload: gen_pb2.AudioInput, field: str, named: str, root: Path | None,
                  max_bytes: int | None) -> bytes:
    which = upload.WhichOneof("source")
    if which == "data":
        if not upload.data:
            raise InvalidArgument(field, "audio upload is empty")
        return upload.data
    if which == "server_path":
        if root is None:
            raise InvalidArgument(field, "server-side paths are disabled on this server; upload the bytes")
        if "\x00" in upload.server_path:
            raise InvalidArgument(field, f"server_path must be a path without NUL characters, got "
                                         f"{shown(upload.server_path)}")
        try:
            path = (root / upload.server_path).resolve()
            found = path.is_relative_to(root.resolve()) and path.is_file()
        except (OSError, ValueError):  # a name too long for the file system, say
            found = False
        if not found:
            raise InvalidArgument(field, f"server_path must name a file under the allowed root, got "
                                         f"{shown(upload.server_path)}")
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise InvalidArgument(field, f"server_path must name a file of at most {max_bytes} bytes, got {size}")
        return path.read_bytes()
    raise InvalidArgument(
        field,
        f"params.{field} names {shown(named)} but the request carries no {field} AudioInput with its bytes: send "
        f"them in GenerateMusicRequest.{field} (data, or server_path under the server's --audio-root)",
    )
