"""What the ``acestep`` subcommands share: where to connect, how to read @FILE values."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from acestep_client.errors import InvalidArgument


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default=None,
                        help="orchestrator HOST:PORT; without it an in-process stack runs from --checkpoints")
    parser.add_argument("--api-key", default=os.environ.get("ACESTEP_API_KEY"),
                        help="sent as x-api-key (default: $ACESTEP_API_KEY)")
    parser.add_argument("--root-cert", default=None, help="PEM CA bundle: connect with TLS")
    parser.add_argument("--client-key", default=None, help="PEM client key (mTLS, with --client-cert)")
    parser.add_argument("--client-cert", default=None, help="PEM client certificate chain (mTLS)")
    parser.add_argument("--timeout", type=float, default=None, help="deadline of the call, seconds (default: none)")
    parser.add_argument("--checkpoints", default="./checkpoints",
                        help="checkpoint folder of the in-process stack; an empty one gets tiny RANDOM checkpoints "
                             "(default: ./checkpoints)")


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "api_key": args.api_key,
        "root_certificates": args.root_cert,
        "private_key": args.client_key,
        "certificate_chain": args.client_cert,
        "timeout": args.timeout,
    }


def text_or_file(field: str, value: str) -> str:
    """``@PATH`` reads the file; anything else is the value itself."""
    if not value.startswith("@"):
        return value
    path = Path(value[1:]).expanduser()
    if not path.is_file():
        raise InvalidArgument(field, f"file not found: {path}")
    return path.read_text(encoding="utf-8")


def codes_or_file(field: str, value: str) -> str:
    """Audio codes: the value, ``@FILE`` with codes, or ``@FILE.json``, a sidecar ``acestep generate`` wrote."""
    from acestep_client.sidecar import codes_from_text

    return codes_from_text(field, text_or_file(field, value), value[1:] if value.startswith("@") else "")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """Server-sent text as the terminal may show it: control characters (escape sequences above all, which can
    rewrite the screen or the window title) become U+FFFD; newlines and tabs stay."""
    return _CONTROL.sub("\ufffd", text)


def announce(message: str) -> None:
    """Server start-up lines of the in-process stack go to stderr, keeping stdout for results."""
    print(message, file=sys.stderr, flush=True)
