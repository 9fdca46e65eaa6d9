"""Next tokens for a set of groups in one pass: heads, CFG, constraints, then one batched draw per
set of groups that share sampling parameters.

Per group the math is the order of upstream's PyTorch backend (see :mod:`lm_service.sampling`), with
its own generator: a group's draws never depend on which groups are sampled beside it.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from ..decoding import apply_rule
from ..sampling import cfg_combine, sample_from_logits
from .runner import ModelRunner
from .sequence import Head, SequenceGroup

NOISE_CHUNK_STEPS = 32  # code groups draw their Exp(1) noise 32 steps at a time (one RNG call, not 32)


class GroupSampler:
    def __init__(
        self,
        runner: ModelRunner,
        code_base: int,
        num_codes: int,
        eos_id: int,
        caption_block: torch.Tensor,
        text_block: torch.Tensor | None = None,
    ):
        """The code head's local index ``i < num_codes`` is id ``code_base + i``; index ``num_codes`` is EOS.

        ``caption_block`` / ``text_block``: ids a caption / the lyrics may not contain (the CoT vocabulary's).
        """
        self.runner = runner
        self.code_base = code_base
        self.num_codes = num_codes
        self.eos_id = eos_id
        self.caption_block = caption_block.to(runner.device)
        self.text_block = text_block.to(runner.device) if text_block is not None else None

    def __call__(self, groups: list[SequenceGroup], hidden: list[torch.Tensor]) -> list[int]:
        """``hidden[i]`` holds group i's rows (cond, then uncond); returns one vocabulary id per group."""
        guided = self._guided_logits(groups, hidden)
        for i, group in enumerate(groups):
            machine = group.spec.machine
            if machine is not None and not machine.finished:
                guided[i] = apply_rule(guided[i], machine.rule(guided[i]), self.caption_block, self.text_block)
        tokens: list[int] = [0] * len(groups)
        batches: dict[tuple, list[int]] = defaultdict(list)
        for i, group in enumerate(groups):
            p = group.spec.params
            batches[(p.temperature, p.top_k, p.top_p, guided[i].shape[-1])].append(i)
        for (temperature, top_k, top_p, _), members in batches.items():
            noise = torch.stack([self._noise(groups[i], guided[i].shape[-1]) for i in members])
            picked = sample_from_logits(torch.stack([guided[i] for i in members]), temperature, top_k, top_p, noise)
            for i, local in zip(members, picked.tolist(), strict=True):
                tokens[i] = self._vocab_id(groups[i], local)
        return tokens

    def _guided_logits(self, groups: list[SequenceGroup], hidden: list[torch.Tensor]) -> list[torch.Tensor]:
        """fp32 logits per group, CFG-combined; exact-length code groups lose the EOS column."""
        guided: list[torch.Tensor | None] = [None] * len(groups)
        for head in Head:
            members = [i for i, g in enumerate(groups) if g.spec.head is head]
            if not members:
                continue
            logits = self.runner.logits(torch.cat([hidden[i] for i in members]), codes_only=head is Head.CODES)
            offset = 0
            for i in members:
                group = groups[i]
                rows = logits[offset : offset + len(group.rows)]
                offset += len(group.rows)
                row = cfg_combine(rows[0], rows[1], group.spec.params.cfg_scale) if group.uses_cfg else rows[0].float()
                if head is Head.CODES and group.spec.exact_tokens is not None:
                    row = row[: self.num_codes]
                guided[i] = row
        return guided  # type: ignore[return-value]

    def _noise(self, group: SequenceGroup, width: int) -> torch.Tensor:
        device = self.runner.device
        if group.spec.head is Head.FULL:
            return torch.empty(width, device=device).exponential_(generator=group.spec.generator)
        step = len(group.output) % NOISE_CHUNK_STEPS
        if step == 0:
            shape = (NOISE_CHUNK_STEPS, width)
            group.noise = torch.empty(shape, device=device).exponential_(generator=group.spec.generator)
        return group.noise[step]

    def _vocab_id(self, group: SequenceGroup, local: int) -> int:
        if group.spec.head is Head.FULL:
            return local
        return self.eos_id if local == self.num_codes else self.code_base + local
