"""The real-size module tree has exactly the release's state-dict keys and shapes (built on meta: free)."""

from __future__ import annotations

import re

from dit_service.model.acestep_model import build_model_on_meta
from dit_service.model.config import XL_DIMENSIONS, AceStepConfig

ENCODER_LAYER_KEYS = {
    "self_attn.q_proj.weight": (2048, 2048),
    "self_attn.k_proj.weight": (1024, 2048),
    "self_attn.v_proj.weight": (1024, 2048),
    "self_attn.o_proj.weight": (2048, 2048),
    "self_attn.q_norm.weight": (128,),
    "self_attn.k_norm.weight": (128,),
    "input_layernorm.weight": (2048,),
    "post_attention_layernorm.weight": (2048,),
    "mlp.gate_proj.weight": (6144, 2048),
    "mlp.up_proj.weight": (6144, 2048),
    "mlp.down_proj.weight": (2048, 6144),
}

TOP_LEVEL_KEYS = {
    "decoder.proj_in.1.weight": (2048, 192, 2),
    "decoder.proj_in.1.bias": (2048,),
    "decoder.time_embed.linear_1.weight": (2048, 256),
    "decoder.time_embed.linear_2.weight": (2048, 2048),
    "decoder.time_embed.time_proj.weight": (12288, 2048),
    "decoder.time_embed.time_proj.bias": (12288,),
    "decoder.time_embed_r.time_proj.weight": (12288, 2048),
    "decoder.condition_embedder.weight": (2048, 2048),
    "decoder.condition_embedder.bias": (2048,),
    "decoder.norm_out.weight": (2048,),
    "decoder.scale_shift_table": (1, 2, 2048),
    "decoder.proj_out.1.weight": (2048, 64, 2),
    "decoder.proj_out.1.bias": (64,),
    "decoder.layers.23.scale_shift_table": (1, 6, 2048),
    "decoder.layers.0.cross_attn.k_proj.weight": (1024, 2048),
    "decoder.layers.0.self_attn_norm.weight": (2048,),
    "decoder.layers.0.cross_attn_norm.weight": (2048,),
    "decoder.layers.0.mlp_norm.weight": (2048,),
    "encoder.text_projector.weight": (2048, 1024),
    "encoder.lyric_encoder.embed_tokens.weight": (2048, 1024),
    "encoder.lyric_encoder.embed_tokens.bias": (2048,),
    "encoder.lyric_encoder.norm.weight": (2048,),
    "encoder.timbre_encoder.embed_tokens.weight": (2048, 64),
    "encoder.timbre_encoder.special_token": (1, 1, 2048),
    "tokenizer.audio_acoustic_proj.weight": (2048, 64),
    "tokenizer.attention_pooler.embed_tokens.weight": (2048, 2048),
    "tokenizer.attention_pooler.special_token": (1, 1, 2048),
    "tokenizer.quantizer.project_in.weight": (6, 2048),
    "tokenizer.quantizer.project_in.bias": (6,),
    "tokenizer.quantizer.project_out.weight": (2048, 6),
    "tokenizer.quantizer.project_out.bias": (2048,),
    "detokenizer.embed_tokens.weight": (2048, 2048),
    "detokenizer.special_tokens": (1, 5, 2048),
    "detokenizer.proj_out.weight": (64, 2048),
    "detokenizer.proj_out.bias": (64,),
    "null_condition_emb": (1, 1, 2048),
}


def real_state_dict():
    return build_model_on_meta(AceStepConfig()).state_dict()


def test_tensor_and_parameter_counts_match_release():
    state = real_state_dict()
    counts = {}
    params = {}
    for key, tensor in state.items():
        part = key.split(".")[0]
        counts[part] = counts.get(part, 0) + 1
        params[part] = params.get(part, 0) + tensor.numel()
    assert len(state) == 677
    assert counts == {"decoder": 476, "encoder": 140, "tokenizer": 32, "detokenizer": 28, "null_condition_emb": 1}
    assert params == {
        "decoder": 1_575_458_880,
        "encoder": 608_367_616,
        "tokenizer": 105_032_198,
        "detokenizer": 105_011_776,
        "null_condition_emb": 2048,
    }
    assert sum(params.values()) == 2_393_872_518


def test_named_keys_and_shapes():
    state = real_state_dict()
    for key, shape in TOP_LEVEL_KEYS.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key


def test_every_encoder_stack_layer_has_release_keys():
    state = real_state_dict()
    stacks = {
        "encoder.lyric_encoder": 8,
        "encoder.timbre_encoder": 4,
        "tokenizer.attention_pooler": 2,
        "detokenizer": 2,
    }
    for prefix, layers in stacks.items():
        found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"\.layers\.(\d+)\.", k))}
        assert found == set(range(layers)), prefix
        for index in range(layers):
            for suffix, shape in ENCODER_LAYER_KEYS.items():
                assert tuple(state[f"{prefix}.layers.{index}.{suffix}"].shape) == shape


def test_dit_layers_have_19_tensors_each_and_no_buffers_leak():
    state = real_state_dict()
    per_layer = [k for k in state if k.startswith("decoder.layers.5.")]
    assert len(per_layer) == 19
    assert not any("rotary_emb" in k or "inv_freq" in k or "implicit_codebook" in k for k in state)


def test_layer_types_alternate_sliding_and_full():
    config = AceStepConfig()
    assert [config.is_sliding(i) for i in range(4)] == [True, False, True, False]
    model = build_model_on_meta(config)
    assert model.decoder.layers[0].sliding_window == 128
    assert model.decoder.layers[1].sliding_window is None


def test_xl_tensor_and_parameter_counts_match_release():
    """Counts from upstream 6d467e4's XL class built with the released XL config (4,987,310,726 params, 19.9 GB)."""
    state = build_model_on_meta(AceStepConfig(**XL_DIMENSIONS)).state_dict()
    counts: dict[str, int] = {}
    params: dict[str, int] = {}
    for key, tensor in state.items():
        part = key.split(".")[0]
        counts[part] = counts.get(part, 0) + 1
        params[part] = params.get(part, 0) + tensor.numel()
    assert len(state) == 829
    assert counts == {"decoder": 628, "encoder": 140, "tokenizer": 32, "detokenizer": 28, "null_condition_emb": 1}
    # Only the decoder grows: the condition encoder, tokenizer and detokenizer are the 2B ones.
    assert params == {
        "decoder": 4_168_897_088,
        "encoder": 608_367_616,
        "tokenizer": 105_032_198,
        "detokenizer": 105_011_776,
        "null_condition_emb": 2048,
    }
    assert sum(params.values()) == 4_987_310_726
    for key, shape in {
        "decoder.condition_embedder.weight": (2560, 2048),
        "decoder.time_embed.time_proj.weight": (15360, 2560),
        "decoder.layers.31.self_attn.q_proj.weight": (4096, 2560),
        "decoder.layers.31.cross_attn.k_proj.weight": (1024, 2560),
        "decoder.layers.31.mlp.gate_proj.weight": (9728, 2560),
        "decoder.proj_in.1.weight": (2560, 192, 2),
        "encoder.timbre_encoder.special_token": (1, 1, 2048),
        "encoder.lyric_encoder.layers.7.mlp.down_proj.weight": (2048, 6144),
        "tokenizer.attention_pooler.embed_tokens.weight": (2048, 2048),
        "detokenizer.special_tokens": (1, 5, 2048),
        "null_condition_emb": (1, 1, 2048),
    }.items():
        assert tuple(state[key].shape) == shape, key
