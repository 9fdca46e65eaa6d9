"""The XL (4B) DiT family: released folder layout, the split encoder width, the timbre CLS token, generation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dit_service.engine import DiTEngine, SynthesisRequest
from dit_service.model.config import XL_DIMENSIONS, AceStepConfig

XL_TURBO = "acestep-v15-xl-turbo"


@pytest.fixture(scope="module")
def xl_engine(tiny_root: Path) -> DiTEngine:
    return DiTEngine.load(tiny_root, XL_TURBO)


def test_tiny_xl_folder_has_the_released_xl_layout(tiny_root: Path):
    folder = tiny_root / XL_TURBO
    config = json.loads((folder / "config.json").read_text())
    # A wider decoder over a narrower condition side, named by the XL-only fields, loaded by upstream's XL code.
    assert config["hidden_size"] > config["encoder_hidden_size"]
    assert config["num_attention_heads"] > config["encoder_num_attention_heads"]
    assert config["auto_map"]["AutoModel"] == "modeling_acestep_v15_xl_turbo.AceStepConditionGenerationModel"
    assert config["is_turbo"] is True
    weights = load_file(str(folder / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())  # XL snapshots are stored in fp32
    hidden, encoder = config["hidden_size"], config["encoder_hidden_size"]
    assert weights["decoder.condition_embedder.weight"].shape == (hidden, encoder)
    assert weights["decoder.layers.0.cross_attn.k_proj.weight"].shape[1] == hidden
    assert weights["encoder.lyric_encoder.layers.0.self_attn.q_proj.weight"].shape == (encoder, encoder)
    assert weights["detokenizer.embed_tokens.weight"].shape == (encoder, encoder)
    assert weights["null_condition_emb"].shape == (1, 1, encoder)


def test_xl_timbre_vector_is_the_cls_token_output(xl_engine: DiTEngine, turbo_engine: DiTEngine):
    """Upstream's XL code prepends special_token to the reference frames; the 2B code never does."""
    for engine, uses_cls in ((xl_engine, True), (turbo_engine, False)):
        encoder = copy.deepcopy(engine.model.encoder.timbre_encoder)
        refs = torch.randn(2, 30, engine.config.timbre_hidden_dim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            before = encoder(refs)
            encoder.special_token.add_(1.0)
            after = encoder(refs)
        assert before.shape == (2, engine.config.condition_hidden_size)
        assert (not torch.equal(before, after)) == uses_cls


def test_xl_turbo_text2music_follows_the_reference_audio(xl_engine: DiTEngine, make_audio):
    plain = xl_engine.sample_latents(SynthesisRequest(caption="lofi", duration=10, seeds=[3]))
    with_ref = xl_engine.sample_latents(
        SynthesisRequest(caption="lofi", duration=10, seeds=[3], reference_audio=make_audio(4.0, seed=2))
    )
    assert plain.shape == with_ref.shape == (1, 250, xl_engine.latent_channels)
    assert torch.isfinite(with_ref).all() and not torch.allclose(plain, with_ref, atol=1e-5)


def test_xl_cover_and_codes_go_through_the_encoder_width_tokenizer(xl_engine: DiTEngine, make_audio):
    cover = xl_engine.sample_latents(SynthesisRequest(task_type="cover", src_audio=make_audio(6.0), seeds=[1]))
    codes = xl_engine.sample_latents(SynthesisRequest(caption="pop", audio_codes=[list(range(0, 6000, 100))]))
    assert cover.shape == (1, 150, xl_engine.latent_channels) and torch.isfinite(cover).all()
    assert codes.shape == (1, 300, xl_engine.latent_channels) and torch.isfinite(codes).all()


def test_xl_code_is_chosen_by_config_fields():
    assert AceStepConfig.from_dict(dict(XL_DIMENSIONS)).uses_xl_model_code
    assert not AceStepConfig.from_dict({}).uses_xl_model_code
    # auto_map names the module upstream computes the folder with, so it decides when present.
    xl_module = {"AutoModel": "modeling_acestep_v15_xl_base.AceStepConditionGenerationModel"}
    assert AceStepConfig.from_dict({"auto_map": xl_module}).uses_xl_model_code
    turbo_module = {"AutoModel": "modeling_acestep_v15_turbo.AceStepConditionGenerationModel"}
    assert not AceStepConfig.from_dict({"auto_map": turbo_module}).uses_xl_model_code
    # The 2B config.json round-trips without XL-only fields.
    assert "encoder_hidden_size" not in AceStepConfig().to_dict()
    assert AceStepConfig.from_dict(dict(XL_DIMENSIONS)).to_dict()["encoder_hidden_size"] == 2048
