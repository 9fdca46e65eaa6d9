"""The vLLM-free core of the vLLM backend's logits processor (testable on CPU, no vllm import).

vLLM's V1 logits processors (vLLM 0.20.2, ``vllm/v1/sample/logits_processor/interface.py``) see the
whole persistent batch: one logits row per running request, rows added / removed / moved between
steps (``BatchUpdate``; apply removed -> added -> moved, moves are one-way ``a -> b`` condensations or
``a <-> b`` swaps) and, per added row, a live reference to the request's growing output-token list.
:class:`ConstraintCore` keeps that row bookkeeping and does the per-step work; ``vllm_adapter.py``
only forwards vLLM's calls to it.

Per request the core needs our objects (the planner's :class:`CotStateMachine`), but vLLM clones
``SamplingParams``, so a request carries only a key (``extra_args[EXTRA_ARGS_KEY]``) into
:data:`REGISTRY`, which the backend fills before ``add_request``. The key's :class:`RequestState` also
holds how many output tokens the machine has consumed, so a request that leaves the batch (preempted)
and comes back is never fed twice.

Per step and row, in the torch backend's order (``lm_service/sampling.py``): feed the machine the
tokens appended since the last step, mask the row with ``machine.rule(row)``, then top-k and top-p on
the un-tempered logits. The requests go to vLLM with top-k/top-p off, so vLLM only applies the
temperature and draws (its sampler runs this non-argmax-invariant processor before temperature).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..constraints import CotStateMachine, CotVocabulary
from ..decoding import apply_rule
from ..sampling import apply_top_k, apply_top_p

logger = logging.getLogger(__name__)

EXTRA_ARGS_KEY = "acestep_request"


@dataclass
class RequestState:
    """Our per-request state; shared by the backend (which reads ``error``) and the processor."""

    machine: CotStateMachine | None = None
    top_k: int = 0
    top_p: float = 1.0
    consumed: int = 0  # output tokens already fed to ``machine``
    error: str | None = None  # set instead of raising inside vLLM's engine step

    @property
    def filters(self) -> bool:
        return self.top_k > 0 or 0.0 < self.top_p < 1.0


class RequestRegistry:
    """Key -> :class:`RequestState`, filled by the backend thread and read inside ``engine.step()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, RequestState] = {}

    def register(self, state: RequestState) -> str:
        key = uuid.uuid4().hex
        with self._lock:
            self._states[key] = state
        return key

    def get(self, key: str) -> RequestState | None:
        with self._lock:
            return self._states.get(key)

    def release(self, key: str) -> None:
        with self._lock:
            self._states.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._states)


REGISTRY = RequestRegistry()


def request_key(extra_args: Mapping[str, object] | None) -> str | None:
    return None if not extra_args else extra_args.get(EXTRA_ARGS_KEY)  # type: ignore[return-value]


def validate_extra_args(extra_args: Mapping[str, object] | None, registry: RequestRegistry = REGISTRY) -> None:
    """Reject a request whose key is not registered here (vLLM's ``validate_params`` hook; ValueError)."""
    key = request_key(extra_args)
    if key is None:
        return
    if not isinstance(key, str) or registry.get(key) is None:
        raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}]={key!r} is not a request registered in this process")


def feed_new_tokens(state: RequestState, output_ids: list[int]) -> None:
    """Advance the machine by the tokens appended since the last call (chunked = one at a time).

    A negative id is vLLM's async-scheduling placeholder (repaired before the sampler runs): stop there.
    A forced-token mismatch is recorded in ``state.error`` instead of raised, so the engine survives.
    """
    machine = state.machine
    if machine is None or state.error is not None:
        return
    if len(output_ids) < state.consumed:
        state.error = f"output tokens went back from {state.consumed} to {len(output_ids)}"
        return
    for token in output_ids[state.consumed :]:
        if token < 0:
            break
        try:
            machine.advance(int(token))
        except RuntimeError as error:
            state.error = str(error)
            return
        state.consumed += 1


def constrain_row(
    row_logits: torch.Tensor, state: RequestState, caption_block: torch.Tensor, text_block: torch.Tensor | None = None
) -> torch.Tensor:
    """The row masked by the machine's rule; after an error only EOS, so the request ends at once."""
    machine = state.machine
    if machine is None:
        return row_logits
    if state.error is None:
        try:
            return apply_rule(row_logits, machine.rule(row_logits), caption_block, text_block)
        except (RuntimeError, IndexError, KeyError) as error:
            state.error = f"constraint rule failed: {error}"
    eos = machine.vocab.table.eos_id
    masked = torch.full_like(row_logits, float("-inf"))
    masked[eos] = 0.0
    return masked


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then top-p on un-tempered logits, exactly as :func:`lm_service.sampling.sample_from_logits`."""
    return apply_top_p(apply_top_k(logits, top_k), top_p)


@dataclass
class _Row:
    state: RequestState
    output_ids: list[int]  # vLLM's live list of the request's output tokens


class ConstraintCore:
    """Batch-row bookkeeping plus the per-step masking of one vLLM logits processor instance."""

    created: ClassVar[int] = 0  # cores built in this process: vLLM must build its processor here

    def __init__(self, registry: RequestRegistry = REGISTRY) -> None:
        self.registry = registry
        self.rows: dict[int, _Row] = {}
        self._blocks: dict[tuple[int, torch.device], tuple[CotVocabulary, torch.Tensor, torch.Tensor | None]] = {}
        ConstraintCore.created += 1

    def update(
        self,
        removed: Iterable[int],
        added: Iterable[tuple[int, Mapping[str, object] | None, list[int]]],
        moved: Iterable[tuple[int, int, bool]],
    ) -> None:
        """Apply one batch update: ``added`` = (row, extra_args, live output ids), ``moved`` = (a, b, swap)."""
        for index in removed:
            self.rows.pop(index, None)
        for index, extra_args, output_ids in added:
            key = request_key(extra_args)
            state = self.registry.get(key) if isinstance(key, str) else None
            if key is not None and state is None:
                logger.warning("vLLM row %d: request key %r already released; row left unconstrained", index, key)
            if state is None:
                self.rows.pop(index, None)  # a new request may take the index of an old one
            else:
                self.rows[index] = _Row(state, output_ids)
        for a, b, swap in moved:
            row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
            if row_a is not None:
                self.rows[b] = row_a
            if swap and row_b is not None:
                self.rows[a] = row_b

    def _block_lists(self, vocab: CotVocabulary, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The vocabulary's caption and lyrics block-lists on ``device`` (copied once)."""
        cache_key = (id(vocab), device)
        if cache_key not in self._blocks:
            text = vocab.text_block_tensor.to(device) if vocab.text_block_tensor is not None else None
            self._blocks[cache_key] = (vocab, vocab.caption_block_tensor.to(device), text)
        return self._blocks[cache_key][1], self._blocks[cache_key][2]

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Mask and filter our rows of ``logits`` (fp32 ``[rows, vocab]``) in place; other rows untouched."""
        groups: dict[tuple[int, float], list[int]] = {}
        for index, row in self.rows.items():
            state = row.state
            if state.machine is not None:
                feed_new_tokens(state, row.output_ids)
                caption_block, text_block = self._block_lists(state.machine.vocab, logits.device)
                logits[index] = constrain_row(logits[index], state, caption_block, text_block)
            if state.filters:
                groups.setdefault((state.top_k, state.top_p), []).append(index)
        for (top_k, top_p), indices in groups.items():
            index_tensor = torch.tensor(indices, device=logits.device)
            filtered = filter_top_k_top_p(logits.index_select(0, index_tensor), top_k, top_p)
            logits.index_copy_(0, index_tensor, filtered)
        return logits
