"""The ``acestep`` command: generate music (against a server or an in-process stack), the LM's text
modes (``cli_text``), list a deployment's models (``cli_models``), run servers, write tiny random
checkpoints, download released ones.

Exit codes: 0 success, 1 generation failed, 2 bad input (nothing is written), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from acestep_client.cli_generate import add_generate_command, build_inputs, gather_inputs, print_result, run_generate
from acestep_client.cli_models import add_models_command, run_models
from acestep_client.cli_text import TEXT_COMMANDS, add_text_commands, run_text_command

__all__ = ["build_inputs", "gather_inputs", "main", "print_result"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acestep", description="ACE-Step 1.5 music generation over gRPC.")
    commands = parser.add_subparsers(dest="command", required=True)

    add_generate_command(commands)
    add_text_commands(commands)
    add_models_command(commands)

    serve = commands.add_parser("serve", help="run a server", description="Run lm, dit, orchestrator or all.")
    serve.add_argument("component", choices=("lm", "dit", "orchestrator", "all"))
    serve.add_argument("server_args", nargs=argparse.REMAINDER, help="flags passed to the server")

    tiny = commands.add_parser(
        "make-tiny-checkpoints", help="write a tiny checkpoint directory with RANDOM weights (outputs are noise)"
    )
    tiny.add_argument("dir", help="folder to write (the released layout: DiT variants, VAE, text encoder, LM)")
    tiny.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")

    fetch = commands.add_parser(
        "fetch-checkpoints", help="download released model folders from Hugging Face into a checkpoint root",
        description="Download ACE-Step 1.5 model folders into DEST/<name>, atomically; folders already there "
                    "(with a config.json) are skipped. Kubernetes init containers run this (k8s/README.md).",
    )
    fetch.add_argument("--dest", required=True, help="checkpoint root, e.g. /checkpoints (created if missing)")
    fetch.add_argument("--model", action="append", required=True, metavar="NAME[@REVISION]",
                       help="a model folder, e.g. acestep-5Hz-lm-1.7B, acestep-v15-turbo, vae, "
                            "Qwen3-Embedding-0.6B; repeat for more")
    return parser


def _serve(component: str, server_args: Sequence[str]) -> int:
    import importlib

    module_name, function = {
        "lm": ("lm_service.server", "main"),
        "dit": ("dit_service.server", "main"),
        "orchestrator": ("orchestrator.server", "main"),
        "all": ("orchestrator.stack", "serve_all_main"),
    }[component]
    module = importlib.import_module(module_name)
    if component != "all":  # serve all checks inside start_stack (the embedded stack shares them)
        from acestep_client.errors import AceStepError
        from acestep_serving.preflight import check_model_server

        try:  # a busy port, a missing model folder, a device this machine lacks: one line, before loading
            check_model_server(component, module.build_parser().parse_args(list(server_args)))
        except AceStepError as exc:
            print(f"acestep serve {component}: error: {exc}", file=sys.stderr)
            return 1
    code = getattr(module, function)(list(server_args))
    return code if isinstance(code, int) else 0


def _make_tiny_checkpoints(directory: str, seed: int) -> int:
    from orchestrator.stack import write_tiny_checkpoints

    write_tiny_checkpoints(directory, seed)
    print(f"wrote tiny checkpoints to {directory} (seed {seed}).")
    print("Their weights are RANDOM: everything generated with them is noise, for tests and demos only.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from acestep_client.cli_noise import quiet_libraries

    args = _parser().parse_args(argv)
    quiet_libraries(bool(getattr(args, "quiet", False)))  # before any server package is imported
    try:
        if args.command == "generate":
            return run_generate(args)
        if args.command == "serve":
            return _serve(args.component, args.server_args)
        if args.command in TEXT_COMMANDS:
            return run_text_command(args)
        if args.command == "models":
            return run_models(args)
        if args.command == "fetch-checkpoints":
            from acestep_serving.fetch import run as fetch_checkpoints

            return fetch_checkpoints(args.dest, args.model)
        return _make_tiny_checkpoints(args.dir, args.seed)
    except KeyboardInterrupt:
        print("acestep: interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:  # a server-side command on a client-only install, or a broken package
        from acestep_client.extras import serve_extra_message

        needs = serve_extra_message(exc)
        command = " ".join(filter(None, (args.command, getattr(args, "component", None))))
        if needs is None:
            print(f"acestep {command}: error: {exc}", file=sys.stderr)
        elif getattr(args, "target", "") is None:  # generate / text modes without --target: the embedded stack
            print(f"acestep {command}: without --target the in-process stack {needs}; "
                  "or pass --target HOST:PORT", file=sys.stderr)
        else:
            print(f"acestep {command}: {needs}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
