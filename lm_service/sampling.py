"""CFG and sampling, in the order of upstream's PyTorch backend, with one RNG per row.

Order per step: CFG (fp32) -> constraint mask -> top-k -> top-p (on the un-tempered distribution)
-> temperature -> draw. The draw is an exponential race, ``argmax(log softmax(l/T) - log E)`` with
``E ~ Exp(1)`` from the row's own ``torch.Generator``: the same distribution as ``torch.multinomial``,
but every row's randomness depends only on its seed, never on its batch position, and it needs no
host synchronisation (so it also runs inside CUDA graphs / fixed-shape decode steps).
"""

from __future__ import annotations

import torch


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """``u + s * (c - u)`` in fp32, as upstream's pt backend does."""
    uncond32 = uncond.float()
    return uncond32 + scale * (cond.float() - uncond32)


def apply_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep logits >= the k-th largest of each row (ties kept); ``top_k <= 0`` is off."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


TOP_P_CANDIDATES = 1024  # a trained LM's nucleus almost always lies within its top 1,024 tokens


def apply_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest descending prefix whose mass *before* each token is <= p.

    The prefix is first looked for among the top ``TOP_P_CANDIDATES`` (a partial top-k, no sort of the
    vocabulary); only rows whose nucleus is wider than that (a near-uniform distribution) sort in full.
    """
    if not 0.0 < top_p < 1.0:
        return logits
    width = logits.shape[-1]
    if width > TOP_P_CANDIDATES:
        values, index = torch.topk(logits, TOP_P_CANDIDATES, dim=-1)
        probs = torch.exp(values.float() - torch.logsumexp(logits.float(), dim=-1, keepdim=True))
        cumulative = torch.cumsum(probs, dim=-1)
        if bool((cumulative[..., -1] > top_p).all()):
            return logits.masked_fill(~_nucleus(cumulative, top_p, index, width), float("-inf"))
    sorted_logits, sorted_index = torch.sort(logits, descending=True, dim=-1)
    cumulative = torch.cumsum(torch.softmax(sorted_logits.float(), dim=-1), dim=-1)
    return logits.masked_fill(~_nucleus(cumulative, top_p, sorted_index, width), float("-inf"))


def _nucleus(cumulative: torch.Tensor, top_p: float, index: torch.Tensor, width: int) -> torch.Tensor:
    """Keep mask over the vocabulary from the cumulative mass of the descending candidates ``index``."""
    keep_sorted = torch.ones_like(cumulative, dtype=torch.bool)
    keep_sorted[..., 1:] = cumulative[..., :-1] <= top_p
    keep = torch.zeros(*cumulative.shape[:-1], width, dtype=torch.bool, device=cumulative.device)
    return keep.scatter(-1, index, keep_sorted)


def draw_exponential_noise(
    generators: list[torch.Generator], width: int, device: torch.device | str, steps: int | None = None
) -> torch.Tensor:
    """One Exp(1) draw per row (``[rows, width]``, or ``[steps, rows, width]``) from each row's generator."""
    shape = (width,) if steps is None else (steps, width)
    rows = [torch.empty(shape, device=device).exponential_(generator=g) for g in generators]
    return torch.stack(rows, dim=-2)


def sample_from_logits(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    exponential_noise: torch.Tensor | None,
) -> torch.Tensor:
    """Pick one token per row from already CFG-combined and masked fp32 logits ``[rows, vocab]``."""
    logits = apply_top_p(apply_top_k(logits, top_k), top_p)
    if temperature <= 0 or exponential_noise is None:
        return torch.argmax(logits, dim=-1)
    log_probs = torch.log_softmax(logits / temperature, dim=-1)
    return torch.argmax(log_probs - torch.log(exponential_noise.clamp_min(1e-10)), dim=-1)
