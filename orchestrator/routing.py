"""Which replicas serve a request's model: routing over the inventories the replicas announce (ListModels).

One orchestrator fronts several DiT (and LM) pools: ``--dit a:50052,b:50052`` or ``--dit
acestep-v15-turbo=dns:///turbo:50052,acestep-v15-base=dns:///base:50052``. A pinned target serves its
pin; any other serves what its ListModels answer lists (a DNS target answers from one of the pods behind
it: they are one Deployment, taken to be alike). A request's model is its ``dit_model`` / ``lm_model``, or
the default: the first target's model (its pin, else the one its answer marks ``is_default``, else its
first; while the first target is down, the next one's). The request goes to the targets serving that
model, round-robin among them under the pool's retry rules (orchestrator/replicas.py); an adapter narrows
them to those listing it with ``base_model`` = the chosen DiT.

What nobody serves is NOT_FOUND naming it, before any model work. A target that gave no answer
(unreachable, an older build) might serve anything: when no answering target serves the name, the request
goes to those, and the replica itself refuses a model it does not serve (NOT_FOUND naming both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from acestep_client.errors import NotFound
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from orchestrator.capabilities import RETRY_SECONDS, Answers, ModelCatalog

_LABELS = {gen_pb2.MODEL_KIND_DIT: ("DiT", "dit_model"), gen_pb2.MODEL_KIND_LM: ("LM", "lm_model")}


@dataclass(frozen=True)
class Choice:
    """Where a request goes: its model (``name`` "" when the replicas could not say which is the default: they
    then use their own), what the replicas report of it (None: nobody said), and the targets serving it."""

    name: str
    info: gen_pb2.ModelInfo | None
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Inventory:
    """The pool's targets in flag order, their pins and their answers; every decision below is a pure function."""

    kind: int
    targets: tuple[str, ...]
    pins: dict[str, str]
    answers: Answers

    def models_at(self, target: str) -> list[gen_pb2.ModelInfo]:
        """The models of this kind ``target`` serves: its pin (with what it reports of it), else its answer."""
        answer = self.answers.get(target) or []
        pin = self.pins.get(target)
        if pin:
            reported = [m for m in answer if m.kind == self.kind and m.name == pin]
            return reported[:1] or [gen_pb2.ModelInfo(name=pin, kind=self.kind, loaded=False)]
        return [m for m in answer if m.kind == self.kind]

    def adapters_at(self, target: str) -> list[gen_pb2.ModelInfo]:
        return [m for m in self.answers.get(target) or [] if m.kind == gen_pb2.MODEL_KIND_ADAPTER]

    def unknown(self, target: str) -> bool:
        """Nothing is known of what ``target`` serves (no pin, no answer)."""
        return target not in self.pins and self.answers.get(target) is None

    def default(self) -> str:
        """The first target's model; a first target that is down (no pin, no answer) defers to the next one that
        says ("" when none does)."""
        for target in self.targets:
            models = self.models_at(target)
            if models:
                marked = [m for m in models if m.is_default]
                return (marked or models)[0].name
        return ""

    def names(self) -> list[str]:
        """Every model of this kind some target serves, first seen first."""
        return list(dict.fromkeys(m.name for t in self.targets for m in self.models_at(t)))

    def infos(self) -> list[gen_pb2.ModelInfo]:
        """One report per model served (a loaded one where a replica has it loaded)."""
        return [self._info(name, self.targets) for name in self.names()]

    def _info(self, name: str, targets: Sequence[str]) -> gen_pb2.ModelInfo:
        reports = [m for t in targets for m in self.models_at(t) if m.name == name]
        return next((m for m in reports if m.loaded), reports[0])

    def choose(self, requested: str, adapter: str = "") -> Choice:
        """The targets for a request naming ``requested`` ("" = the default) and ``adapter`` ("" = none)."""
        label, field = _LABELS[self.kind]
        name = requested or self.default()
        info: gen_pb2.ModelInfo | None = None
        if name:
            serving = [t for t in self.targets if any(m.name == name for m in self.models_at(t))]
            if serving:
                info = self._info(name, serving)
            else:
                serving = [t for t in self.targets if self.unknown(t)]
                if not serving:
                    served = ", ".join(self.names()) or "none"
                    raise NotFound(f"{field}: no {label} model {name!r} in this deployment (it serves: {served}; "
                                   "ListModels lists them)")
        else:  # the default pool could not say what it serves: the pools that could not say get the request
            serving = [t for t in self.targets if self.unknown(t)]
            if not serving:
                raise NotFound(f"{field}: the default {label} pool ({self.targets[0]}) reports no {label} model; "
                               "name one in the request (ListModels lists them)")
        if adapter:
            serving = self._with_adapter(adapter, name, serving)
        return Choice(name, info, tuple(serving))

    def _with_adapter(self, adapter: str, base: str, serving: list[str]) -> list[str]:
        def lists(target: str, model: str) -> bool:
            return any(a.name == adapter and (not model or a.base_model == model) for a in self.adapters_at(target))

        with_adapter = [t for t in serving if lists(t, base)]
        if with_adapter:
            return with_adapter
        silent = [t for t in serving if self.answers.get(t) is None]
        if silent:
            return silent
        bases = sorted({a.base_model for t in self.targets for a in self.adapters_at(t) if a.name == adapter})
        where = (f"; it is an adapter of {', '.join(bases)}: set dit_model to {' or '.join(map(repr, bases))}"
                 if bases else "; ListModels lists the adapters (kind ADAPTER) with their base model")
        raise NotFound(f"adapter: {adapter!r} is not served for the DiT model {base or 'this request gets'}{where}")


class Router:
    """:class:`Inventory` decisions over a :class:`ModelCatalog`'s cached answers, asked again before saying
    NOT_FOUND when they are older than a few seconds (a pool may have just come up)."""

    def __init__(self, catalog: ModelCatalog, kind: int):
        self.catalog = catalog
        self.kind = kind

    async def inventory(self, fresh: bool = False) -> Inventory:
        answers = await self.catalog.answers(fresh)
        return Inventory(self.kind, tuple(self.catalog.targets), self.catalog.pins, answers)

    async def choose(self, requested: str, adapter: str = "") -> tuple[Choice, Inventory]:
        inventory = await self.inventory()
        try:
            return inventory.choose(requested, adapter), inventory
        except NotFound:
            if self.catalog.age() <= RETRY_SECONDS:
                raise
        inventory = await self.inventory(fresh=True)
        return inventory.choose(requested, adapter), inventory

    async def listing(self, fresh: bool = True) -> list[gen_pb2.ModelInfo]:
        """Every model and adapter the pool serves, each once with the targets serving it; the default marked."""
        inventory = await self.inventory(fresh)
        default = inventory.default()
        listed = []
        for info in inventory.infos():
            entry = gen_pb2.ModelInfo()
            entry.CopyFrom(info)
            entry.replicas[:] = [t for t in inventory.targets if any(m.name == info.name
                                                                     for m in inventory.models_at(t))]
            entry.loaded = any(m.loaded for t in entry.replicas for m in inventory.models_at(t)
                               if m.name == info.name)
            entry.is_default = info.name == default
            listed.append(entry)
        adapters: dict[tuple[str, str], gen_pb2.ModelInfo] = {}
        for target in inventory.targets:
            for adapter in inventory.adapters_at(target):
                entry = adapters.setdefault((adapter.name, adapter.base_model), _copy(adapter))
                entry.is_default = False
                if target not in entry.replicas:
                    entry.replicas.append(target)
                entry.loaded = entry.loaded or adapter.loaded
        return listed + list(adapters.values())


def _copy(info: gen_pb2.ModelInfo) -> gen_pb2.ModelInfo:
    entry = gen_pb2.ModelInfo()
    entry.CopyFrom(info)
    del entry.replicas[:]
    return entry
