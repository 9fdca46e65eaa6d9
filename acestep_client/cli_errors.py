"""How the CLI words a failure: the flag to fix (not only the field), the exit code, and a hint.

- A field is shown as what the user typed: ``--inference-steps``, or ``song.json: bpm`` for a value from
  ``--from-json``. A field the user never set (e.g. the LM's ``audio_codes``) is said to be the pipeline's.
- Exit 2 ("bad input") only when the service refused the request before any model work and the field
  it names (if any) is one the user set; a failure after model work started is exit 1, whatever its code.
- A request the model refuses (steps over a turbo model's 8, lego/extract/complete on turbo) gets a hint
  with the flag that fixes it: ``--dit-model acestep-v15-base`` for the in-process stack or a server that
  also serves that model, else ``acestep serve all --dit-model acestep-v15-base`` for a server.
- A model or adapter the deployment does not serve (NOT_FOUND before any work) is bad input too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acestep_client.constants import MAX_TIMESTEPS_TURBO, TASKS_BASE_MODEL_ONLY, TURBO_MAX_STEPS
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2
from acestep_client.validation import timestep_steps

BASE_MODEL = "acestep-v15-base"
_REFUSALS = ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND")
_SERVED_ELSEWHERE = re.compile(r"set dit_model to ('[\w.-]+'(?: or '[\w.-]+')*), which this deployment also serves")
_FIELD = re.compile(r"^([a-z_][a-z0-9_]*)(\[\d+\])?: (.*)$", re.DOTALL)
_BEFORE_MODEL_WORK = (generation_pb2.STAGE_UNSPECIFIED, generation_pb2.STAGE_QUEUED)


class StreamWatch:
    """Passes events to the progress printer and notes whether any model work has started."""

    def __init__(self, printer: Any):
        self.printer = printer
        self.work_started = False

    def observe(self, event: Any) -> None:
        self.printer.observe(event)
        kind = event.WhichOneof("event")
        if kind == "progress":
            self.work_started |= event.progress.stage not in _BEFORE_MODEL_WORK
        elif kind in ("lm_metadata", "audio_chunk", "item_result"):
            self.work_started = True


def label(name: str, origins: dict[str, str], field_flags: dict[str, str]) -> str:
    """``seeds[2]`` -> ``--seeds (item 2)``; ``bpm`` -> ``--bpm`` or ``song.json: bpm``; unknown names stay."""
    match = re.match(r"^([a-z_][a-z0-9_]*)(?:\[(\d+)\])?$", name)
    if not match:
        return name
    base, index = match.groups()
    shown = origins.get(base) or field_flags.get(base) or base
    return f"{shown} (item {index})" if index is not None else shown


def input_error(exc: InvalidArgument, origins: dict[str, str], field_flags: dict[str, str]) -> str:
    """``--bpm: must be between 30 and 300, got 12`` for ``InvalidArgument("bpm", ...)``."""
    message = str(exc).removeprefix(f"{exc.field}: ")
    return f"{label(exc.field, origins, field_flags)}: {message}"


@dataclass
class Failure:
    exit_code: int
    lines: list[str] = field(default_factory=list)


def _hint(code: str, name: str | None, details: str, params: Any, target: str | None, dit_model: str) -> str | None:
    """The flag that fixes a request the served model cannot run, if that is what happened."""
    turbo = "turbo" in details.lower() or (not target and "turbo" in dit_model)
    too_many_steps = name == "inference_steps" and params.inference_steps > TURBO_MAX_STEPS
    too_many_timesteps = name == "timesteps" and timestep_steps(params.timesteps) > MAX_TIMESTEPS_TURBO
    base_task = code == "FAILED_PRECONDITION" and params.task_type in TASKS_BASE_MODEL_ONLY
    if not turbo or not (too_many_steps or too_many_timesteps or base_task):
        return None
    if target and "--dit-model" in details:
        return None  # the server's message already says how to serve a base model
    elsewhere = _SERVED_ELSEWHERE.search(details)
    if target and elsewhere:  # the deployment serves a model that can: name the flag that picks it
        return f"hint: add --dit-model {elsewhere.group(1).split(' or ')[0].strip(chr(39))} (the server serves it too)"
    need = (f"--inference-steps above {TURBO_MAX_STEPS}" if too_many_steps
            else f"--timesteps with more than {MAX_TIMESTEPS_TURBO} steps" if too_many_timesteps
            else f"--task-type {params.task_type}")
    if target:
        fix = f"start a server with a base model: `acestep serve all --dit-model {BASE_MODEL}`"
    else:
        fix = f"add --dit-model {BASE_MODEL} (the in-process stack then loads the base model)"
    alternative = (f", or use --inference-steps {TURBO_MAX_STEPS} or fewer" if too_many_steps
                   else f", or give {MAX_TIMESTEPS_TURBO} steps or fewer" if too_many_timesteps else "")
    served = "the server runs a turbo model" if target else f"{dit_model} is a turbo model"
    return f"hint: {need} needs a base model and {served}: {fix}{alternative}"


def embedded_model_problem(params: Any, checkpoints: str, dit_model: str) -> Failure | None:
    """The in-process stack's model cannot run ``params`` (read from its config.json): refused before loading.

    Loading takes seconds to minutes; a turbo model's step limit and tasks are known from its folder.
    Without a readable config (an empty folder gets tiny checkpoints) the model's name tells.
    """
    try:
        turbo = bool(json.loads((Path(checkpoints) / dit_model / "config.json").read_text()).get("is_turbo"))
    except (OSError, ValueError, AttributeError):
        turbo = "turbo" in dit_model
    if not turbo:
        return None
    if params.inference_steps > TURBO_MAX_STEPS:
        name, code = "inference_steps", "INVALID_ARGUMENT"
        text = (f"--inference-steps: must be between 1 and {TURBO_MAX_STEPS} on {dit_model}, "
                f"got {params.inference_steps}")
    elif timestep_steps(params.timesteps) > MAX_TIMESTEPS_TURBO:
        name, code = "timesteps", "INVALID_ARGUMENT"
        text = (f"--timesteps: must have 1-{MAX_TIMESTEPS_TURBO} steps (values above the final 0) on {dit_model}, "
                f"got {timestep_steps(params.timesteps)}")
    elif params.task_type in TASKS_BASE_MODEL_ONLY:
        name, code = "task_type", "FAILED_PRECONDITION"
        text = f"--task-type {params.task_type}: {dit_model} runs only text2music, cover and repaint"
    else:
        return None
    hint = _hint(code, name, "turbo", params, None, dit_model)
    return Failure(2, [f"acestep generate: error: {text}", *([hint] if hint else [])])


def describe_failure(error: str, params: Any, origins: dict[str, str], field_flags: dict[str, str], *,
                     work_started: bool, target: str | None, dit_model: str, command: str = "generate") -> Failure:
    """The lines to print for a failed call (``error`` is ``"<CODE>: <details>"``) and its exit code."""
    code, _, details = error.partition(": ")
    match = _FIELD.match(details)
    name = match.group(1) if match else None
    user_set = name is not None and name in origins
    bad_input = code in _REFUSALS and not work_started and (name is None or user_set)
    if match:
        shown = label(name + (match.group(2) or ""), origins, field_flags)
        text = f"{shown}: {match.group(3)}"
        if not user_set:
            text += f" ({name} is a value the pipeline produced, not one you set: not an input error)"
    else:
        text = details
    lines = [f"acestep {command}: {'error' if bad_input else 'failed'}: {code}: {text}"]
    if work_started and code in _REFUSALS:
        lines.append(f"acestep {command}: (refused after model work had started)")
    hint = _hint(code, name, details, params, target, dit_model) if params is not None else None
    if hint:
        lines.append(hint)
    return Failure(2 if bad_input else 1, lines)
