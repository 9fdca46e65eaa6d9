"""What every LM backend shares around decoding: sampling parameters, the constraint rule applied to
one row's logits, and codes from token ids. The torch backend's decode loop is :mod:`lm_service.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .constraints import TokenRule
from .vocab import NUM_AUDIO_CODE_TOKENS, TokenTable

PROGRESS_EVERY = 16  # tokens between progress events


@dataclass(frozen=True)
class SamplingParams:
    temperature: float
    top_k: int
    top_p: float
    cfg_scale: float

    @property
    def uses_cfg(self) -> bool:
        return self.cfg_scale > 1.0


def apply_rule(
    row_logits: torch.Tensor, rule: TokenRule, caption_block: torch.Tensor, text_block: torch.Tensor | None = None
) -> torch.Tensor:
    """``row_logits`` masked by ``rule``; the block-lists are the vocabulary's id tensors on the logits' device."""
    if rule.allowed is not None:
        allowed = torch.tensor(rule.allowed, device=row_logits.device)
        masked = torch.full_like(row_logits, float("-inf"))
        masked[allowed] = row_logits[allowed]
        return masked
    if rule.caption_mask:
        return row_logits.index_fill(0, caption_block, float("-inf"))
    if rule.blocked_range is not None or rule.text_mask:
        masked = row_logits.clone()
        if rule.blocked_range is not None:
            lo, hi = rule.blocked_range
            masked[lo:hi] = float("-inf")
        if rule.text_mask and text_block is not None and text_block.numel():
            masked.index_fill_(0, text_block, float("-inf"))
        return masked
    return row_logits


def codes_from_tokens(tokens: list[int], table: TokenTable) -> list[int]:
    """Code ids of one row up to the first EOS/pad; non-code tokens (unconstrained runs) are skipped."""
    codes: list[int] = []
    for token in tokens:
        if token == table.eos_id or (table.pad_id is not None and token == table.pad_id):
            break
        if table.audio_code_base <= token < table.audio_code_base + NUM_AUDIO_CODE_TOKENS:
            codes.append(token - table.audio_code_base)
    return codes
