"""Command-line flags shared by the servers; every flag also reads an ``ACESTEP_*`` environment variable.

Kubernetes manifests set environment variables, people type flags; both reach the same setting.
"""

from __future__ import annotations

import argparse
import os
from typing import Any


def env_default(name: str, default: Any) -> Any:
    """``ACESTEP_<NAME>`` converted to the default's type, else the default."""
    raw = os.environ.get(f"ACESTEP_{name.upper()}")
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def add_flag(parser: argparse.ArgumentParser, name: str, default: Any, help_text: str, **kwargs: Any) -> None:
    env = f"ACESTEP_{name.upper().replace('-', '_')}"
    if isinstance(default, bool):  # --name / --no-name; the variable takes 1/true/yes/on
        parser.add_argument(f"--{name}", default=env_default(name.replace("-", "_"), default),
                            action=argparse.BooleanOptionalAction, help=f"{help_text} (env {env}; default {default!r})",
                            **kwargs)
        return
    kind = kwargs.pop("type", type(default) if default is not None and not isinstance(default, bool) else str)
    parser.add_argument(
        f"--{name}", default=env_default(name.replace("-", "_"), default), type=kind,
        help=f"{help_text} (env {env}; default {default!r})", **kwargs,
    )


def add_server_flags(
    parser: argparse.ArgumentParser, default_port: int, max_concurrency: int = 1, queue_size: int = 16
) -> None:
    add_flag(parser, "host", "127.0.0.1", "address to listen on; 0.0.0.0 in containers")
    add_flag(parser, "port", default_port, "gRPC port; 0 picks a free port and prints it")
    add_flag(parser, "metrics-port", -1, "Prometheus /metrics port; 0 picks one, -1 disables")
    add_flag(parser, "otlp-endpoint", "", "OTLP/gRPC collector the trace spans go to (the tracing extra); empty: "
             "OTEL_EXPORTER_OTLP_ENDPOINT if set, else no export")
    add_flag(parser, "queue-size", queue_size, "requests that may wait for a slot before RESOURCE_EXHAUSTED")
    add_flag(parser, "max-concurrency", max_concurrency, "requests running at once")
    add_flag(parser, "max-message-mb", 64, "largest gRPC message accepted or sent, MiB")
    add_flag(parser, "tls-cert", "", "PEM certificate chain; enables TLS")
    add_flag(parser, "tls-key", "", "PEM private key for --tls-cert")
    add_flag(parser, "tls-client-ca", "", "PEM CA bundle; clients must present a certificate it signed (mTLS)")
    add_flag(parser, "api-keys", "", "comma-separated API keys accepted in the x-api-key metadata; empty = open")
    add_flag(parser, "health-port", -1, "plaintext port serving only grpc.health.v1, for probes that cannot speak "
             "TLS (kubelet); 0 picks one, -1 disables")
    add_flag(parser, "reflection-without-key", False, "with --api-keys: serve gRPC reflection to callers without "
             "a key too (health is always open)")
    add_flag(parser, "grace-seconds", 30.0, "on SIGTERM, how long running requests may finish (queued ones are "
             "refused at once); then they end UNAVAILABLE and the process exits within 5 s")
    add_flag(parser, "log-level", "INFO", "logging level")


class _JoinedNames(argparse.Action):
    """A repeatable flag kept as one comma-separated string: ``--model a --model b,c`` -> ``"a,b,c"``. The first
    use on the command line replaces the default (or the ``ACESTEP_*`` variable) instead of adding to it."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = f"_joined_{self.dest}"
        before = getattr(namespace, self.dest) if getattr(namespace, seen, False) else ""
        setattr(namespace, seen, True)
        setattr(namespace, self.dest, ",".join(part for part in (before, str(values)) if part))


def split_names(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: the names of a :class:`_JoinedNames` flag."""
    return [part.strip() for part in value.split(",") if part.strip()]


def add_model_flags(parser: argparse.ArgumentParser, default_model: str, several: bool = False) -> None:
    """``several``: ``--model`` may name more than one folder (repeated or comma-separated; read them with
    :func:`split_names`), the first being the default."""
    add_flag(parser, "checkpoints", "./checkpoints", "checkpoint root in the released ACE-Step 1.5 layout")
    if several:
        add_flag(parser, "model", default_model, "model folder(s) under --checkpoints: repeat the flag or separate "
                 "names with commas to serve several, each with its own engine and memory; the first is the "
                 "default, used by requests that name none", action=_JoinedNames)
    else:
        add_flag(parser, "model", default_model, "model folder under --checkpoints")
    add_flag(parser, "device", "auto", "cpu, cuda, cuda:N or auto")
    add_flag(parser, "dtype", "auto", "float32, bfloat16, float16 or auto (bf16 on GPU, fp32 on CPU)")
    add_flag(parser, "max-batch", 8, "largest batch one request may ask for")
