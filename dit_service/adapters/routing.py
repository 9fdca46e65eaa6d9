"""Which rows of the running forward carry which adapter, and the decoder hooks that apply them.

Before a decoder call, the caller names its row groups (one per merged request, in row order) and the adapter
each one uses (:func:`adapter_rows`); every Linear of the decoder then adds ``scale · ΔW x`` to the rows of the
groups whose adapter changes it, computed on those rows only. The base weights are never touched: rows without an
adapter keep the Linear's own output, bit for bit, and with no adapter in the call nothing is added at all.

The groups live in a thread-local: the batcher's worker runs merged forwards while request threads compute their
cross-attention K/V, each with its own groups. The decoder runs its timestep MLPs per row group
(``decoder._by_rows``); it marks those calls (``current_row_part``) and the hook then uses that group alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ..model.decoder import current_row_part
from .weights import LoadedAdapter

_state = threading.local()
_HOOKED = "_acestep_adapter_hooks"


@dataclass(frozen=True, eq=False)
class AdapterUse:
    """A request's adapter and its strength (0-1; ΔW is multiplied by it)."""

    adapter: LoadedAdapter
    scale: float


RowGroup = tuple[int, AdapterUse | None]  # (rows, adapter or None)


@contextmanager
def adapter_rows(groups: Sequence[RowGroup]) -> Iterator[None]:
    """Decoder calls inside see these row groups; without any adapter among them nothing is set."""
    if all(use is None for _, use in groups):
        yield
        return
    previous = getattr(_state, "groups", None)
    _state.groups = tuple(groups)
    try:
        yield
    finally:
        _state.groups = previous


def install_hooks(decoder: nn.Module) -> int:
    """A forward hook on every Linear of ``decoder`` (once); returns how many layers carry one."""
    hooked = getattr(decoder, _HOOKED, None)
    if hooked is not None:
        return hooked
    count = 0
    for name, module in decoder.named_modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(partial(_apply, name))
            count += 1
    setattr(decoder, _HOOKED, count)
    return count


def _apply(name: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
    groups = getattr(_state, "groups", None)
    if groups is None:
        return None
    part = current_row_part()
    if part is not None:  # a per-request call of a merged batch: its input is that group's rows
        groups = ((output.shape[0], groups[part][1]),)
    plan = [(rows, _update(use, name), use.scale if use is not None else 0.0) for rows, use in groups]
    if all(update is None for _, update, _ in plan):
        return None
    x = inputs[0]
    sizes = [rows for rows, _, _ in plan]
    if sum(sizes) != x.shape[0]:
        raise RuntimeError(f"adapter rows {sizes} do not cover the {x.shape[0]} rows reaching {name}")
    # In place: the Linear's output is a fresh tensor nobody else holds, and a merged batch's rows need no copies.
    if len(plan) == 1:
        _, update, scale = plan[0]
        return output.add_(update.delta(x, scale))
    start = 0
    for rows, update, scale in plan:
        if update is not None:
            output[start : start + rows].add_(update.delta(x[start : start + rows], scale))
        start += rows
    return output


def _update(use: AdapterUse | None, name: str):
    if use is None or use.scale == 0.0:
        return None
    return use.adapter.updates.get(name)
