"""vLLM 0.20 V1 ``LogitsProcessor`` subclass around :class:`ConstraintCore` (imports vllm: GPU hosts only).

Interface as read in vLLM 0.20.2 ``vllm/v1/sample/logits_processor/interface.py``: ``__init__(vllm_config,
device, is_pin_memory)``, ``validate_params(sampling_params)``, ``is_argmax_invariant()``,
``update_state(batch_update | None)`` before each step, ``apply(logits)`` on the fp32 batch logits.
Model Runner V2 (opt-in in 0.20, ``VLLM_USE_V2_MODEL_RUNNER``) has another interface; the backend
forces the V1 runner and the extra pins vLLM to 0.20.x.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from .vllm_processor import ConstraintCore, validate_extra_args

if TYPE_CHECKING:
    from vllm.config import VllmConfig


class AceStepLogitsProcessor(LogitsProcessor):
    """CoT state machines + top-k/top-p (torch-backend order) for the requests that carry our key."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        validate_extra_args(sampling_params.extra_args)

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        self.core = ConstraintCore()

    def is_argmax_invariant(self) -> bool:
        return False  # it masks tokens, so it must run before vLLM's greedy/temperature step

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        self.core.update(
            removed=list(batch_update.removed),
            added=[(index, params.extra_args, output_ids) for index, params, _, output_ids in batch_update.added],
            moved=[(a, b, direction == MoveDirectionality.SWAP) for a, b, direction in batch_update.moved],
        )

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return self.core.apply(logits)
