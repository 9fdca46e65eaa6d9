"""Seed resolution: one seed per batch item, as the API describes.

- ``use_random_seed=True``: every item gets a fresh random seed; given seeds are ignored.
- ``use_random_seed=False``: ``config.seeds`` (a list or a single int) gives the items their seeds in
  order; -1 entries, and items past the end of the list, get random seeds; extra seeds are dropped.
  A single int goes to item 0 only. When ``config.seeds`` is None, ``params.seed`` (if not -1) seeds
  item 0: the spec's troubleshooting section promises that, although the reference ignores it.
"""

from __future__ import annotations

import random

from acestep_client.constants import SEED_MAX
from acestep_client.types import GenerationConfig, GenerationParams

_SYSTEM_RANDOM = random.SystemRandom()


def random_seed(rng: random.Random | None = None) -> int:
    return (rng or _SYSTEM_RANDOM).randint(0, SEED_MAX)


def requested_seeds(params: GenerationParams, config: GenerationConfig) -> list[int]:
    """The seeds the caller asked for, -1 meaning 'random', before padding."""
    if config.use_random_seed:
        return []
    seeds = config.seeds
    if seeds is None:
        return [params.seed] if params.seed >= 0 else []
    if isinstance(seeds, int):
        return [seeds]
    return list(seeds)


def resolve_seeds(
    params: GenerationParams, config: GenerationConfig, rng: random.Random | None = None
) -> list[int]:
    """Exactly ``config.batch_size`` concrete seeds."""
    asked = requested_seeds(params, config)[: config.batch_size]
    resolved = [seed if seed >= 0 else random_seed(rng) for seed in asked]
    while len(resolved) < config.batch_size:
        resolved.append(random_seed(rng))
    return resolved
