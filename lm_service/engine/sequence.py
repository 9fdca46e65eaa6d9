"""What the engine schedules: a *group* is one output stream (a CoT, a text mode, one song's codes),
made of one KV row, or two that stay paired for CFG (cond + uncond fed the same token every step).

Everything a group's output depends on lives on the group: its prompt(s), constraint state machine,
seeded generator, sampling parameters, token budget and stop rule. So a group samples the same
tokens whoever shares the batch with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import torch

from ..constraints import CotStateMachine
from ..decoding import SamplingParams

if TYPE_CHECKING:
    from .engine import RequestHandle


class Head(Enum):
    """Which output rows a group needs: the whole vocabulary, or only the audio codes (+ EOS)."""

    FULL = "full"
    CODES = "codes"


@dataclass
class Row:
    """One sequence in the KV pool; ``slot`` moves when the pool compacts."""

    prompt: list[int]
    group: SequenceGroup | None = None
    slot: int = -1
    length: int = 0  # tokens written to the KV cache so far
    hidden: torch.Tensor | None = None  # last prompt position's hidden state, until the first token

    @property
    def prefilled(self) -> bool:
        return self.length >= len(self.prompt)


@dataclass
class GroupSpec:
    """What a caller asks for; the engine turns it into a :class:`SequenceGroup`."""

    prompt: list[int]
    generator: torch.Generator
    params: SamplingParams
    max_new_tokens: int
    head: Head = Head.FULL
    uncond_prompt: list[int] | None = None  # set = CFG at params.cfg_scale
    machine: CotStateMachine | None = None  # constrained text (CoT, text modes)
    exact_tokens: int | None = None  # codes: exactly this many, no early stop (EOS never allowed)


@dataclass
class SequenceGroup:
    spec: GroupSpec
    request: RequestHandle
    index: int  # position within the request
    rows: list[Row] = field(default_factory=list)
    output: list[int] = field(default_factory=list)
    finished: bool = False
    noise: torch.Tensor | None = None  # codes: a chunk of Exp(1) draws, one row per step

    def __post_init__(self) -> None:
        self.rows = [Row(list(self.spec.prompt), self)]
        if self.spec.uncond_prompt is not None:
            self.rows.append(Row(list(self.spec.uncond_prompt), self))

    @property
    def uses_cfg(self) -> bool:
        return len(self.rows) == 2

    @property
    def budget(self) -> int:
        exact = self.spec.exact_tokens
        return exact if exact is not None else self.spec.max_new_tokens

    @property
    def prefilled(self) -> bool:
        return all(row.prefilled for row in self.rows)

    def tokens_needed(self) -> int:
        """KV positions the group may use: prompt + budget (the last sampled token is never fed)."""
        return max(len(row.prompt) for row in self.rows) + self.budget
