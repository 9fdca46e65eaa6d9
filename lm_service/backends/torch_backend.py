"""Our own Qwen3 decode loop over transformers' ``Qwen3ForCausalLM`` weights.

Why not ``generate()``: ACE-Step needs CFG pairs (cond + uncond rows sharing each sampled token), a
per-row state machine and per-row RNGs. A session preallocates one KV cache for all rows of a batch
(``[layers, rows, kv_heads, capacity, head_dim]``), prompts are left-padded with per-row RoPE positions
so padding never changes a row's numbers, and on CUDA the one-token decode step is captured once as
a CUDA graph (static shapes) and replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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
    """Holds the model; opens one :class:`DecodeSession` per batch and phase."""

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

    def open_session(self, prompts: list[list[int]], max_new_tokens: int) -> DecodeSession:
        return DecodeSession(self, prompts, max_new_tokens)

    @torch.inference_mode()
    def reference_logits(self, token_ids: list[int]) -> torch.Tensor:
        """Last-position logits of transformers' own forward (used by tests to check our loop)."""
        ids = torch.tensor([token_ids], device=self.device)
        return self.model(input_ids=ids).logits[0, -1].float()


class DecodeSession:
    """KV cache + decode state of one batch of rows; ``close()`` frees the cache."""

    def __init__(self, backend: TorchQwen3Backend, prompts: list[list[int]], max_new_tokens: int):
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every row needs a non-empty prompt")
        self.backend = backend
        device = backend.device
        self.rows = len(prompts)
        self.prompt_len = max(len(p) for p in prompts)
        self.capacity = self.prompt_len + max_new_tokens
        pads = [self.prompt_len - len(p) for p in prompts]
        self.pad = torch.tensor(pads, device=device)
        tokens = torch.zeros(self.rows, self.prompt_len, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens[row, pads[row] :] = torch.tensor(prompt)
        self.prompt_tokens = tokens.to(device)
        cache_shape = (backend.num_layers, self.rows, backend.num_kv_heads, self.capacity, backend.head_dim)
        # Zeros, not empty: masked slots get softmax weight exactly 0, and 0 * NaN would poison rows.
        self.k_cache = torch.zeros(cache_shape, dtype=backend.dtype, device=device)
        self.v_cache = torch.zeros(cache_shape, dtype=backend.dtype, device=device)
        slots = torch.arange(self.capacity, device=device)
        self.valid = (slots[None, :] >= self.pad[:, None]) & (slots[None, :] < self.prompt_len)
        self.next_slot = self.prompt_len
        self.head = backend.head_weight
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_tokens = torch.zeros(self.rows, 1, dtype=torch.long, device=device)
        self._static_slot = torch.zeros(1, dtype=torch.long, device=device)
        self._static_out: torch.Tensor | None = None
        self._static_noise: torch.Tensor | None = None
        self._sample_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    # -- model math ------------------------------------------------------------------------------
    def _forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor, mask: torch.Tensor, kv_len: int
    ) -> torch.Tensor:
        """Run all layers for ``tokens [rows, T]`` written at cache ``slots [T]``; returns last hidden.

        ``mask`` is boolean ``[rows, 1, T, kv_len]`` (True = attend). Few, fused kernels per layer:
        one QKV GEMM, one gate/up GEMM, RoPE by roll, grouped decode attention without K/V copies.
        """
        backend = self.backend
        inner = backend.model.model
        hidden = inner.embed_tokens(tokens)
        cos, sin = inner.rotary_emb(hidden, positions)
        cos, sin_signed = _rope_tables(cos, sin)
        additive = torch.zeros(mask.shape, dtype=hidden.dtype, device=hidden.device).masked_fill_(~mask, float("-inf"))
        for index, weights in enumerate(backend.layers):
            q, k, v = backend._qkv_fn(hidden, weights, cos, sin_signed, backend.eps)
            self.k_cache[index].index_copy_(2, slots, k)
            self.v_cache[index].index_copy_(2, slots, v)
            hidden = backend._attn_mlp_fn(
                hidden,
                q,
                self.k_cache[index, :, :, :kv_len],
                self.v_cache[index, :, :, :kv_len],
                additive,
                weights,
                backend.eps,
                backend.sdpa_decode,
            )
        return F.rms_norm(hidden[:, -1], (hidden.shape[-1],), inner.norm.weight, backend.eps)

    def set_output_tokens(self, token_ids: torch.Tensor | None) -> None:
        """Compute logits only for ``token_ids`` (e.g. the audio codes in Phase 2); None = full vocab."""
        weight = self.backend.head_weight
        self.head = weight if token_ids is None else weight.index_select(0, token_ids.to(weight.device))
        self._graph = None  # the captured graph baked in the previous head

    @torch.inference_mode()
    def prefill(self) -> torch.Tensor:
        """Run the prompts; returns the last position's logits ``[rows, width]``."""
        length = self.prompt_len
        positions = (torch.arange(length, device=self.backend.device)[None, :] - self.pad[:, None]).clamp_min(0)
        causal = torch.ones(length, length, dtype=torch.bool, device=self.backend.device).tril()
        mask = causal[None] & self.valid[:, None, :length]
        # Pad query positions attend to themselves only, so they stay finite.
        mask |= torch.eye(length, dtype=torch.bool, device=self.backend.device)[None]
        slots = torch.arange(length, device=self.backend.device)
        hidden = self._forward(self.prompt_tokens, positions, slots, mask[:, None], length)
        return hidden @ self.head.T

    def _step_math(self, tokens: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        self.valid.index_fill_(1, slot, True)
        positions = slot[None, :] - self.pad[:, None]
        mask = self.valid[:, None, None, :]
        hidden = self._forward(tokens, positions, slot, mask, self.capacity)
        return hidden @ self.head.T

    @torch.inference_mode()
    def step(
        self,
        tokens: torch.Tensor,
        noise: torch.Tensor | None = None,
        sample_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Append one token per row (``[rows]`` on the device); return the next logits.

        With ``sample_fn(logits, noise) -> tokens`` the sampling is part of the step (and of the CUDA
        graph), and the sampled tokens are returned instead: no host work or sync per token.
        """
        if self.next_slot >= self.capacity:
            raise RuntimeError("KV cache full")
        self._static_tokens.copy_(tokens.view(self.rows, 1))
        self._static_slot.fill_(self.next_slot)
        self.next_slot += 1
        if sample_fn is not None:
            if self._static_noise is None or self._static_noise.shape != noise.shape:
                self._static_noise = torch.empty_like(noise)
                self._graph = None
            self._static_noise.copy_(noise)
        if sample_fn is not self._sample_fn:
            self._sample_fn = sample_fn
            self._graph = None
        if not self.backend.use_cuda_graphs:
            return self._step_body()
        if self._graph is None:
            self._capture()
        self._graph.replay()
        return self._static_out

    def _step_body(self) -> torch.Tensor:
        logits = self._step_math(self._static_tokens, self._static_slot)
        if self._sample_fn is None:
            return logits
        return self._sample_fn(logits, self._static_noise)

    def _capture(self) -> None:
        """Warm up on a side stream (this also performs the current step), then capture and replay."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._step_body()
        torch.cuda.current_stream().wait_stream(stream)
        # The warm-up already wrote this step's K/V; replaying rewrites the same slot with the same values.
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._static_out = self._step_body()
        self._graph = graph

    def close(self) -> None:
        """Free the KV cache and the captured graph right away (cancellation, end of phase)."""
        self._graph = None
        self._static_out = self._static_noise = None
        self.k_cache = self.v_cache = None  # type: ignore[assignment]
