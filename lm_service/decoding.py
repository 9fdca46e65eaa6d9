"""The two decode loops over a backend session: Phase 1 (host-driven state machines) and Phase 2
(device-resident: codes-only output head, batched noise, no host sync per token).

Both yield ``("progress", tokens_so_far)`` now and then and finally ``("done", rows_of_token_ids)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from acestep_client.errors import Cancelled

from .constraints import CotStateMachine, TokenRule
from .sampling import cfg_combine, draw_exponential_noise, sample_from_logits
from .vocab import NUM_AUDIO_CODE_TOKENS, TokenTable

PROGRESS_EVERY = 16
STOP_CHECK_EVERY = 4
NOISE_CHUNK_STEPS = 32


@dataclass(frozen=True)
class SamplingParams:
    temperature: float
    top_k: int
    top_p: float
    cfg_scale: float

    @property
    def uses_cfg(self) -> bool:
        return self.cfg_scale > 1.0


def _guided(logits: torch.Tensor, items: int, params: SamplingParams) -> torch.Tensor:
    """Rows are ``[cond_1..cond_n, uncond_1..uncond_n]`` with CFG; returns fp32 ``[n, width]``."""
    if params.uses_cfg:
        return cfg_combine(logits[:items], logits[items:], params.cfg_scale)
    return logits.float()


def apply_rule(row_logits: torch.Tensor, rule: TokenRule, caption_block: torch.Tensor) -> torch.Tensor:
    if rule.allowed is not None:
        allowed = torch.tensor(rule.allowed, device=row_logits.device)
        masked = torch.full_like(row_logits, float("-inf"))
        masked[allowed] = row_logits[allowed]
        return masked
    if rule.caption_mask:
        return row_logits.index_fill(0, caption_block, float("-inf"))
    if rule.blocked_range is not None:
        lo, hi = rule.blocked_range
        masked = row_logits.clone()
        masked[lo:hi] = float("-inf")
        return masked
    return row_logits


def _check_stop(should_stop: Callable[[], bool], session) -> None:
    if should_stop():
        session.close()
        raise Cancelled("LM planning cancelled")


def run_phase1(
    session,
    machines: list[CotStateMachine] | None,
    table: TokenTable,
    generators: list[torch.Generator],
    params: SamplingParams,
    max_new_tokens: int,
    should_stop: Callable[[], bool],
    caption_block: torch.Tensor | None = None,
) -> Iterator[tuple[str, object]]:
    """Generate the CoT of each item. ``machines=None`` turns constraints off (stop at EOS/pad only)."""
    items = len(generators)
    device = session.backend.device
    stop_ids = {table.eos_id} | ({table.pad_id} if table.pad_id is not None else set())
    block = caption_block.to(device) if caption_block is not None else None
    outputs: list[list[int]] = [[] for _ in range(items)]
    finished = [False] * items
    logits = session.prefill()
    for step in range(max_new_tokens):
        if step % STOP_CHECK_EVERY == 0:
            _check_stop(should_stop, session)
        guided = _guided(logits, items, params)
        if machines is not None:
            rows = [
                apply_rule(guided[i], machines[i].rule(guided[i]), block) if not finished[i] else guided[i]
                for i in range(items)
            ]
            guided = torch.stack(rows)
        noise = draw_exponential_noise(generators, guided.shape[-1], device)
        tokens = sample_from_logits(guided, params.temperature, params.top_k, params.top_p, noise)
        token_list = tokens.tolist()
        for i, token in enumerate(token_list):
            if finished[i]:
                continue
            outputs[i].append(token)
            if machines is not None:
                machines[i].advance(token)
            if token in stop_ids:
                finished[i] = True
        if all(finished):
            break
        if step % PROGRESS_EVERY == 0:
            yield "progress", step + 1
        feed = torch.cat([tokens, tokens]) if params.uses_cfg else tokens
        logits = session.step(feed)
    session.close()
    yield "done", outputs


def run_phase2(
    session,
    table: TokenTable,
    generators: list[torch.Generator],
    params: SamplingParams,
    target_codes: int | None,
    constrained: bool,
    max_new_tokens: int,
    should_stop: Callable[[], bool],
) -> Iterator[tuple[str, object]]:
    """Generate audio-code token ids for each item (EOS not included in the result)."""
    items = len(generators)
    device = session.backend.device
    lo, hi = table.code_id_range()
    if constrained:
        # Compute logits only for the allowed tokens: the codes (+ EOS when the length is open).
        output_ids = torch.arange(lo, hi, device=device)
        if target_codes is None:
            output_ids = torch.cat([output_ids, torch.tensor([table.eos_id], device=device)])
        session.set_output_tokens(output_ids)
    else:
        output_ids = None
    steps = target_codes if (constrained and target_codes is not None) else max_new_tokens
    stop_ids = torch.tensor([table.eos_id] + ([table.pad_id] if table.pad_id is not None else []), device=device)
    generated = torch.full((steps, items), table.eos_id, dtype=torch.long, device=device)
    done = torch.zeros(items, dtype=torch.bool, device=device)
    stops_early = not (constrained and target_codes is not None)

    def sample(logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        guided = _guided(logits, items, params)
        local = sample_from_logits(guided, params.temperature, params.top_k, params.top_p, noise)
        return output_ids[local] if output_ids is not None else local

    logits = session.prefill()
    noise_chunk = draw_exponential_noise(generators, logits.shape[-1], device, steps=NOISE_CHUNK_STEPS)
    tokens = sample(logits, noise_chunk[0])
    produced = 0
    for step in range(steps):
        if step % STOP_CHECK_EVERY == 0:
            _check_stop(should_stop, session)
        if stops_early:
            tokens = torch.where(done, torch.full_like(tokens, table.eos_id), tokens)
            done |= torch.isin(tokens, stop_ids)
        generated[step].copy_(tokens)
        produced = step + 1
        if stops_early and step % PROGRESS_EVERY == PROGRESS_EVERY - 1 and bool(done.all()):
            break
        if step % PROGRESS_EVERY == 0:
            yield "progress", step + 1
        if step + 1 < steps:
            chunk_step = (step + 1) % NOISE_CHUNK_STEPS
            if chunk_step == 0:
                noise_chunk = draw_exponential_noise(generators, logits.shape[-1], device, steps=NOISE_CHUNK_STEPS)
            feed = torch.cat([tokens, tokens]) if params.uses_cfg else tokens
            tokens = session.step(feed, noise=noise_chunk[chunk_step], sample_fn=sample)
    session.close()
    yield "done", [codes_from_tokens(row, table) for row in generated[:produced].T.tolist()]


def codes_from_tokens(tokens: list[int], table: TokenTable) -> list[int]:
    """Code ids of one row up to the first EOS/pad; non-code tokens (unconstrained runs) are skipped."""
    codes: list[int] = []
    for token in tokens:
        if token == table.eos_id or (table.pad_id is not None and token == table.pad_id):
            break
        if table.audio_code_base <= token < table.audio_code_base + NUM_AUDIO_CODE_TOKENS:
            codes.append(token - table.audio_code_base)
    return codes
