"""A preallocated KV cache of ``num_slots`` rows of ``capacity`` positions each.

Slots in use are kept *compact and ordered*: decoding rows in ``[0, ready)``, rows still being
prefilled in ``[ready, active)``. A decode step then attends over one contiguous view of the pool
with no gather; the price is one copy of a row's written positions when it starts decoding or when
a row leaves (once per sequence, not once per step).
"""

from __future__ import annotations

import torch

from .sequence import Row


class KVPool:
    def __init__(
        self,
        num_layers: int,
        num_slots: int,
        num_kv_heads: int,
        capacity: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ):
        # One slot more than is ever allocated: the scratch slot that padding rows of a captured (fixed
        # batch size) decode step write to, so they never touch a live row.
        shape = (num_layers, num_slots + 1, num_kv_heads, capacity, head_dim)
        # Zeros, not empty: masked positions get softmax weight exactly 0, and 0 * NaN would poison rows.
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.num_slots = num_slots
        self.scratch_slot = num_slots
        self.capacity = capacity
        self.owners: list[Row] = []
        self.ready = 0  # rows [0, ready) are decoding

    @property
    def active(self) -> int:
        return len(self.owners)

    @property
    def free(self) -> int:
        return self.num_slots - self.active

    @property
    def usage_ratio(self) -> float:
        """Share of the slots held by sequences (a slot is reserved whole for its sequence)."""
        return self.active / self.num_slots

    def allocate(self, row: Row) -> None:
        if self.free == 0:
            raise RuntimeError("KV pool full")
        row.slot = self.active
        row.length = 0
        self.owners.append(row)

    def promote(self, row: Row) -> None:
        """``row`` starts decoding: it takes the first slot after the decoding rows."""
        if row.slot < self.ready:
            raise RuntimeError("row is already decoding")
        self._swap(row.slot, self.ready)
        self.ready += 1

    def release(self, row: Row) -> None:
        """Free ``row``'s slot, keeping both regions compact (only surviving rows are copied)."""
        hole = row.slot
        if hole < self.ready:
            self.ready -= 1
            hole = self._fill(hole, self.ready)
        self._fill(hole, self.active - 1)
        self.owners.pop()
        row.slot = -1

    def _fill(self, hole: int, source: int) -> int:
        """Move the row in slot ``source`` into slot ``hole``; returns the slot it left."""
        if hole != source:
            mover = self.owners[source]
            written = mover.length
            self.k[:, hole, :, :written] = self.k[:, source, :, :written]
            self.v[:, hole, :, :written] = self.v[:, source, :, :written]
            self.owners[hole] = mover
            mover.slot = hole
        return source

    def _swap(self, a: int, b: int) -> None:
        if a == b:
            return
        first, second = self.owners[a], self.owners[b]
        for cache in (self.k, self.v):
            keep = cache[:, a, :, : first.length].clone()
            cache[:, a, :, : second.length] = cache[:, b, :, : second.length]
            cache[:, b, :, : first.length] = keep
        self.owners[a], self.owners[b] = second, first
        first.slot, second.slot = b, a
