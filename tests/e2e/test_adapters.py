"""Adapters per request through the three services: requests with adapter A, adapter B and none, sent at once,
each get exactly the audio they get alone, and the orchestrator lists the adapters with their base model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from acestep_client import AceStepClient, GenerationConfig, GenerationParams

from .conftest import _start_in_thread

FAST = {"thinking": False, "use_cot_metas": False, "duration": 10, "inference_steps": 4, "caption": "lofi beat"}
ADAPTERS = ("tiny-lora", "tiny-lokr", "")


@pytest.fixture(scope="module")
def adapter_stack(tiny_root):
    # A long merge window so that the three requests' DiT forwards meet in one batch.
    flags = ["--adapters", str(tiny_root / "adapters"), "--batch-wait-ms", "200"]
    yield from _start_in_thread(checkpoints=tiny_root, device="cpu", dtype="float32", dit_flags=flags)


def _audio(address: str, adapter: str) -> np.ndarray:
    params = GenerationParams(adapter=adapter, adapter_scale=0.8 if adapter else 1.0, **FAST)
    with AceStepClient(address) as client:
        result = client.generate(params, GenerationConfig(batch_size=1, seeds=[21], use_random_seed=False))
    assert result.success, result.error
    return result.audios[0]["tensor"].numpy()


def test_three_concurrent_requests_with_different_adapters_each_get_their_own_audio(adapter_stack):
    alone = {adapter: _audio(adapter_stack.address, adapter) for adapter in ADAPTERS}
    with ThreadPoolExecutor(len(ADAPTERS)) as pool:
        together = dict(zip(ADAPTERS, pool.map(lambda a: _audio(adapter_stack.address, a), ADAPTERS), strict=True))
    for adapter in ADAPTERS:
        assert np.allclose(together[adapter], alone[adapter], atol=1e-5), adapter
    assert not np.allclose(alone["tiny-lora"], alone[""], atol=1e-3)  # the adapters do change the audio
    assert not np.allclose(alone["tiny-lokr"], alone[""], atol=1e-3)
    assert not np.allclose(alone["tiny-lora"], alone["tiny-lokr"], atol=1e-3)


def test_the_orchestrator_lists_the_adapters_of_its_dit(adapter_stack):
    with AceStepClient(adapter_stack.address) as client:
        models = client.list_models()
    adapters = {m.name: m for m in models if m.kind == "adapter"}
    assert set(adapters) >= {"tiny-lora", "tiny-lokr"}
    assert adapters["tiny-lora"].base_model == "acestep-v15-turbo" and adapters["tiny-lora"].replicas
