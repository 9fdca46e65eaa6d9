"""Loading goes through the real path and fails loudly, naming the missing file or key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from acestep_client.errors import NotFound
from dit_service.engine import DiTEngine
from dit_service.loading import DIT_FILES


@pytest.fixture
def root_copy(tiny_root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_root, copy)
    return copy


def test_released_layout_is_written(tiny_root: Path):
    for variant in ("acestep-v15-turbo", "acestep-v15-base", "acestep-v15-sft"):
        for name in DIT_FILES:
            assert (tiny_root / variant / name).is_file()
    assert (tiny_root / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json"):
        assert (tiny_root / "Qwen3-Embedding-0.6B" / name).is_file()
    silence = torch.load(tiny_root / "acestep-v15-turbo" / "silence_latent.pt", weights_only=True)
    assert silence.dtype == torch.float32 and silence.shape[0] == 1 and silence.shape[2] == 15000
    weights = load_file(str(tiny_root / "acestep-v15-turbo" / "model.safetensors"))
    assert all(t.dtype == torch.bfloat16 for t in weights.values())
    assert "decoder.proj_in.1.weight" in weights and "null_condition_emb" in weights


def test_tiny_checkpoints_are_reproducible(tiny_root: Path, tmp_path: Path):
    from dit_service.tiny_checkpoint import tiny_dit_config, write_dit_folder

    write_dit_folder(tmp_path / "again", tiny_dit_config(True, "turbo"), seed=0)
    first = load_file(str(tiny_root / "acestep-v15-turbo" / "model.safetensors"))
    second = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_engine_flags(turbo_engine: DiTEngine, base_engine: DiTEngine, sft_engine: DiTEngine):
    assert turbo_engine.is_turbo and not base_engine.is_turbo and not sft_engine.is_turbo
    assert turbo_engine.sample_rate == 48000 and turbo_engine.hop == 1920


def test_missing_file_is_named(root_copy: Path):
    (root_copy / "acestep-v15-turbo" / "silence_latent.pt").unlink()
    with pytest.raises(NotFound, match=r"silence_latent\.pt"):
        DiTEngine.load(root_copy, "acestep-v15-turbo")


def test_missing_vae_weights_are_named(root_copy: Path):
    (root_copy / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(NotFound, match=r"diffusion_pytorch_model\.safetensors"):
        DiTEngine.load(root_copy, "acestep-v15-turbo")


def test_unknown_variant_lists_available(root_copy: Path):
    with pytest.raises(NotFound, match="acestep-v15-base"):
        DiTEngine.load(root_copy, "acestep-v15-xl")


def test_renamed_state_dict_key_is_named(root_copy: Path):
    path = root_copy / "acestep-v15-base" / "model.safetensors"
    weights = load_file(str(path))
    weights["decoder.proj_in.1.weight_renamed"] = weights.pop("decoder.proj_in.1.weight")
    save_file(weights, str(path))
    with pytest.raises(NotFound) as error:
        DiTEngine.load(root_copy, "acestep-v15-base")
    assert "decoder.proj_in.1.weight" in str(error.value)
    assert "decoder.proj_in.1.weight_renamed" in str(error.value)
    assert "missing" in str(error.value) and "unexpected" in str(error.value)


def test_loaded_weights_equal_file(tiny_root: Path, turbo_engine: DiTEngine):
    weights = load_file(str(tiny_root / "acestep-v15-turbo" / "model.safetensors"))
    state = turbo_engine.model.state_dict()
    assert set(state) == set(weights)
    assert torch.equal(
        state["decoder.layers.1.mlp.up_proj.weight"], weights["decoder.layers.1.mlp.up_proj.weight"].float()
    )
