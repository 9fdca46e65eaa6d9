"""Continuous batching for the torch backend: many requests' rows share one decode batch."""

from .engine import EngineObserver, EngineOptions, LMEngine, RequestHandle
from .sequence import GroupSpec, Head

__all__ = ["EngineObserver", "EngineOptions", "GroupSpec", "Head", "LMEngine", "RequestHandle"]
