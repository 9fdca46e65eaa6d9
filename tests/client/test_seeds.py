"""Seeds resolve to exactly batch_size values, following the API's use_random_seed rules."""

import random

import pytest

from acestep_client import GenerationConfig, GenerationParams
from acestep_client.constants import SEED_MAX
from acestep_client.seeds import resolve_seeds


def _resolve(params=None, rng_seed=0, **config):
    return resolve_seeds(params or GenerationParams(), GenerationConfig(**config), random.Random(rng_seed))


def test_random_mode_ignores_given_seeds_and_draws_fresh_ones():
    seeds = _resolve(batch_size=3, seeds=[1, 2, 3], use_random_seed=True)
    assert len(seeds) == 3 and seeds != [1, 2, 3]
    assert all(0 <= s <= SEED_MAX for s in seeds)
    assert _resolve(batch_size=3, rng_seed=1) != _resolve(batch_size=3, rng_seed=2)


def test_fewer_seeds_than_batch_are_padded_with_random_ones():
    seeds = _resolve(batch_size=4, seeds=[42, 123, 456], use_random_seed=False)
    assert seeds[:3] == [42, 123, 456] and len(seeds) == 4 and 0 <= seeds[3] <= SEED_MAX


def test_extra_seeds_are_truncated():
    assert _resolve(batch_size=2, seeds=[5, 6, 7], use_random_seed=False) == [5, 6]


def test_minus_one_entries_become_random():
    seeds = _resolve(batch_size=2, seeds=[-1, 9], use_random_seed=False)
    assert seeds[1] == 9 and seeds[0] >= 0


def test_single_int_seeds_item_zero_only():
    seeds = _resolve(batch_size=3, seeds=11, use_random_seed=False)
    assert seeds[0] == 11 and len(seeds) == 3


def test_params_seed_is_the_fallback_when_config_gives_none():
    seeds = _resolve(GenerationParams(seed=42), batch_size=1, use_random_seed=False)
    assert seeds == [42]
    assert _resolve(GenerationParams(seed=42), batch_size=1, use_random_seed=True) != [42]


@pytest.mark.parametrize("batch", range(1, 9))
def test_always_exactly_batch_size(batch):
    assert len(_resolve(batch_size=batch, seeds=[1, 2, 3, 4, 5], use_random_seed=False)) == batch
