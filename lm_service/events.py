"""What the planner streams: progress, per-item metadata and codes, phase times."""

from __future__ import annotations

from dataclasses import dataclass, field

COT_TOKEN_ESTIMATE = 160  # typical CoT length, only for progress reporting


@dataclass
class PhaseProgress:
    phase: int  # 1 CoT, 2 codes, 3 a text mode (describe.DESCRIBE_PHASE)
    tokens: int
    total_estimate: int


@dataclass
class ItemMetadata:
    item: int
    metadata: dict  # bpm, caption, duration, keyscale, language, timesignature (+ "cot_text": raw CoT)


@dataclass
class ItemCodes:
    item: int
    codes: list[int]  # 5 Hz code ids 0..65534


@dataclass
class PhaseTimes:
    lm_phase1_time: float
    lm_phase2_time: float
    prompt_tokens: dict[int, int] = field(default_factory=dict)  # phase -> prompt tokens of all its rows
    generated_tokens: dict[int, int] = field(default_factory=dict)  # phase -> tokens its items' outputs hold


PlanEvent = PhaseProgress | ItemMetadata | ItemCodes | PhaseTimes
