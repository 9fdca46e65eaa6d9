"""Our own Qwen3 layer math over transformers' ``Qwen3ForCausalLM`` weights.

Why not ``generate()``: ACE-Step needs CFG pairs (cond + uncond rows sharing each sampled token), a
per-row state machine and per-row RNGs, and many requests sharing one decode batch. The engine
(:mod:`lm_service.engine`) schedules rows and owns the KV cache; this module holds the weights, fused
per layer into few GEMMs, and the two halves of a layer that the engine's model runner calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Qwen3ForCausalLM

logger = logging.getLogger(__name__)


@dataclass
class FusedLayerWeights:
    """One decoder layer's weights, with Q/K/V and gate/up concatenated so each is one GEMM."""

    input_norm: torch.Tensor
    qkv: torch.Tensor
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    o_proj: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @classmethod
    def from_hf(cls, layer, head_dim: int) -> FusedLayerWeights:
        attn, mlp = layer.self_attn, layer.mlp
        return cls(
            input_norm=layer.input_layernorm.weight,
            qkv=torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).contiguous(),
            q_norm=attn.q_norm.weight,
            k_norm=attn.k_norm.weight,
            o_proj=attn.o_proj.weight,
            post_norm=layer.post_attention_layernorm.weight,
            gate_up=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).contiguous(),
            down=mlp.down_proj.weight,
            num_heads=attn.q_proj.weight.shape[0] // head_dim,
            num_kv_heads=attn.k_proj.weight.shape[0] // head_dim,
            head_dim=head_dim,
        )


def _rope_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[rows, T, 1, D]`` cos and sign-folded sin, so rope(x) = x*cos + roll(x, D/2)*sin_signed."""
    half = sin.shape[-1] // 2
    sin_signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    return cos.unsqueeze(2), sin_signed.unsqueeze(2)


def _qkv_rope(
    hidden: torch.Tensor, w: FusedLayerWeights, cos: torch.Tensor, sin_signed: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Norm, QKV projection, per-head q/k norm and RoPE; returns q, k, v as ``[rows, heads, T, D]``."""
    rows, steps, width = hidden.shape
    d = w.head_dim
    x = F.rms_norm(hidden, (width,), w.input_norm, eps)
    qkv = (x @ w.qkv.T).view(rows, steps, w.num_heads + 2 * w.num_kv_heads, d)
    q, k, v = qkv.split([w.num_heads, w.num_kv_heads, w.num_kv_heads], dim=2)
    # One RoPE over q and k together: the same elementwise math, three kernels fewer than two RoPEs.
    qk = torch.cat([F.rms_norm(q, (d,), w.q_norm, eps), F.rms_norm(k, (d,), w.k_norm, eps)], dim=2)
    qk = torch.addcmul(qk * cos, torch.roll(qk, d // 2, dims=-1), sin_signed)
    q, k = qk.split([w.num_heads, w.num_kv_heads], dim=2)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


def _attention_mlp(
    hidden: torch.Tensor,
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    additive_mask: torch.Tensor,
    w: FusedLayerWeights,
    eps: float,
    sdpa_decode: bool = False,
) -> torch.Tensor:
    """Grouped-query attention over the cache (no K/V head copies), output projection and MLP.

    Decode packs the ``group`` query heads that share a KV head as that head's query *positions*, so
    attention runs per KV head without repeating K/V: either as explicit matmuls + fp32 softmax, or
    (``sdpa_decode``) as one fused SDPA call — fewer kernels; which is faster is measured by bench/lm.py.
    """
    rows, steps, width = hidden.shape
    group = w.num_heads // w.num_kv_heads
    d = w.head_dim
    # q heads h = kv * group + g share kv head ``kv`` (transformers' repeat_kv order).
    if steps > 1:  # prefill: the fused kernel keeps memory linear in the prompt length
        out = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=additive_mask, enable_gqa=True)
        out = out.transpose(1, 2).reshape(rows, steps, -1)
    elif sdpa_decode:
        qg = q.reshape(rows, w.num_kv_heads, group, d)
        out = F.scaled_dot_product_attention(qg, k_cache, v_cache, attn_mask=additive_mask.view(rows, 1, 1, -1))
        out = out.reshape(rows, 1, w.num_heads * d)
    else:
        qg = q.reshape(rows, w.num_kv_heads, group, d)
        scores = (qg @ k_cache.transpose(-1, -2)) * (d**-0.5) + additive_mask.view(rows, 1, 1, -1)
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = (probs @ v_cache).reshape(rows, 1, w.num_heads * d)
    hidden = hidden + out @ w.o_proj.T
    x = F.rms_norm(hidden, (width,), w.post_norm, eps)
    gate, up = (x @ w.gate_up.T).chunk(2, dim=-1)
    return hidden + (F.silu(gate) * up) @ w.down.T


class TorchQwen3Backend:
    """Holds the model and its fused layer weights; the engine's runner drives them."""

    name = "torch"

    def __init__(
        self,
        model: Qwen3ForCausalLM,
        device: torch.device,
        use_cuda_graphs: bool | None = None,
        decode_attention: str = "matmul",
    ):
        """``decode_attention``: ``matmul`` (explicit, fp32 softmax) or ``sdpa`` (one fused kernel)."""
        if decode_attention not in ("matmul", "sdpa"):
            raise ValueError(f"decode_attention must be 'matmul' or 'sdpa', got {decode_attention!r}")
        self.sdpa_decode = decode_attention == "sdpa"
        self.model = model.eval()
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.use_cuda_graphs = device.type == "cuda" if use_cuda_graphs is None else use_cuda_graphs
        cfg = model.config
        self.num_layers = cfg.num_hidden_layers
        self.num_kv_heads = cfg.num_key_value_heads
        self.num_heads = cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.eps = cfg.rms_norm_eps
        self.layers = [FusedLayerWeights.from_hf(layer, self.head_dim) for layer in model.model.layers]
        self.compiled = False
        self._qkv_fn = _qkv_rope
        self._attn_mlp_fn = _attention_mlp

    def enable_compile(self) -> None:
        """torch.compile the two per-layer halves (all layers share one compiled graph; CUDA only)."""
        self._qkv_fn = torch.compile(_qkv_rope, dynamic=False)
        self._attn_mlp_fn = torch.compile(_attention_mlp, dynamic=False)
        self.compiled = True

    @classmethod
    def load(
        cls, model_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32, **kwargs
    ) -> TorchQwen3Backend:
        model = Qwen3ForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device)
        return cls(model, torch.device(device), **kwargs)

    @property
    def head_weight(self) -> torch.Tensor:
        return self.model.get_output_embeddings().weight

    @torch.inference_mode()
    def reference_logits(self, token_ids: list[int]) -> torch.Tensor:
        """Last-position logits of transformers' own forward (used by tests to check our loop)."""
        ids = torch.tensor([token_ids], device=self.device)
        return self.model(input_ids=ids).logits[0, -1].float()
