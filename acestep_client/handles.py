"""Remote handles: what ``generate_music`` takes in place of the reference's in-process handlers.

They hold addresses only and open nothing, so they are cheap to build and safe to pass around.
- ``RemoteOrchestrator(address, **client_options)``: a MusicGenerationService front server.
- ``RemoteDiT(address)`` + ``RemoteLM(address)`` (or ``None``): the DiT and LM services, with the
  orchestration pipeline run inside the calling process. An address may be a list, for
  client-side round robin over replicas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def _addresses(address: str | Sequence[str]) -> tuple[str, ...]:
    values = (address,) if isinstance(address, str) else tuple(address)
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise ValueError(f"need one or more 'host:port' addresses, got {address!r}")
    return values


@dataclass(frozen=True)
class _Remote:
    address: str | Sequence[str]

    def __post_init__(self) -> None:
        _addresses(self.address)

    @property
    def addresses(self) -> tuple[str, ...]:
        return _addresses(self.address)


@dataclass(frozen=True)
class RemoteDiT(_Remote):
    """A DiffusionService (one address or several replicas)."""


@dataclass(frozen=True)
class RemoteLM(_Remote):
    """A LanguageModelService (one address or several replicas)."""


@dataclass(frozen=True, init=False)
class RemoteOrchestrator:
    """A MusicGenerationService; ``options`` go to AceStepClient (api_key, certificates, timeout...)."""

    address: str
    options: dict[str, Any] = field(default_factory=dict)

    def __init__(self, address: str, **options: Any):
        _addresses(address)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "options", dict(options))

    def client(self) -> Any:
        """A new blocking AceStepClient for this server; the caller closes it."""
        from acestep_client.client import AceStepClient

        return AceStepClient(self.address, **self.options)
