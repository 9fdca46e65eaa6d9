"""The ``acestep`` command: generate music (against a server or an in-process stack), the LM's text
modes (``cli_text``), run servers, write tiny random checkpoints.

Exit codes: 0 success, 1 generation failed, 2 bad input (nothing is written), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from acestep_client.cli_common import add_connection_flags, announce, client_options, text_or_file
from acestep_client.cli_text import TEXT_COMMANDS, add_text_commands, run_text_command
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import orchestrator_pb2
from acestep_client.types import GenerationConfig, GenerationParams, GenerationResult

# Flags whose dest is a GenerationParams field: (flag, type, help).
_PARAM_FLAGS: list[tuple[str, type, str]] = [
    ("--caption", str, "text description of the music (max 512 characters)"),
    ("--lyrics", str, "lyrics, or '[Instrumental]' (max 4096 characters); @FILE reads a file"),
    ("--duration", float, "seconds, 10-600; <= 0 lets the model choose"),
    ("--bpm", int, "beats per minute, 30-300"),
    ("--keyscale", str, "key, e.g. 'C Major', 'F# minor', 'Am'"),
    ("--timesignature", str, "2, 3, 4 or 6 (or 2/4, 3/4, 4/4, 6/8)"),
    ("--vocal-language", str, "ISO 639-1 code or 'unknown'"),
    ("--task-type", str, "text2music, cover, repaint, lego, extract or complete"),
    ("--instruction", str, "task instruction (lego/extract/complete name a track)"),
    ("--src-audio", str, "source audio file (cover, repaint, lego, extract, complete)"),
    ("--reference-audio", str, "reference audio file"),
    ("--audio-codes", str, "'<|audio_code_N|>...' hints; @FILE reads a file"),
    ("--inference-steps", int, "denoising steps (turbo 1-8, base 1-100)"),
    ("--guidance-scale", float, "CFG scale 1-15 (base models)"),
    ("--cfg-interval-start", float, "CFG start ratio 0-1"),
    ("--cfg-interval-end", float, "CFG end ratio 0-1"),
    ("--repainting-start", float, "repaint start, seconds"),
    ("--repainting-end", float, "repaint end, seconds (-1 = end of audio)"),
    ("--audio-cover-strength", float, "0-1"),
    ("--seed", int, "seed of the first item (-1 = random); turns random seeds off"),
    ("--lm-temperature", float, "LM sampling temperature 0-2"),
    ("--lm-cfg-scale", float, "LM guidance scale"),
    ("--lm-top-k", int, "LM top-k (0 = off)"),
    ("--lm-top-p", float, "LM nucleus sampling 0-1"),
    ("--lm-negative-prompt", str, "LM negative prompt"),
]
# Boolean switches: (flag, params field, value stored).
_PARAM_SWITCHES: list[tuple[str, str, bool]] = [
    ("--instrumental", "instrumental", True),
    ("--use-adg", "use_adg", True),
    ("--no-thinking", "thinking", False),
    ("--no-cot-metas", "use_cot_metas", False),
    ("--no-cot-caption", "use_cot_caption", False),
    ("--no-cot-language", "use_cot_language", False),
    ("--no-constrained-decoding", "use_constrained_decoding", False),
]
_PARAM_FIELDS = [flag[2:].replace("-", "_") for flag, _, _ in _PARAM_FLAGS] + [f for _, f, _ in _PARAM_SWITCHES]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acestep", description="ACE-Step 1.5 music generation over gRPC.")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="generate music", description="Generate music; writes files to --out.")
    for flag, kind, text in _PARAM_FLAGS:
        gen.add_argument(flag, type=kind, default=None, help=text)
    for flag, field, value in _PARAM_SWITCHES:
        gen.add_argument(flag, dest=field, action="store_const", const=value, default=None)
    gen.add_argument("--batch-size", type=int, default=None, help="items to generate, 1-8 (default 2)")
    gen.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 1,2,3; turns random seeds off")
    seeds = gen.add_mutually_exclusive_group()
    seeds.add_argument("--use-random-seed", dest="use_random_seed", action="store_const", const=True, default=None,
                       help="random seeds even when --seed/--seeds are given")
    seeds.add_argument("--no-random-seed", dest="use_random_seed", action="store_const", const=False,
                       help="use --seeds/--seed (default when they are given)")
    gen.add_argument("--audio-format", default=None, help="flac (default), wav or mp3")
    gen.add_argument("--out", default="./outputs", help="output directory (default ./outputs)")
    add_connection_flags(gen)
    gen.add_argument("--quiet", action="store_true", help="no progress output")
    add_text_commands(commands)

    serve = commands.add_parser("serve", help="run a server", description="Run lm, dit, orchestrator or all.")
    serve.add_argument("component", choices=("lm", "dit", "orchestrator", "all"))
    serve.add_argument("server_args", nargs=argparse.REMAINDER, help="flags passed to the server")

    tiny = commands.add_parser(
        "make-tiny-checkpoints", help="write a tiny checkpoint directory with RANDOM weights (outputs are noise)"
    )
    tiny.add_argument("dir")
    tiny.add_argument("--seed", type=int, default=0)
    return parser


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidArgument("seeds", f"must be comma-separated integers like 1,2,3, got {text!r}") from None


def build_inputs(args: argparse.Namespace) -> tuple[GenerationParams, GenerationConfig]:
    """GenerationParams/Config from the flags: what was not given keeps the API default."""
    values: dict[str, Any] = {f: getattr(args, f) for f in _PARAM_FIELDS if getattr(args, f) is not None}
    for field in ("lyrics", "audio_codes"):
        if field in values:
            values[field] = text_or_file(field, values[field])
    params = GenerationParams(**values)
    config = GenerationConfig()
    if args.batch_size is not None:
        config.batch_size = args.batch_size
    if args.audio_format is not None:
        config.audio_format = args.audio_format
    if args.seeds is not None:
        config.seeds = _parse_seeds(args.seeds)
    if args.use_random_seed is not None:
        config.use_random_seed = args.use_random_seed
    else:
        config.use_random_seed = args.seeds is None and args.seed is None
    return params, config


def _observed(events: Iterator[Any], printer: Any) -> Iterator[orchestrator_pb2.GenerateMusicResponse]:
    try:
        for event in events:
            printer.observe(event)
            yield event
    finally:
        getattr(events, "close", lambda: None)()


async def _observed_async(events: AsyncIterator[Any], printer: Any) -> AsyncIterator[Any]:
    try:
        async for event in events:
            printer.observe(event)
            yield event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def _generate_remote(args: argparse.Namespace, request: Any, printer: Any) -> GenerationResult:
    from acestep_client.assemble import assemble
    from acestep_client.client import AceStepClient
    from acestep_client.request import request_audio_format

    with AceStepClient(args.target, **client_options(args)) as client:
        events = _observed(client.stream_request(request), printer)
        return assemble(events, args.out, request_audio_format(request))


async def _generate_embedded(args: argparse.Namespace, request: Any, printer: Any) -> GenerationResult:
    from acestep_client.assemble import assemble_async
    from acestep_client.client import AsyncAceStepClient
    from acestep_client.request import request_audio_format
    from orchestrator.stack import embedded_stack

    async with (
        embedded_stack(args.checkpoints, announce=announce) as address,
        AsyncAceStepClient(address, timeout=args.timeout) as client,
    ):
        events = _observed_async(client.stream_request(request), printer)
        return await assemble_async(events, args.out, request_audio_format(request))


def _short(text: str, limit: int = 80) -> str:
    """One printable line, cut at ``limit`` (random-weight LMs write long garbage)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text.replace("\n", " "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_result(result: GenerationResult, out: Any = None) -> None:
    """The table of items, the LM metadata and the time costs."""
    out = out or sys.stdout
    rows = [("#", "path", "seed", "duration_s", "key")]
    for i, audio in enumerate(result.audios):
        samples = audio["tensor"].shape[-1]
        path = audio["path"] or ("(silent, not written)" if audio.get("silent") else "(not written)")
        rows.append((str(i), path, str(audio["params"].get("seed")), f"{samples / audio['sample_rate']:.2f}",
                     audio["key"]))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)
    lm = result.extra_outputs.get("lm_metadata")
    if lm:
        shown = {k: _short(str(v)) for k, v in lm.items() if v not in (None, "")}
        print("lm metadata: " + ", ".join(f"{k}={v}" for k, v in shown.items()), file=out)
    costs = result.extra_outputs.get("time_costs") or {}
    if costs:
        print("time costs:", file=out)
        for name in sorted(costs):
            print(f"  {name}: {costs[name]:.3f} s", file=out)
    if result.status_message:
        print(result.status_message, file=out)


def _generate(args: argparse.Namespace) -> int:
    from acestep_client.progress import ProgressPrinter
    from acestep_client.request import build_request

    try:
        params, config = build_inputs(args)
        request = build_request(params, config)  # validates and reads uploads: nothing runs on bad input
    except InvalidArgument as exc:
        print(f"acestep generate: error: {exc}", file=sys.stderr)
        return 2
    printer = ProgressPrinter(quiet=args.quiet)
    try:
        if args.target:
            result = _generate_remote(args, request, printer)
        else:
            result = asyncio.run(_generate_embedded(args, request, printer))
    finally:
        printer.close()
    if not result.success:
        print(f"acestep generate: failed: {result.error}", file=sys.stderr)
        return 2 if (result.error or "").startswith("INVALID_ARGUMENT") else 1
    print_result(result)
    return 0


def _serve(component: str, server_args: Sequence[str]) -> int:
    import importlib

    module_name, function = {
        "lm": ("lm_service.server", "main"),
        "dit": ("dit_service.server", "main"),
        "orchestrator": ("orchestrator.server", "main"),
        "all": ("orchestrator.stack", "serve_all_main"),
    }[component]
    entry = getattr(importlib.import_module(module_name), function)
    code = entry(list(server_args))
    return code if isinstance(code, int) else 0


def _make_tiny_checkpoints(directory: str, seed: int) -> int:
    from orchestrator.stack import write_tiny_checkpoints

    write_tiny_checkpoints(directory, seed)
    print(f"wrote tiny checkpoints to {directory} (seed {seed}).")
    print("Their weights are RANDOM: everything generated with them is noise, for tests and demos only.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "generate":
            return _generate(args)
        if args.command == "serve":
            return _serve(args.component, args.server_args)
        if args.command in TEXT_COMMANDS:
            return run_text_command(args)
        return _make_tiny_checkpoints(args.dir, args.seed)
    except KeyboardInterrupt:
        print("acestep: interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:  # a server package of this distribution is missing or broken
        print(f"acestep {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
