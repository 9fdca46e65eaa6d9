"""What a plain install lacks: ``pip install acestep-grpc`` is the client SDK (grpcio, protobuf, numpy,
soundfile); the servers and the in-process stack need the ``serve`` extra. Commands that need it say so
in one line instead of an import traceback.
"""

from __future__ import annotations

SERVE_EXTRA_INSTALL = "pip install 'acestep-grpc[serve]'"
# audio_format="aac" files are encoded with PyAV; every other format with soundfile (acestep_client.audio_io).
AAC_EXTRA_INSTALL = "pip install 'acestep-grpc[aac]'"

# Top-level modules that only the `serve` extra brings (pyproject.toml [project.optional-dependencies]).
SERVE_EXTRA_MODULES = frozenset({
    "torch", "transformers", "diffusers", "safetensors", "tokenizers", "yaml",
    "grpc_health", "grpc_reflection", "prometheus_client",
    "huggingface_hub",  # a dependency of transformers: `acestep fetch-checkpoints`
})


def missing_serve_extra(exc: ImportError) -> str | None:
    """The missing module when ``exc`` means "the serve extra is not installed", else None."""
    name = (exc.name or "").split(".")[0]
    return name if name in SERVE_EXTRA_MODULES else None


def serve_extra_message(exc: ImportError) -> str | None:
    """One line for a user who ran a server-side command on a client-only install, else None."""
    module = missing_serve_extra(exc)
    if module is None:
        return None
    return f"needs the server extras: {SERVE_EXTRA_INSTALL} (in a clone: pip install -e '.[serve]'; " \
           f"module {module!r} is not installed)"
