"""The three released LM sizes (0.6B, 1.7B = upstream's default, 4B): shapes come from each folder's config.

Released shapes are checked on the meta device (no memory); tiny analogs with the same proportions (attention
width vs hidden, query heads per KV head, deeper 4B) are written to disk, loaded and planned with.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from bench.released import RELEASED_LM_SIZES
from lm_service.backends.torch_backend import TorchQwen3Backend
from lm_service.engine.runner import LockstepBatch
from lm_service.planner import ItemCodes, ItemMetadata, Planner, PlanRequest
from lm_service.tiny_checkpoint import write_tiny_lm_checkpoint
from lm_service.vocab import MAX_AUDIO_CODE

from .conftest import TEST_PLANNER_OPTIONS

# Parameters with tied embeddings and the 217,204-token vocabulary, and tensors per checkpoint. Evidence that
# these are the released checkpoints: the 0.6B bundle has 310 tensors (mlx-community ACE-Step-1.5-planner-0.6B
# card: "310 tensors, bit-equal to the checkpoint"); the 1.7B has 28 layers of 7 Linears and a 217,204 x 2048
# tied embedding (ACE-Step-1.5-planner-1.7B-4bit card); upstream 6d467e4 acestep/gpu_config.py budgets bf16
# weights of 1.2 / 3.4 / 8.0 GB (LM_VRAM) and writes "1.7B LM (... 3.45 ...)" GiB for the 1.7B.
RELEASED_COUNTS = {"0.6B": (662_884_352, 310), "1.7B": (1_854_243_840, 310), "4B": (4_189_554_176, 398)}
UPSTREAM_WEIGHT_GIB = {"0.6B": 1.2, "1.7B": 3.4, "4B": 8.0}


@pytest.mark.parametrize("size", sorted(RELEASED_COUNTS))
def test_released_lm_shapes_have_the_released_parameter_counts(size: str) -> None:
    config = Qwen3Config(**RELEASED_LM_SIZES[size])
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    params, tensors = RELEASED_COUNTS[size]
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(list(model.parameters())) == tensors  # tied: no separate lm_head tensor
    assert abs(params * 2 / 2**30 - UPSTREAM_WEIGHT_GIB[size]) / UPSTREAM_WEIGHT_GIB[size] < 0.05
    # Our backend takes every shape from the config: nothing assumes the 0.6B.
    backend = TorchQwen3Backend(model, torch.device("meta"))
    shape = RELEASED_LM_SIZES[size]
    read = (backend.num_layers, backend.num_heads, backend.num_kv_heads, backend.head_dim, backend.vocab_size)
    heads = (shape["num_attention_heads"], shape["num_key_value_heads"])
    assert read == (shape["num_hidden_layers"], *heads, 128, 217_204)
    assert backend.layers[0].o_proj.shape == (shape["hidden_size"], shape["num_attention_heads"] * 128)


def tiny_analog(size: str) -> dict:
    """The released shape at 1/32 width, head_dim 16 and a quarter of the heads, so the ratios stay
    (0.6B and 4B attend wider than their hidden size; the 4B has 4 query heads per KV head and more layers)."""
    shape = RELEASED_LM_SIZES[size]
    return dict(
        hidden_size=shape["hidden_size"] // 32,
        intermediate_size=shape["intermediate_size"] // 32,
        num_hidden_layers=shape["num_hidden_layers"] // 12,
        num_attention_heads=shape["num_attention_heads"] // 4,
        num_key_value_heads=shape["num_key_value_heads"] // 4,
        head_dim=16,
    )


@pytest.mark.parametrize("size", ["0.6B", "1.7B", "4B"])
def test_each_lm_size_loads_and_plans(tmp_path: Path, planner: Planner, size: str) -> None:
    shape = tiny_analog(size)
    folder = write_tiny_lm_checkpoint(tmp_path, seed=1, name=f"acestep-5Hz-lm-{size}", config_overrides=shape)
    backend = TorchQwen3Backend.load(folder)
    assert (backend.num_layers, backend.num_heads, backend.num_kv_heads, backend.head_dim) == (
        shape["num_hidden_layers"], shape["num_attention_heads"], shape["num_key_value_heads"], 16)  # fmt: skip
    # Our decode loop equals transformers' forward at this shape.
    prompt = [5, 6, 7, 8, 9]
    batch = LockstepBatch(backend, [prompt], 2)
    assert torch.allclose(batch.prefill()[0], backend.reference_logits(prompt), atol=1e-4)
    assert torch.allclose(batch.step(torch.tensor([20]))[0], backend.reference_logits([*prompt, 20]), atol=1e-4)
    # Same tokenizer in every released size (same 217,204-token vocabulary), so the session's one is reused.
    sized = Planner(planner.tokenizer, backend, **TEST_PLANNER_OPTIONS)
    events = list(sized.plan(PlanRequest(caption="calm piano", lyrics="[Instrumental]", duration=10, seeds=[3])))
    (metadata,) = [e.metadata for e in events if isinstance(e, ItemMetadata)]
    (codes,) = [e.codes for e in events if isinstance(e, ItemCodes)]
    assert metadata["duration"] == 10 and {"bpm", "keyscale", "timesignature"} <= set(metadata)
    assert len(codes) == 50 and all(0 <= c <= MAX_AUDIO_CODE for c in codes)  # 5 codes per second, with CFG 2.0
