"""``acestep understand | create-sample | format``: the LM's text modes from the command line.

Prints the result as JSON on stdout (progress and server lines go to stderr). Exit codes as
``acestep generate``: 0 success, 1 the call failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from acestep_client.cli_common import add_connection_flags, announce, client_options, text_or_file
from acestep_client.errors import InvalidArgument

TEXT_COMMANDS = {"understand": "understand", "create-sample": "create_sample", "format": "format_sample"}


def _add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=float, default=0.85, help="sampling temperature 0-2 (default 0.85)")
    parser.add_argument("--top-k", type=int, default=None, help="top-k (default off)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling 0-1 (default off)")
    parser.add_argument("--no-constrained-decoding", dest="use_constrained_decoding", action="store_false")
    parser.add_argument("--seed", type=int, default=None, help="seed, 0-4294967295 (default random, reported)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="cap on CoT + lyrics tokens (1-4032)")


def add_text_commands(commands: Any) -> None:
    understand = commands.add_parser("understand", help="describe the song behind 5 Hz audio codes")
    understand.add_argument("--codes", default="", help="'<|audio_code_N|>...'; @FILE reads a file; empty: an example")
    create = commands.add_parser("create-sample", help="write caption, lyrics and metadata from a free-text query")
    create.add_argument("--query", default="", help="e.g. 'a soft Bengali love song for a quiet evening'")
    create.add_argument("--instrumental", action="store_true")
    create.add_argument("--vocal-language", default=None, help="ISO 639-1 code written into the metadata")
    fmt = commands.add_parser("format", help="enhance a caption and lyrics and add metadata")
    fmt.add_argument("--caption", default="")
    fmt.add_argument("--lyrics", default="", help="lyrics; @FILE reads a file")
    fmt.add_argument("--bpm", type=int, default=None)
    fmt.add_argument("--duration", type=float, default=None)
    fmt.add_argument("--keyscale", default=None)
    fmt.add_argument("--timesignature", default=None)
    fmt.add_argument("--language", default=None)
    for parser in (understand, create, fmt):
        _add_sampling_flags(parser)
        add_connection_flags(parser)


def _inputs(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    if mode == "understand":
        return {"audio_codes": text_or_file("audio_codes", args.codes)}
    if mode == "create_sample":
        return {"query": args.query, "instrumental": args.instrumental, "vocal_language": args.vocal_language}
    metas = {k: getattr(args, k) for k in ("bpm", "duration", "keyscale", "timesignature", "language")}
    return {
        "caption": args.caption,
        "lyrics": text_or_file("lyrics", args.lyrics),
        "user_metadata": {k: v for k, v in metas.items() if v is not None},
    }


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "use_constrained_decoding": args.use_constrained_decoding,
        "seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
    }


async def _embedded(args: argparse.Namespace, mode: str, inputs: dict, sampling: dict) -> Any:
    from acestep_client.client import AsyncAceStepClient
    from orchestrator.stack import embedded_stack

    async with (
        embedded_stack(args.checkpoints, announce=announce) as address,
        AsyncAceStepClient(address, timeout=args.timeout) as client,
    ):
        return await client.describe(mode, inputs, sampling, None, None)


def run_text_command(args: argparse.Namespace) -> int:
    from acestep_client.client import AceStepClient
    from acestep_client.describe import build_task

    mode = TEXT_COMMANDS[args.command]
    try:
        inputs, sampling = _inputs(args, mode), _sampling(args)
        build_task(mode, inputs, sampling)  # validates: nothing starts on bad input
    except InvalidArgument as exc:
        print(f"acestep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if args.target:
        with AceStepClient(args.target, **client_options(args)) as client:
            result = client.describe(mode, inputs, sampling, None, None)
    else:
        result = asyncio.run(_embedded(args, mode, inputs, sampling))
    if not result.success:
        print(f"acestep {args.command}: failed: {result.error}", file=sys.stderr)
        return 2 if (result.error or "").startswith("INVALID_ARGUMENT") else 1
    print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    return 0
