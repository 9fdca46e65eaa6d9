"""A real stack for end-to-end tests: tiny random checkpoints, LM + DiT + orchestrator on 127.0.0.1.

The stack runs on its own event loop in a background thread, so sync tests, async tests (each on
their own loop) and the CLI can all talk to it over real gRPC.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from orchestrator.stack import Stack, start_stack, write_tiny_checkpoints


@dataclass
class BackgroundStack:
    stack: Stack
    loop: asyncio.AbstractEventLoop

    @property
    def address(self) -> str:
        return self.stack.address

    def run(self, coroutine, timeout: float = 120):
        """Run a coroutine on the stack's loop (e.g. to stop one of its servers)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


def _start_in_thread(**options) -> Iterator[BackgroundStack]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="stack-loop", daemon=True)
    thread.start()
    stack = asyncio.run_coroutine_threadsafe(start_stack(announce=lambda line: None, **options), loop).result(300)
    try:
        yield BackgroundStack(stack, loop)
    finally:
        asyncio.run_coroutine_threadsafe(stack.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return write_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"), seed=0)


@pytest.fixture(scope="session")
def stack(tiny_root) -> Iterator[BackgroundStack]:
    """Turbo DiT + LM + orchestrator, CPU, float32."""
    yield from _start_in_thread(checkpoints=tiny_root, device="cpu", dtype="float32", metrics_port=0)


@pytest.fixture(scope="session")
def base_stack(tiny_root) -> Iterator[BackgroundStack]:
    """Base DiT (lego/extract/complete) with an LM."""
    yield from _start_in_thread(checkpoints=tiny_root, dit_model="acestep-v15-base", device="cpu", dtype="float32")
