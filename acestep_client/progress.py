"""Progress display for the CLI: a one-line bar on a terminal, one line per stage in logs and pipes."""

from __future__ import annotations

import sys
from typing import TextIO

from acestep_client.cli_common import terminal_safe
from acestep_client.proto.acestep.v1 import generation_pb2, orchestrator_pb2


def stage_name(stage: int) -> str:
    try:
        return generation_pb2.Stage.Name(stage).removeprefix("STAGE_").lower()
    except ValueError:
        return f"stage {stage}"


class ProgressPrinter:
    """Watches GenerateMusic events and draws progress on ``stream`` (stderr by default)."""

    WIDTH = 30

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, bar: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        isatty = getattr(self.stream, "isatty", None)
        self.bar = bool(isatty and isatty()) if bar is None else bar
        self._stage: int | None = None
        self._fraction = 0.0
        self._drawn = 0

    def observe(self, event: orchestrator_pb2.GenerateMusicResponse) -> None:
        if self.quiet or event.WhichOneof("event") != "progress":
            return
        p = event.progress
        self._fraction = max(self._fraction, min(1.0, max(0.0, p.fraction)))
        steps = f" {p.step}/{p.total_steps}" if p.total_steps else ""
        label = terminal_safe(f"{stage_name(p.stage)}{steps}" + (f" {p.message}" if p.message else ""))
        if self.bar:
            filled = round(self._fraction * self.WIDTH)
            line = f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self._fraction * 100:3.0f}% {label}"[:160]
            self.stream.write(line + " " * max(0, self._drawn - len(line)))
            self._drawn = len(line)
            self.stream.flush()
        elif p.stage != self._stage:
            self.stream.write(f"[{self._fraction * 100:3.0f}%] {label}\n")
            self.stream.flush()
        self._stage = p.stage

    def close(self) -> None:
        """End the bar's line so what follows starts on a fresh one."""
        if self.bar and self._drawn and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0
