"""Shared fixtures: tiny random checkpoints written once per session, loaded through the real path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dit_service.engine import AudioWindow, DiTEngine, ItemDone, StepProgress, SynthesisRequest, TimeCosts
from dit_service.tiny_checkpoint import write_tiny_dit_checkpoints

# Small ops are far slower with 2 intra-op threads on this kind of machine (thread hand-off dominates).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_checkpoints")
    write_tiny_dit_checkpoints(root, seed=0)
    return root


@pytest.fixture(scope="session")
def turbo_engine(tiny_root: Path) -> DiTEngine:
    return DiTEngine.load(tiny_root, "acestep-v15-turbo")


@pytest.fixture(scope="session")
def base_engine(tiny_root: Path) -> DiTEngine:
    return DiTEngine.load(tiny_root, "acestep-v15-base")


@pytest.fixture(scope="session")
def sft_engine(tiny_root: Path) -> DiTEngine:
    return DiTEngine.load(tiny_root, "acestep-v15-sft")


def make_test_audio(seconds: float, seed: int = 0, sample_rate: int = 48000) -> torch.Tensor:
    """A deterministic stereo test signal in [-0.5, 0.5]."""
    generator = torch.Generator().manual_seed(seed)
    n = int(seconds * sample_rate)
    t = torch.arange(n, dtype=torch.float32) / sample_rate
    tone = 0.3 * torch.sin(2 * torch.pi * 220.0 * t)
    noise = 0.1 * torch.randn(2, n, generator=generator)
    return (tone[None] + noise).clamp(-0.5, 0.5)


@pytest.fixture
def make_audio():
    return make_test_audio


class RunResult:
    def __init__(self, events: list):
        self.events = events
        self.steps = [e for e in events if isinstance(e, StepProgress)]
        self.windows = [e for e in events if isinstance(e, AudioWindow)]
        self.done = [e for e in events if isinstance(e, ItemDone)]
        self.costs = [e for e in events if isinstance(e, TimeCosts)]

    def audio(self, item: int) -> torch.Tensor:
        """Concatenate an item's streamed windows, checking they tile the output without gaps."""
        windows = sorted((w for w in self.windows if w.item == item), key=lambda w: w.start_sample)
        position = 0
        for window in windows:
            assert window.start_sample == position
            position += window.pcm.shape[-1]
        return torch.cat([w.pcm for w in windows], dim=-1)


def run(engine: DiTEngine, **fields) -> RunResult:
    return RunResult(list(engine.synthesize(SynthesisRequest(**fields))))


@pytest.fixture
def synth():
    return run
