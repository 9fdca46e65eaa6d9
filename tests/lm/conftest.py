"""Session-wide tiny LM checkpoint (random weights: outputs are noise) loaded through Planner.load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lm_service.planner import Planner
from lm_service.tiny_checkpoint import write_tiny_lm_checkpoint

# Short limits keep a random model's free-text caption (and unconstrained runs) fast on 2 CPU cores.
TEST_PLANNER_OPTIONS = {"max_caption_tokens": 24, "max_new_tokens": 96}


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_lm_checkpoint(tmp_path_factory.mktemp("lm_ckpt"), seed=0)


@pytest.fixture(scope="session")
def planner_options() -> dict[str, int]:
    return dict(TEST_PLANNER_OPTIONS)


@pytest.fixture(scope="session")
def planner(tiny_lm_dir: Path) -> Planner:
    return Planner.load(tiny_lm_dir, planner_options=TEST_PLANNER_OPTIONS)


@pytest.fixture(autouse=True, scope="module")
def single_cpu_thread():
    """Tiny-model ops are dominated by thread synchronisation; one thread is ~10x faster on a busy CI box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
