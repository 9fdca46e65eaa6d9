"""Stop points inside long forwards.

``should_stop`` is polled between diffusion steps and VAE windows, but one DiT forward over a 10-minute
song, or one VAE encode of a long upload, takes many seconds on a CPU. A thread that runs such a forward
declares what stops it (:func:`stoppable`); the forward checks at every layer (:func:`stop_point`, or
hooks from :func:`add_stop_points`) and raises ``Cancelled`` there, so a cancel, a deadline or the end of
a shutdown grace period takes effect within one layer. The check is a thread-local read: free when nothing
asked to stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch

from acestep_client.errors import Cancelled

_local = threading.local()


@contextmanager
def stoppable(should_stop: Callable[[], bool]) -> Iterator[None]:
    """Forwards run by this thread inside the block stop at their next stop point once ``should_stop()``."""
    previous = getattr(_local, "should_stop", None)
    _local.should_stop = should_stop
    try:
        yield
    finally:
        _local.should_stop = previous


def stop_point(where: str) -> None:
    should_stop = getattr(_local, "should_stop", None)
    if should_stop is not None and should_stop():
        raise Cancelled(f"stopped inside the {where}")


def add_stop_points(modules: Iterable[torch.nn.Module], where: str) -> None:
    """A stop point before each module's forward (a pre-hook: only for modules that are not torch.compiled)."""

    def hook(_module, _args) -> None:
        stop_point(where)

    for module in modules:
        if not getattr(module, "_has_stop_point", False):  # engines sharing a loaded checkpoint add them once
            module.register_forward_pre_hook(hook)
            module._has_stop_point = True
