"""``acestep models``: what a deployment serves (ListModels) as a table, or JSON with ``--json``.

Each DiT and LM model and each adapter once: its tasks, whether it is loaded, whether it is the default
(what a request naming no model gets), and the backend addresses serving it; adapters with the DiT model
they apply to. Names in the first column are what ``acestep generate --dit-model/--lm-model/--adapter``
take. Exit 0, or 1 when the call fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from acestep_client.cli_common import add_connection_flags, announce, client_options, terminal_safe
from acestep_client.types import ModelInfo

_DESCRIPTION = """\
List the models and adapters a deployment serves (the orchestrator's ListModels): name, kind, tasks,
steps, loaded, default, the base model of an adapter and the replicas serving each. Without --target
an in-process stack starts from --checkpoints and lists its own (tiny random checkpoints are written
into an empty folder). Exit 0, or 1 when the call fails."""
_KINDS = {"dit": 0, "lm": 1, "adapter": 2}
_COLUMNS = ("name", "kind", "tasks", "steps", "loaded", "default", "base_model", "replicas")


def add_models_command(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("models", help="list the models and adapters a deployment serves",
                                 description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the list as JSON instead of a table "
                                                            "(default: a table)")
    add_connection_flags(parser)
    return parser


def _steps(model: ModelInfo) -> str:
    if not model.max_inference_steps:
        return ""
    return f"{model.min_inference_steps or 1}-{model.max_inference_steps}"


def _row(model: ModelInfo) -> tuple[str, ...]:
    tasks = ",".join(model.task_types) if model.kind != "adapter" else f"({model.adapter_format or 'adapter'})"
    return (model.name, model.kind, tasks, _steps(model), "yes" if model.loaded else "no",
            "yes" if model.is_default else "", model.base_model, ",".join(model.replicas))


def models_table(models: Sequence[ModelInfo]) -> list[str]:
    """The table's lines: DiT models, then LM models, then adapters, each in the server's order."""
    ordered = sorted(models, key=lambda m: _KINDS.get(m.kind, len(_KINDS)))
    rows = [_COLUMNS, *(_row(m) for m in ordered)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(_COLUMNS))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _print(models: Sequence[ModelInfo], as_json: bool) -> None:
    if as_json:
        print(json.dumps([m.to_dict() for m in models], indent=2, ensure_ascii=False))
        return
    for line in models_table(models):
        print(terminal_safe(line))
    if not models:
        print("(no model answered: the backends may be unreachable or still starting)")


async def _embedded_models(args: argparse.Namespace) -> list[ModelInfo]:
    from acestep_client.client import AsyncAceStepClient
    from orchestrator.stack import embedded_stack

    def quiet(line: str) -> None:  # start-up chatter hidden; the random-weights warning shown
        if line.startswith("WARNING"):
            announce(line)

    async with (
        embedded_stack(args.checkpoints, announce=quiet) as address,
        AsyncAceStepClient(address, timeout=args.timeout) as client,
    ):
        return await client.list_models()


def run_models(args: argparse.Namespace) -> int:
    import grpc

    from acestep_client.client import AceStepClient
    from acestep_client.errors import AceStepError

    try:
        if args.target:
            with AceStepClient(args.target, **client_options(args)) as client:
                models = client.list_models()
        else:
            models = asyncio.run(_embedded_models(args))
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
        details = exc.details() if hasattr(exc, "details") else str(exc)
        print(terminal_safe(f"acestep models: failed: {code}: {details}"), file=sys.stderr)
        return 1
    except AceStepError as exc:  # the in-process stack could not start, or a bad --api-key
        print(f"acestep models: error: {exc}", file=sys.stderr)
        return 1
    _print(models, args.json)
    return 0
