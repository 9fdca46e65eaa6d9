"""Public API of the LM planner: validate a request, run Phase 1 (CoT metadata) and Phase 2 (codes);
the text modes (understand, create sample, format) live in ``describe.py``.

CFG: Phase 2 only. The CoT is decoded at scale 1, as upstream does since a188f4c.

Seeds: item i uses ``torch.Generator().manual_seed(seeds[i])`` for Phase 1 and a fresh generator with
the same seed for Phase 2, and its own constraint state, so an item's CoT and codes depend only on its
seed and the request parameters, never on its batch position or chunking (upstream shares one Phase 1
per chunk and seeds only its pt-backend Phase 2; this is a documented extension).

Code count: each item's Phase 2 covers its planned duration, the user's or else the one its CoT chose
(10..``max_duration``): exactly 5 codes per second when constrained, at most that many otherwise
(upstream bounds only a user duration; without one, weights that never sample EOS wrote 4,032 codes,
more than the DiT's 600 s). See :meth:`Planner.code_budget`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from acestep_client import constants as api
from acestep_client.errors import InvalidArgument, NotFound
from acestep_client.tracing import record_stage

from . import prompts
from .constraints import CotStateMachine, build_cot_vocabulary, strip_control_characters, target_code_count
from .cot import format_cot, parse_cot
from .decoding import SamplingParams, codes_from_tokens
from .describe import DescribeRequest, describe
from .engine import EngineObserver, EngineOptions, GroupSpec, Head, LMEngine
from .events import COT_TOKEN_ESTIMATE, ItemCodes, ItemMetadata, PhaseProgress, PhaseTimes, PlanEvent
from .vocab import (
    BPM_MAX,
    BPM_MIN,
    CODES_PER_SECOND,
    DURATION_MAX,
    DURATION_MIN,
    KEYSCALES,
    LANGUAGES,
    MAX_CAPTION_TOKENS,
    MAX_NEW_TOKENS,
    TIME_SIGNATURES,
    audio_code_token,
    build_token_table,
)

logger = logging.getLogger(__name__)

MAX_CAPTION_CHARS = api.MAX_CAPTION_CHARS
MAX_LYRICS_CHARS = 4096
MAX_BATCH = 8
TIME_SIGNATURE_INPUTS = (*TIME_SIGNATURES, "2/4", "3/4", "4/4", "6/8")


@dataclass
class PlanRequest:
    caption: str = ""
    lyrics: str = ""
    instrumental: bool = False
    vocal_language: str = "unknown"
    bpm: int | None = None
    keyscale: str = ""
    timesignature: str = ""
    duration: float = -1.0
    thinking: bool = True
    lm_temperature: float = 0.85
    lm_cfg_scale: float = 2.0
    lm_top_k: int = 0
    lm_top_p: float = 0.9
    lm_negative_prompt: str = "NO USER INPUT"
    use_cot_metas: bool = True
    use_cot_caption: bool = True
    use_cot_lyrics: bool = False  # accepted, unused (upstream: "TODO: not used yet")
    use_cot_language: bool = True
    use_constrained_decoding: bool = True
    constrained_decoding_debug: bool = False
    seeds: list[int] = field(default_factory=lambda: [0])  # one per song; batch = len(seeds)
    lm_batch_chunk_size: int = 8
    generate_codes: bool = True  # False = Phase 1 (metadata) only


def codes_to_string(codes: list[int]) -> str:
    """``"<|audio_code_N|>..."`` with no separators, the string the DiT parses."""
    return "".join(audio_code_token(code) for code in codes)


def user_metadata(req: PlanRequest) -> dict[str, str]:
    """User metas the LM sees (as upstream): bpm > 0, keyscale, timesignature (not n/a), duration > 0."""
    metas: dict[str, str] = {}
    if req.bpm is not None and req.bpm > 0:
        metas["bpm"] = str(int(req.bpm))
    for key in ("keyscale", "timesignature"):
        value = getattr(req, key).strip()
        if value and value.lower() != "n/a":
            metas[key] = value
    if req.duration and req.duration > 0:
        metas["duration"] = str(int(req.duration))
    return metas


def _typed(metas: dict[str, str]) -> dict[str, Any]:
    return {k: int(v) if k in ("bpm", "duration") and v.isdigit() else v for k, v in metas.items()}


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high):
        raise InvalidArgument(name, f"allowed {low}-{high}, got {value}")


class Planner:
    """Loaded tokenizer + model backend; ``plan`` is a generator of :data:`PlanEvent`."""

    def __init__(
        self,
        tokenizer,
        backend,
        max_duration: int = DURATION_MAX,
        max_caption_tokens: int = MAX_CAPTION_TOKENS,
        max_new_tokens: int = MAX_NEW_TOKENS,
        engine_options: EngineOptions | None = None,
        engine_observer: EngineObserver | None = None,
    ):
        """``max_duration`` is the GPU tier's limit; the two token limits exist so tests stay short.

        The torch backend runs every request through one continuous-batching :class:`LMEngine`; a
        backend with its own engine loop (vLLM) keeps its own batching.
        """
        self.tokenizer = tokenizer
        self.backend = backend
        self.table = build_token_table(tokenizer, backend.vocab_size)
        self.cot_vocab = build_cot_vocabulary(tokenizer, self.table, max_duration, max_caption_tokens)
        self.max_duration = max_duration
        self.max_new_tokens = max_new_tokens
        self.engine: LMEngine | None = None
        if not hasattr(backend, "run_phase1"):
            self.engine = LMEngine(
                backend, self.table, self.cot_vocab.caption_block_tensor, engine_options, engine_observer,
                text_block=self.cot_vocab.text_block_tensor,
            )  # fmt: skip

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        backend: str = "torch",
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        planner_options: dict[str, Any] | None = None,
        **backend_options: Any,
    ) -> Planner:
        """Load tokenizer + weights from a released-layout directory (``planner_options`` go to ``__init__``)."""
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise NotFound(f"no LM checkpoint (config.json) in {model_dir}")
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        if backend == "torch":
            from .backends.torch_backend import TorchQwen3Backend

            engine = TorchQwen3Backend.load(model_dir, device=device, dtype=dtype, **backend_options)
        elif backend == "vllm":
            from .backends.vllm_backend import VllmBackend

            engine = VllmBackend.load(model_dir, device=device, dtype=dtype, **backend_options)
        else:
            raise InvalidArgument("backend", f"allowed torch, vllm, got {backend!r}")
        return cls(tokenizer, engine, **(planner_options or {}))

    # -- validation ---------------------------------------------------------------------------------
    def validate(self, req: PlanRequest) -> None:
        """Reject bad input before any model work; the error names the field and the allowed range."""
        if len(req.caption) > MAX_CAPTION_CHARS:
            raise InvalidArgument("caption", f"allowed at most {MAX_CAPTION_CHARS} characters, got {len(req.caption)}")
        if len(req.lyrics) > MAX_LYRICS_CHARS:
            raise InvalidArgument("lyrics", f"allowed at most {MAX_LYRICS_CHARS} characters, got {len(req.lyrics)}")
        if req.vocal_language and req.vocal_language not in LANGUAGES:
            raise InvalidArgument(
                "vocal_language", f"allowed one of {', '.join(LANGUAGES)}, got {req.vocal_language!r}"
            )
        if req.bpm:  # None or 0 = let the LM choose (as upstream)
            _check_range("bpm", req.bpm, BPM_MIN, BPM_MAX)
        keyscale = req.keyscale.strip()
        if keyscale and keyscale.lower() != "n/a" and keyscale.lower() not in {k.lower() for k in KEYSCALES}:
            raise InvalidArgument("keyscale", f"allowed '<A-G>[#|b|♯|♭] <major|minor>', got {req.keyscale!r}")
        timesig = req.timesignature.strip()
        if timesig and timesig.lower() != "n/a" and timesig not in TIME_SIGNATURE_INPUTS:
            raise InvalidArgument(
                "timesignature", f"allowed one of {', '.join(TIME_SIGNATURE_INPUTS)}, got {req.timesignature!r}"
            )
        if req.duration is not None and req.duration > 0:
            _check_range("duration", req.duration, DURATION_MIN, self.max_duration)
        _check_range("lm_temperature", req.lm_temperature, *api.LM_TEMPERATURE_RANGE)
        _check_range("lm_cfg_scale", req.lm_cfg_scale, *api.LM_CFG_SCALE_RANGE)
        _check_range("lm_top_k", req.lm_top_k, 0, api.LM_TOP_K_MAX)
        _check_range("lm_top_p", req.lm_top_p, *api.LM_TOP_P_RANGE)
        if len(req.lm_negative_prompt) > api.MAX_NEGATIVE_PROMPT_CHARS:
            raise InvalidArgument("lm_negative_prompt", f"allowed at most {api.MAX_NEGATIVE_PROMPT_CHARS} characters")
        if not 1 <= len(req.seeds) <= MAX_BATCH:
            raise InvalidArgument("seeds", f"allowed 1-{MAX_BATCH} seeds (one per song), got {len(req.seeds)}")
        for seed in req.seeds:
            _check_range("seeds", seed, 0, 2**63 - 1)
        _check_range("lm_batch_chunk_size", req.lm_batch_chunk_size, 1, MAX_BATCH)
        backend_check = getattr(self.backend, "check_request", None)
        if backend_check is not None:
            backend_check(req)

    # -- planning -----------------------------------------------------------------------------------
    def plan(self, req: PlanRequest, should_stop: Callable[[], bool] = lambda: False) -> Iterator[PlanEvent]:
        """Stream progress, per-item metadata and per-item codes, then the phase times.

        Raises ``Cancelled`` (KV cache freed) when ``should_stop()`` turns true between tokens.
        """
        self.validate(req)
        params = SamplingParams(req.lm_temperature, req.lm_top_k, req.lm_top_p, req.lm_cfg_scale)
        metas = user_metadata(req)
        has_all_metas = all(k in metas for k in ("bpm", "keyscale", "timesignature", "duration"))
        run_cot = req.use_cot_metas and not has_all_metas
        run_codes = req.generate_codes and req.thinking
        counts = PhaseTimes(0.0, 0.0, prompt_tokens={1: 0, 2: 0}, generated_tokens={1: 0, 2: 0})
        chunk = max(1, req.lm_batch_chunk_size)
        for start in range(0, len(req.seeds), chunk):
            seeds = req.seeds[start : start + chunk]
            items = range(start, start + len(seeds))
            began = time.time()
            if run_cot:
                metadata_list = yield from self._phase1(req, params, metas, seeds, should_stop, counts)
                record_stage("lm.cot", int(began * 1e9), items=len(seeds))
            else:
                metadata_list = [{**_typed(metas), "cot_text": ""} for _ in seeds]
            counts.lm_phase1_time += time.time() - began
            durations = [self.planned_duration(req, metadata) for metadata in metadata_list]
            for item, metadata in zip(items, metadata_list, strict=True):
                yield ItemMetadata(item=item, metadata=metadata)
            if not run_codes:
                continue
            began = time.time()
            codes_list = yield from self._phase2(req, params, metadata_list, durations, seeds, should_stop, counts)
            record_stage("lm.codes", int(began * 1e9), items=len(seeds))
            counts.lm_phase2_time += time.time() - began
            for item, codes in zip(items, codes_list, strict=True):
                yield ItemCodes(item=item, codes=codes)
        yield counts

    def describe(self, req: DescribeRequest, should_stop: Callable[[], bool] = lambda: False) -> Iterator[Any]:
        """A text mode (understand, create_sample, format_sample): progress, then one ``Description``."""
        return describe(self, req, should_stop)

    def planned_duration(self, req: PlanRequest, metadata: dict[str, Any]) -> float | None:
        """Seconds of music an item's codes cover: the user's duration, else the one its CoT chose.

        The CoT's value is clamped to ``DURATION_MIN..max_duration`` (only unconstrained decoding can
        write one outside) and written back, so the metadata, the Phase-2 CoT and the code count agree.
        None when neither exists (``use_cot_metas=False`` without a duration, or an unparseable CoT).
        """
        if req.duration and req.duration > 0:
            return float(min(max(req.duration, DURATION_MIN), self.max_duration))
        try:
            chosen = float(metadata.get("duration"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        if not math.isfinite(chosen):
            return None
        planned = float(min(max(chosen, DURATION_MIN), self.max_duration))
        if planned != chosen or not isinstance(metadata.get("duration"), int):
            metadata["duration"] = int(planned) if planned.is_integer() else planned
        return planned

    def code_budget(self, duration: float | None, constrained: bool) -> tuple[int | None, int]:
        """``(exact count, max new tokens)`` of one item's Phase 2, bounded by its planned duration.

        Constrained (upstream's rule, extended to the CoT's duration): exactly ``int(5 * duration)``
        codes, EOS masked before and forced at the count, whatever the weights prefer. Unconstrained:
        stop at EOS or at that count. Without a duration: stop at EOS or at ``max_duration`` worth of
        codes (never more than the DiT accepts).
        """
        ceiling = min(self.max_new_tokens, self.max_duration * CODES_PER_SECOND)
        if duration is None:
            return None, ceiling
        count = target_code_count(duration)
        return (count, count) if constrained else (None, count)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _generators(self, seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator(device=self.backend.device).manual_seed(int(seed)) for seed in seeds]

    def decode_text(
        self, rows, machines, seeds, params, should_stop, max_new_tokens: int | None = None
    ) -> Iterator[tuple[str, object]]:
        """Text under per-row state machines (CoT, text modes); a backend with its own engine loop runs it."""
        limit = min(max_new_tokens or self.max_new_tokens, self.max_new_tokens)
        if self.engine is None:
            return self.backend.run_phase1(rows, machines, seeds, params, limit, should_stop)
        specs = [
            GroupSpec(prompt, generator, params, limit, machine=machines[i] if machines is not None else None)
            for i, (prompt, generator) in enumerate(zip(rows, self._generators(seeds), strict=True))
        ]
        return self.engine.run(specs, should_stop)

    def _decode_codes(self, rows, seeds, params, targets, constrained, max_new, should_stop):
        """Audio-code decoding (Phase 2); ``targets`` / ``max_new``: per item. Yields progress, then
        ``("done", codes per item)``."""
        if self.engine is None:
            return self.backend.run_phase2(rows, seeds, params, targets, constrained, max_new, should_stop)
        items = len(seeds)
        specs = [
            GroupSpec(
                rows[i], generator, params, max_new[i],
                head=Head.CODES if constrained else Head.FULL,
                uncond_prompt=rows[items + i] if params.uses_cfg else None,
                exact_tokens=targets[i] if constrained else None,
            )
            for i, generator in enumerate(self._generators(seeds))
        ]  # fmt: skip
        return self._as_codes(self.engine.run(specs, should_stop))

    def _as_codes(self, events: Iterator[tuple[str, object]]) -> Iterator[tuple[str, object]]:
        for kind, value in events:
            yield kind, [codes_from_tokens(row, self.table) for row in value] if kind == "done" else value

    def _phase1(
        self,
        req: PlanRequest,
        params: SamplingParams,
        metas: dict[str, str],
        seeds: list[int],
        should_stop: Callable[[], bool],
        counts: PhaseTimes,
    ):
        # No CFG on the CoT, as upstream since a188f4c ("cfg_scale > 1 distorts text logits during
        # reasoning, causing premature newlines and truncated captions"); Phase 2 still uses it.
        params = SamplingParams(params.temperature, params.top_k, params.top_p, cfg_scale=1.0)
        rows = [self._encode(prompts.phase1_prompt(req.caption, req.lyrics))] * len(seeds)
        counts.prompt_tokens[1] += sum(len(row) for row in rows)
        machines = None
        if req.use_constrained_decoding:
            machines = [
                CotStateMachine(
                    self.cot_vocab,
                    metas,
                    skip_caption=not req.use_cot_caption,
                    skip_language=not req.use_cot_language,
                    debug=req.constrained_decoding_debug,
                    row=i,
                    budget=self.max_new_tokens,
                )
                for i in range(len(seeds))
            ]
        outputs: list[list[int]] = []
        for kind, value in self.decode_text(rows, machines, seeds, params, should_stop):
            if kind == "progress":
                yield PhaseProgress(phase=1, tokens=int(value), total_estimate=COT_TOKEN_ESTIMATE)
            else:
                outputs = value
        counts.generated_tokens[1] += sum(len(token_ids) for token_ids in outputs)
        metadata_list = []
        for token_ids in outputs:
            text = strip_control_characters(self.tokenizer.decode(token_ids, skip_special_tokens=False))
            metadata = parse_cot(text)
            metadata["cot_text"] = text
            metadata_list.append(metadata)
        return metadata_list

    def _phase2(
        self,
        req: PlanRequest,
        params: SamplingParams,
        metadata_list: list[dict],
        durations: list[float | None],
        seeds: list[int],
        should_stop: Callable[[], bool],
        counts: PhaseTimes,
    ):
        budgets = [self.code_budget(duration, req.use_constrained_decoding) for duration in durations]
        targets = [target for target, _ in budgets]
        max_new = [limit for _, limit in budgets]
        rows_cond = [
            self._encode(prompts.phase2_prompt(req.caption, req.lyrics, format_cot(_cot_fields(m))))
            for m in metadata_list
        ]
        rows = list(rows_cond)
        if params.uses_cfg:
            uncond = self._encode(prompts.phase2_negative_prompt(req.lm_negative_prompt))
            rows += [uncond] * len(seeds)
        counts.prompt_tokens[2] += sum(len(row) for row in rows)
        total = max(max_new)
        codes: list[list[int]] = []
        for kind, value in self._decode_codes(rows, seeds, params, targets, req.use_constrained_decoding, max_new,
                                              should_stop):  # fmt: skip
            if kind == "progress":
                yield PhaseProgress(phase=2, tokens=int(value), total_estimate=total)
            else:
                codes = value
        counts.generated_tokens[2] += sum(len(item) for item in codes)
        return codes

    def _codes_budget(self, duration: float | None) -> int:
        """Token limit of an unconstrained Phase 2 (upstream 6d467e4 ``_compute_max_new_tokens``, codes phase):
        the duration's codes (duration clamped to 10..max) plus 10, else the codes of the longest song plus 500."""
        if duration is None:
            return min(DURATION_MAX * 5 + 500, self.max_new_tokens)
        clamped = min(max(duration, DURATION_MIN), self.max_duration)
        return min(int(clamped * 5) + 10, self.max_new_tokens)


def codes_duration(user_duration: float | None, metadata: dict[str, Any]) -> float | None:
    """The song length Phase 2 writes codes for: the user's duration, else the CoT's (upstream 6d467e4's
    null-duration fix: without it an open-ended Phase 2 could write more codes than the DiT expects)."""
    if user_duration is not None and user_duration > 0:
        return float(user_duration)
    try:
        cot_duration = float(metadata.get("duration") or 0)
    except (TypeError, ValueError):
        return None
    return cot_duration if cot_duration > 0 else None


def _cot_fields(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k != "cot_text" and k != "genres"}


__all__ = [
    "ItemCodes",
    "ItemMetadata",
    "PhaseProgress",
    "PhaseTimes",
    "PlanRequest",
    "Planner",
    "codes_to_string",
]
