"""What the models behind the orchestrator can do, learned from the replicas themselves (ListModels),
and the checks a request must pass against it before any model work.

A request the DiT refuses (64 steps or lego on a turbo model) used to be refused only after the LM had
planned it: tens of seconds, minutes at 600 s. The orchestrator asks a pool's replicas for their models
on first need, keeps the answers (each target's own: orchestrator/routing.py routes on them) for
``REFRESH_SECONDS``, and asks again after a failed call or when an answer was incomplete. A replica that
cannot answer (unreachable, still loading, a build without ListModels) leaves the check to the backend's
own validation, as before.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence

import grpc

from acestep_client.constants import BASE_MODEL_HINT, MAX_TIMESTEPS_BASE, MAX_TIMESTEPS_TURBO
from acestep_client.convert import task_type_name
from acestep_client.errors import AceStepError, FailedPrecondition, InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.types import GenerationParams
from acestep_client.validation import timestep_steps
from orchestrator.replicas import ReplicaPool

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30.0
RETRY_SECONDS = 2.0  # after an incomplete answer: soon, but not on every request
FETCH_TIMEOUT_SECONDS = 5.0


Answers = dict[str, "list[gen_pb2.ModelInfo] | None"]  # target -> its ListModels answer (None: it gave none)


class ModelCatalog:
    """The models of one replica pool, fetched lazily and cached; safe to share between concurrent requests.

    ``pins``: target -> the model the operator pinned it to (``--dit name=ADDR``), for the router.
    """

    def __init__(self, pool: ReplicaPool, refresh_seconds: float = REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic, pins: Mapping[str, str] | None = None):
        self._pool = pool
        self._refresh = refresh_seconds
        self._clock = clock
        self.pins = {target: name for target, name in (pins or {}).items() if name}
        self._models: list[gen_pb2.ModelInfo] = []
        self._answers: Answers = {target: None for target in pool.targets}
        self._fetched = -math.inf
        self._expires = -math.inf
        self._lock = asyncio.Lock()
        self.fetches = 0  # ListModels rounds so far (observable in tests and logs)

    @property
    def targets(self) -> list[str]:
        """The pool's addresses, in the order the flag gave them (the first one's model is the default)."""
        return list(self._pool.targets)

    async def models(self, fresh: bool = False) -> list[gen_pb2.ModelInfo]:
        """The pool's models, each distinct answer once; ``fresh`` asks the replicas now instead of using the
        cached answer."""
        await self._current(fresh)
        return self._models

    async def answers(self, fresh: bool = False) -> Answers:
        """Each target's own answer (None where it gave none), for routing."""
        await self._current(fresh)
        return dict(self._answers)

    def age(self) -> float:
        """Seconds since the replicas last answered (infinite before the first round)."""
        return self._clock() - self._fetched

    def invalidate(self) -> None:
        """Ask again on next need (a call to the pool failed: its replicas may have changed)."""
        self._expires = -math.inf

    async def _current(self, fresh: bool) -> None:
        if fresh:
            self.invalidate()
        if self._clock() < self._expires:
            return
        async with self._lock:  # concurrent requests share one round of calls
            if self._clock() >= self._expires:
                await self._fetch()

    async def _fetch(self) -> None:
        self.fetches += 1
        answers = await self._pool.each("ListModels", gen_pb2.ListModelsRequest(), timeout=FETCH_TIMEOUT_SECONDS)
        models: list[gen_pb2.ModelInfo] = []
        by_target: Answers = {}
        failures = 0
        for target, answer in zip(self._pool.targets, answers, strict=True):
            if isinstance(answer, grpc.aio.AioRpcError):
                failures += 1
                by_target[target] = None
                log.info("ListModels failed on replica %s (%s: %s); its requests are checked by the replica itself",
                         target, answer.code().name, answer.details())
            else:
                by_target[target] = list(answer.models)
                models.extend(answer.models)
        self._models = _unique(models)
        self._answers = by_target
        self._fetched = self._clock()
        complete = not failures and bool(models) and all(m.loaded for m in models)
        self._expires = self._clock() + (self._refresh if complete else RETRY_SECONDS)


def _unique(models: Sequence[gen_pb2.ModelInfo]) -> list[gen_pb2.ModelInfo]:
    """Replicas of one model answer alike: list each answer once."""
    seen: dict[bytes, gen_pb2.ModelInfo] = {}
    for model in models:
        seen.setdefault(model.SerializeToString(deterministic=True), model)
    return list(seen.values())


def check_request(params: GenerationParams, batch_size: int, models: Sequence[gen_pb2.ModelInfo],
                  kind: int = gen_pb2.MODEL_KIND_DIT) -> None:
    """Raise what the backend would raise, before any work: only when no loaded model of ``kind`` can serve it.

    The message names the field, the allowed range and the model, or for a task the model lacks, how to
    serve one that has it.
    """
    problems = [_problem(params, batch_size, m) for m in models if m.kind == kind and m.loaded]
    if problems and all(problems):
        raise problems[0]


def check_model(params: GenerationParams, batch_size: int, model: gen_pb2.ModelInfo,
                others: Sequence[gen_pb2.ModelInfo] = ()) -> None:
    """Raise what the replicas of ``model`` (the one routing chose) would raise, before any work; nothing while
    it loads. ``others``: the deployment's other models of its kind; one that can serve the request is named in
    the message (set dit_model / lm_model to it) instead of how to deploy one."""
    if not model.loaded:
        return
    able = [m.name for m in others if m.loaded and m.kind == model.kind and m.name != model.name
            and _problem(params, batch_size, m) is None]
    problem = _problem(params, batch_size, model, able)
    if problem is not None:
        raise problem


_MODEL_FIELDS = {gen_pb2.MODEL_KIND_DIT: "dit_model", gen_pb2.MODEL_KIND_LM: "lm_model"}


def _problem(params: GenerationParams, batch_size: int, model: gen_pb2.ModelInfo,
             able: Sequence[str] = ()) -> AceStepError | None:
    """What keeps ``model`` from serving the request; ``able``: served models that can (the fix to name)."""
    field = _MODEL_FIELDS.get(model.kind, "dit_model")
    fix = (f"set {field} to {' or '.join(repr(name) for name in able)}, which this deployment also serves"
           if able else BASE_MODEL_HINT)
    tasks = [task_type_name(number) for number in model.task_types]
    if tasks and params.task_type not in tasks:
        if model.is_turbo:
            return FailedPrecondition(
                f"task_type {params.task_type!r} needs a base model; the DiT this request gets is {model.name}, a "
                f"turbo model that runs only {', '.join(tasks)}: {fix}"
            )
        return FailedPrecondition(f"task_type {params.task_type!r} is not run by {model.name}, which runs only "
                                  f"{', '.join(tasks)}" + (f": {fix}" if able else ""))
    low, high = model.min_inference_steps or 1, model.max_inference_steps
    if high and not low <= params.inference_steps <= high:
        hint = (f"; {model.name} is a turbo model (a fixed {high}-step schedule): for more steps {fix}"
                if model.is_turbo else "")
        return InvalidArgument(
            "inference_steps",
            f"must be between {low} and {high} on {model.name}, the model this request gets, "
            f"got {params.inference_steps}{hint}",
        )
    steps = timestep_steps(params.timesteps)
    if model.is_turbo and steps > MAX_TIMESTEPS_TURBO:
        return InvalidArgument(
            "timesteps", f"must have 1-{MAX_TIMESTEPS_TURBO} steps (values above the final 0) on {model.name}, a turbo "
                         f"model, got {steps}; for up to {MAX_TIMESTEPS_BASE} {fix}")
    if model.max_batch_size and batch_size > model.max_batch_size:
        return InvalidArgument("batch_size", f"must be between 1 and {model.max_batch_size} on {model.name}, "
                                             f"got {batch_size}")
    if model.max_duration_s and params.duration > model.max_duration_s:
        return InvalidArgument("duration", f"must be at most {model.max_duration_s:g} seconds on {model.name} "
                                           f"(or <= 0 for auto), got {params.duration:g}")
    return None
