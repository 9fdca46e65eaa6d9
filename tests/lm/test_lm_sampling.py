"""CFG arithmetic and the filter order, checked against direct computations on the same logits."""

from __future__ import annotations

import torch

from lm_service.engine.runner import LockstepBatch
from lm_service.sampling import apply_top_k, apply_top_p, cfg_combine, draw_exponential_noise, sample_from_logits


def test_cfg_equals_direct_formula(planner) -> None:
    backend = planner.backend
    cond = planner.tokenizer.encode("# Caption\nrock\n", add_special_tokens=False)
    uncond = planner.tokenizer.encode("# Lyric\n", add_special_tokens=False)
    logits = LockstepBatch(backend, [cond, uncond], 2).prefill()
    c, u = backend.reference_logits(cond), backend.reference_logits(uncond)
    expected = u + 2.5 * (c - u)
    combined = cfg_combine(logits[0], logits[1], 2.5)
    assert torch.allclose(combined, expected, atol=1e-3)
    # On the very same logits the combination is exactly the formula, in fp32.
    direct = logits[1].float() + 2.5 * (logits[0].float() - logits[1].float())
    assert torch.equal(combined, direct)
    assert torch.allclose(cfg_combine(c[None], u[None], 1.0)[0], c, atol=1e-6)


def test_top_k_keeps_ties_and_top_p_keeps_first() -> None:
    logits = torch.tensor([[3.0, 1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(apply_top_k(logits, 2)).tolist() == [[False, True, False, True, True]]
    peaked = torch.tensor([[10.0, 0.0, 0.0]])
    assert torch.isinf(apply_top_p(peaked, 0.5)).tolist() == [[False, True, True]]
    # mass before token: 0, 0.5, 0.75 -> with p=0.6 keep the first two
    probs = torch.tensor([[0.5, 0.25, 0.125, 0.125]]).log()
    assert torch.isinf(apply_top_p(probs, 0.6)).tolist() == [[False, False, True, True]]
    assert torch.equal(apply_top_p(probs, 1.0), probs)


def test_sampling_follows_tempered_distribution() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    gens = [torch.Generator().manual_seed(1)]
    noise = torch.cat([draw_exponential_noise(gens, 4, "cpu") for _ in range(20000)])
    tokens = sample_from_logits(logits, 0.5, 0, 1.0, noise)
    freq = torch.bincount(tokens, minlength=4).float() / 20000
    expected = torch.softmax(logits[0] / 0.5, dim=-1)
    assert torch.allclose(freq, expected, atol=0.015)
    # top-p is applied before temperature: p=0.65 on the un-tempered distribution keeps 2 tokens
    # (after T=0.25 first, token 0 alone would already hold 98% and be the only one kept).
    filtered = sample_from_logits(logits[:4000], 0.25, 0, 0.65, noise[:4000])
    assert set(filtered.tolist()) == {0, 1}
    assert torch.equal(sample_from_logits(logits[:3], 0.0, 0, 0.9, noise[:3]), torch.zeros(3, dtype=torch.long))


def _top_p_by_full_sort(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
    keep_sorted = torch.ones_like(cumulative, dtype=torch.bool)
    keep_sorted[..., 1:] = cumulative[..., :-1] <= top_p
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def test_top_p_without_full_sort_keeps_the_same_nucleus() -> None:
    """A peaked row (nucleus inside the top 1,024) takes the partial path, a flat one the full sort.

    The partial path sums the softmax in vocabulary order, the sort in rank order: the nucleus may
    differ by the one boundary token whose preceding mass equals p to float rounding, nothing more.
    """
    generator = torch.Generator().manual_seed(0)
    peaked = torch.randn(3, 64001, generator=generator) * 4.0
    flat = torch.randn(2, 64001, generator=generator) * 0.01
    for logits in (peaked, flat):
        probs = torch.softmax(logits, dim=-1)
        for top_p in (0.5, 0.9, 0.95):
            kept = ~torch.isinf(apply_top_p(logits, top_p))
            expected = _top_p_by_full_sort(logits, top_p)
            for row in range(logits.shape[0]):
                differing = (kept[row] ^ expected[row]).nonzero().flatten()
                assert len(differing) <= 1
                for token in differing.tolist():
                    mass_before = probs[row][probs[row] > probs[row, token]].sum()
                    assert abs(float(mass_before) - top_p) < 1e-5
    assert 1 < int((~torch.isinf(apply_top_p(peaked, 0.9))).sum(-1).max()) < 1024
