"""One folder of adapters (one subfolder each, named as requests name it) for the one DiT model served here.

Folders are checked when first named (and again when their files change), loaded when first used, and kept in
an :class:`AdapterCache` bounded in bytes. Adapters added to the folder later are found by name, no restart.
"""

from __future__ import annotations

import logging
import re
import threading
from functools import partial
from pathlib import Path

import torch
from torch import nn

from acestep_client.constants import MODEL_NAME_PATTERN
from acestep_client.errors import AceStepError, FailedPrecondition, NotFound

from .cache import AdapterCache
from .formats import AdapterSpec, folder_fingerprint, linear_shapes, parse_adapter
from .routing import AdapterUse, install_hooks
from .weights import load_adapter

log = logging.getLogger(__name__)

DEFAULT_CACHE_MB = 1024
_NAME = re.compile(MODEL_NAME_PATTERN)
MIB = 1024 * 1024


class AdapterLibrary:
    def __init__(
        self,
        folder: str | Path,
        decoder: nn.Module,
        model_name: str,
        device: torch.device | str,
        dtype: torch.dtype,
        cache_bytes: int = DEFAULT_CACHE_MB * MIB,
    ):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise NotFound(f"adapter folder {self.folder} does not exist (--adapters)")
        self.model_name = model_name
        self.linears = linear_shapes(decoder)
        self.itemsize = torch.empty((), dtype=dtype).element_size()
        self.cache = AdapterCache(cache_bytes, partial(load_adapter, device=device, dtype=dtype))
        self._lock = threading.Lock()
        self._parsed: dict[str, tuple[tuple, AdapterSpec | AceStepError]] = {}
        self._reported: set[tuple] = set()
        install_hooks(decoder)

    def names(self) -> list[str]:
        """Subfolders that may be adapters (named like models), sorted."""
        try:
            return sorted(p.name for p in self.folder.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))
        except OSError:
            return []

    def spec(self, name: str) -> AdapterSpec:
        """The checked adapter ``name``: NotFound when there is none, FailedPrecondition when it cannot serve here."""
        if not isinstance(name, str) or not _NAME.fullmatch(name) or not (self.folder / name).is_dir():
            available = self.names()
            listed = ", ".join(available[:20]) + (" ..." if len(available) > 20 else "") if available else "none"
            raise NotFound(f"adapter {name!r} not found: this DiT ({self.model_name}) serves adapters {listed}")
        folder = self.folder / name
        fingerprint = folder_fingerprint(folder)
        with self._lock:
            cached = self._parsed.get(name)
        if cached is None or cached[0] != fingerprint:
            try:
                result: AdapterSpec | AceStepError = self._parse(name, folder)
            except AceStepError as exc:
                result = exc
            cached = (fingerprint, result)
            with self._lock:
                self._parsed[name] = cached
        result = cached[1]
        if isinstance(result, AceStepError):
            raise type(result)(str(result))  # a fresh exception: the cached one keeps no traceback chain
        return result

    def _parse(self, name: str, folder: Path) -> AdapterSpec:
        spec = parse_adapter(name, folder, self.linears, self.model_name, self.itemsize)
        if spec.nbytes > self.cache.max_bytes:
            raise FailedPrecondition(
                f"adapter {name!r} needs {spec.nbytes / MIB:.1f} MiB once loaded, more than the adapter cache holds "
                f"({self.cache.max_bytes / MIB:.1f} MiB, --adapter-cache-mb)"
            )
        return spec

    def use(self, name: str, scale: float) -> AdapterUse | None:
        """The request's adapter, loaded (cached); None for no adapter or scale 0 (the base model's numbers)."""
        if not name or scale == 0.0:
            return None
        return AdapterUse(self.cache.get(self.spec(name)), float(scale))

    def entries(self) -> list[tuple[AdapterSpec, bool]]:
        """Every adapter this DiT can serve, with whether it is loaded; broken ones are logged once and left out."""
        entries = []
        for name in self.names():
            try:
                spec = self.spec(name)
            except AceStepError as exc:
                key = (name, folder_fingerprint(self.folder / name))
                if key not in self._reported:
                    self._reported.add(key)
                    log.warning("not listing adapter %s: %s", name, exc)
                continue
            entries.append((spec, self.cache.loaded(name)))
        return entries
