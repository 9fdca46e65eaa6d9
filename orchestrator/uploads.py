"""The audio a generate_music request uploads: which files it names, and their bytes.

An AudioInput alone is enough: when GenerateMusicRequest.src_audio (or reference_audio) carries bytes
or a server path and params leave the path unset, the params take the upload's name
(``AudioInput.filename``, else ``"upload"``), so a client need not name the file twice. A params path
without an AudioInput is an error that says exactly that.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from acestep_client.convert import check_enum
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.proto.acestep.v1 import orchestrator_pb2
from acestep_client.types import GenerationParams

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


def read_upload(upload: gen_pb2.AudioInput, field: str, named: str, root: Path | None) -> bytes:
    """The bytes of the file params name ``named``: inline, or a server path under ``root``."""
    which = upload.WhichOneof("source")
    if which == "data":
        if not upload.data:
            raise InvalidArgument(field, "audio upload is empty")
        return upload.data
    if which == "server_path":
        if root is None:
            raise InvalidArgument(field, "server-side paths are disabled on this server; upload the bytes")
        path = (root / upload.server_path).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            raise InvalidArgument(field, f"server_path must name a file under the allowed root, got "
                                         f"{upload.server_path!r}")
        return path.read_bytes()
    raise InvalidArgument(
        field,
        f"params.{field} names {named!r} but the request carries no {field} AudioInput with its bytes: send "
        f"them in GenerateMusicRequest.{field} (data, or server_path under the server's --audio-root)",
    )
