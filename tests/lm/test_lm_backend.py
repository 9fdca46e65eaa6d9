"""Tiny checkpoint layout and our decode loop against transformers' own forward (CPU, fp32)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from lm_service.backends.torch_backend import TorchQwen3Backend
from lm_service.engine.runner import LockstepBatch
from lm_service.tiny_checkpoint import QWEN3_ADDED_TOKENS, write_tiny_lm_checkpoint


def test_tiny_checkpoint_layout(tiny_lm_dir, planner) -> None:
    names = {p.name for p in tiny_lm_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((tiny_lm_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["model_type"] == "qwen3"
    assert config["tie_word_embeddings"] is True
    tokenizer = planner.tokenizer
    assert config["vocab_size"] == len(tokenizer)
    with safe_open(str(tiny_lm_dir / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "model.layers.1.self_attn.q_norm.weight" in keys
    assert "lm_head.weight" not in keys  # tied, as in the release
    # Added tokens follow the base BPE in Qwen3's order, then the 65,535 codes (release: 151643.., 151669..).
    first_added = tokenizer.convert_tokens_to_ids(QWEN3_ADDED_TOKENS[0][0])
    assert tokenizer.convert_tokens_to_ids("</think>") == first_added + 25
    assert planner.table.audio_code_base == first_added + 26
    assert len(tokenizer) == planner.table.audio_code_base + 65535
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_tiny_checkpoint_is_reproducible(tmp_path, tiny_lm_dir) -> None:
    again = write_tiny_lm_checkpoint(tmp_path, seed=0)
    with (
        safe_open(str(again / "model.safetensors"), "pt") as a,
        safe_open(str(tiny_lm_dir / "model.safetensors"), "pt") as b,
    ):
        for key in ("model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"):
            assert torch.equal(a.get_tensor(key), b.get_tensor(key))
    assert (again / "tokenizer.json").read_text() == (tiny_lm_dir / "tokenizer.json").read_text()


@pytest.mark.parametrize("decode_attention", ["matmul", "sdpa"])
def test_decode_loop_matches_transformers_forward(planner, decode_attention: str) -> None:
    backend = TorchQwen3Backend(planner.backend.model, planner.backend.device, decode_attention=decode_attention)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]  # different lengths: each row has its own positions
    batch = LockstepBatch(backend, prompts, 4)
    logits = batch.prefill()
    for row, prompt in enumerate(prompts):
        assert torch.allclose(logits[row], backend.reference_logits(prompt), atol=1e-4)
    batch.step(torch.tensor([20, 21]))
    logits = batch.step(torch.tensor([22, 23]))
    for row, prompt in enumerate(prompts):
        assert torch.allclose(logits[row], backend.reference_logits([*prompt, 20 + row, 22 + row]), atol=1e-4)


def test_chunked_prefill_matches_transformers_forward(planner) -> None:
    """A prompt prefilled a few tokens at a time gives the same logits as one forward over it."""
    backend = planner.backend
    prompt = list(range(30, 53))
    batch = LockstepBatch(backend, [prompt], 2)
    row = batch.rows[0]
    batch.pool.allocate(row)
    for start in range(0, len(prompt), 5):
        hidden = batch.runner.prefill(row.slot, prompt[start : start + 5], start)
    logits = batch.runner.logits(hidden[None], codes_only=False)[0]
    assert torch.allclose(logits, backend.reference_logits(prompt), atol=1e-4)
