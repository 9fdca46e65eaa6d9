"""Loaded adapters, bounded in bytes: loaded on first use, least recently used evicted first.

A request holds its :class:`LoadedAdapter` for its whole life, so evicting one only drops the cache's
reference: requests already running with it finish with it, and memory may pass the bound by the adapters
such requests still hold. The next request naming an evicted adapter loads it again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from .formats import AdapterSpec
from .weights import LoadedAdapter


class AdapterCache:
    def __init__(self, max_bytes: int, load: Callable[[AdapterSpec], LoadedAdapter]):
        if max_bytes < 0:
            raise ValueError(f"the adapter cache bound must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self._load = load
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, LoadedAdapter] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}  # one load per name at a time; other names go on
        self.loads = 0
        self.evictions = 0

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(entry.nbytes for entry in self._entries.values())

    def loaded(self, name: str) -> bool:
        with self._lock:
            return name in self._entries

    def names(self) -> list[str]:
        """Least recently used first."""
        with self._lock:
            return list(self._entries)

    def get(self, spec: AdapterSpec) -> LoadedAdapter:
        """The adapter of ``spec`` (loaded now unless cached from the same files), marked most recently used."""
        hit = self._hit(spec)
        if hit is not None:
            return hit
        with self._lock:
            loading = self._loading.setdefault(spec.name, threading.Lock())
        with loading:
            hit = self._hit(spec)  # another request may have loaded it meanwhile
            if hit is not None:
                return hit
            adapter = self._load(spec)
            with self._lock:
                self.loads += 1
                self._entries[spec.name] = adapter
                self._entries.move_to_end(spec.name)
                self._evict()
            return adapter

    def _hit(self, spec: AdapterSpec) -> LoadedAdapter | None:
        with self._lock:
            entry = self._entries.get(spec.name)
            if entry is None or entry.fingerprint != spec.fingerprint:
                return None
            self._entries.move_to_end(spec.name)
            return entry

    def _evict(self) -> None:
        """Drop the least recently used until the rest fit; the newest stays even alone over the bound."""
        total = sum(entry.nbytes for entry in self._entries.values())
        while total > self.max_bytes and len(self._entries) > 1:
            _, dropped = self._entries.popitem(last=False)
            total -= dropped.nbytes
            self.evictions += 1
