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

from acestep_client.cli_common import (
    add_connection_flags,
    announce,
    client_options,
    codes_or_file,
    terminal_safe,
    text_or_file,
)
from acestep_client.cli_errors import describe_failure, input_error
from acestep_client.errors import AceStepError, InvalidArgument

TEXT_COMMANDS = {"understand": "understand", "create-sample": "create_sample", "format": "format_sample"}
# Request field -> the flag that sets it (errors name flags).
_FIELD_FLAGS = {
    "audio_codes": "--codes", "query": "--query", "instrumental": "--instrumental",
    "vocal_language": "--vocal-language",
    "caption": "--caption", "lyrics": "--lyrics", "bpm": "--bpm", "duration": "--duration", "keyscale": "--keyscale",
    "timesignature": "--timesignature", "language": "--language", "temperature": "--temperature",
    "top_k": "--top-k", "top_p": "--top-p", "seed": "--seed", "max_new_tokens": "--max-new-tokens",
    "use_constrained_decoding": "--no-constrained-decoding",
}


def _add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=float, default=0.85, help="sampling temperature 0-2 (default: 0.85)")
    parser.add_argument("--top-k", type=int, default=None, help="top-k (default: off)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling 0-1 (default: off)")
    parser.add_argument("--no-constrained-decoding", dest="use_constrained_decoding", action="store_false",
                        help="let the LM write freely where a grammar keeps it to valid values (default: constrained)")
    parser.add_argument("--seed", type=int, default=None, help="seed, 0-4294967295 (default: random, reported)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="cap on chain-of-thought + lyrics tokens, 1-4032 (default: 4032)")


_OUTPUT = "Prints the result as JSON on stdout; exit 0 success, 1 the call failed, 2 bad input."
_UNDERSTAND = f"""\
Describe the song behind 5 Hz audio codes: caption, lyrics, bpm, key, duration, language.
Every `acestep generate` writes a sidecar <key>.json beside each audio file; pass it as
--codes @outputs/<key>.json (a plain text file of codes works too).
{_OUTPUT}"""
_CREATE = f"""\
Write a complete sample from a free-text query: caption, lyrics and metadata, ready for
`acestep generate --from-json` (save the printed JSON).
{_OUTPUT}"""
_FORMAT = f"""\
Enhance a caption and lyrics and fill in the metadata you leave out (bpm, duration, key, time
signature, language); the values you give are kept.
{_OUTPUT}"""


def add_text_commands(commands: Any) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    understand = commands.add_parser("understand", help="describe the song behind 5 Hz audio codes",
                                     description=_UNDERSTAND, formatter_class=raw)
    understand.add_argument("--codes", default="", help="'<|audio_code_N|>...'; @FILE reads a codes file or a sidecar "
                                                        "<key>.json written by generate (default: an example song)")
    create = commands.add_parser("create-sample", help="write caption, lyrics and metadata from a free-text query",
                                 description=_CREATE, formatter_class=raw)
    create.add_argument("--query", default="", help="what you want, e.g. 'a soft Bengali love song for a quiet "
                                                    "evening' (default: empty, the LM improvises)")
    create.add_argument("--instrumental", action="store_true", help="no vocals: no lyrics are written (default: off)")
    create.add_argument("--vocal-language", default=None, help="ISO 639-1 code of the lyrics, e.g. en, zh "
                                                               "(default: the LM chooses)")
    fmt = commands.add_parser("format", help="enhance a caption and lyrics and add metadata",
                              description=_FORMAT, formatter_class=raw)
    fmt.add_argument("--caption", default="", help="the caption to enhance (default: empty)")
    fmt.add_argument("--lyrics", default="", help="lyrics to format; @FILE reads a file (default: empty)")
    fmt.add_argument("--bpm", type=int, default=None, help="beats per minute 30-300, kept (default: the LM chooses)")
    fmt.add_argument("--duration", type=float, default=None, help="seconds 10-600, kept (default: the LM chooses)")
    fmt.add_argument("--keyscale", default=None, help="key, e.g. 'C Major', kept (default: the LM chooses)")
    fmt.add_argument("--timesignature", default=None, help="2, 3, 4 or 6, kept (default: the LM chooses)")
    fmt.add_argument("--language", default=None, help="ISO 639-1 code, kept (default: the LM chooses)")
    for parser in (understand, create, fmt):
        _add_sampling_flags(parser)
        add_connection_flags(parser)


def _inputs(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    if mode == "understand":
        return {"audio_codes": codes_or_file("audio_codes", args.codes)}
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
        print(f"acestep {args.command}: error: {input_error(exc, {}, _FIELD_FLAGS)}", file=sys.stderr)
        return 2
    if args.target:
        with AceStepClient(args.target, **client_options(args)) as client:
            result = client.describe(mode, inputs, sampling, None, None)
    else:
        try:
            result = asyncio.run(_embedded(args, mode, inputs, sampling))
        except AceStepError as exc:  # the in-process stack could not start
            print(f"acestep {args.command}: error: {exc}", file=sys.stderr)
            return 1
    if not result.success:
        failure = describe_failure(result.error or "UNKNOWN: no error text", None, _FIELD_FLAGS, _FIELD_FLAGS,
                                   work_started=False, target=args.target, dit_model="", command=args.command)
        for line in failure.lines:
            print(terminal_safe(line), file=sys.stderr)
        return failure.exit_code
    print(terminal_safe(json.dumps(result.to_dict(), ensure_ascii=False, indent=2)))  # C1 controls stay raw in JSON
    return 0
