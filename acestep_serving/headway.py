"""How far a call got, so the one log line written when it is cut short says where it stopped.

An operator looking at a DiT that did not finish a song needs the request id, the RPC and the last
stage (``diffusion step 3/8``, ``LM phase 2: 400 tokens``, items done), and why: the client cancelled,
the deadline passed, or the server's shutdown grace ended.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import grpc

log = logging.getLogger("acestep_serving.calls")

@dataclass
class Headway:
    method: str
    request_id: str = ""
    items: int = 0  # items the request asked for
    item_event: str = ""  # the response event that marks an item done ("item_done", "codes", ...)
    stage: str = "while validating"  # a phrase: "in the queue", "at diffusion step 3/8", ...
    items_done: int = 0
    started: float = field(default_factory=time.perf_counter)

    def see(self, response: object) -> None:
        """Follow a streamed response: its progress message and finished items."""
        descriptor = getattr(response, "DESCRIPTOR", None)
        if descriptor is None or "event" not in descriptor.oneofs_by_name:  # a message without events
            return
        kind = response.WhichOneof("event")  # type: ignore[attr-defined]
        if kind == "progress":
            message = response.progress.message  # type: ignore[attr-defined]
            self.stage = f"at {message}" if message else self.stage
        elif kind is not None and kind == self.item_event:
            self.items_done += 1

    def where(self) -> str:
        if not self.item_event:
            return self.stage
        done = f"{self.items_done}/{self.items}" if self.items else str(self.items_done)
        return f"{self.stage}, {done} item(s) done"

    def log_stop(self, code: grpc.StatusCode, reason: str = "", level: int | None = None) -> None:
        """One line when the call ends cancelled, past its deadline or stopped by the shutdown (``reason``, with
        UNAVAILABLE); nothing otherwise. Cancels log at INFO (clients do that), the rest at WARNING."""
        why = {
            grpc.StatusCode.CANCELLED: "cancelled by the client",
            grpc.StatusCode.DEADLINE_EXCEEDED: "hit its deadline",
            grpc.StatusCode.UNAVAILABLE: reason,
        }.get(code)
        if not why:
            return
        if level is None:
            level = logging.INFO if code == grpc.StatusCode.CANCELLED else logging.WARNING
        elapsed = time.perf_counter() - self.started
        log.log(level, "%s request_id=%s %s after %.1f s %s", self.method, self.request_id or "-", why, elapsed,
                self.where())
