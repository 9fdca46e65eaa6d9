"""Transformer building blocks shared by the DiT and the condition/audio encoders.

Parameter names follow the release (``q_proj``, ``k_norm``, ``input_layernorm`` ...), so the modules'
state-dict keys equal the checkpoint keys without any renaming table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AceStepConfig


class RMSNorm(nn.Module):
    """Qwen3-style RMSNorm: normalise in fp32, cast back, then scale (matches the reference rounding)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(input_dtype)


class RotaryEmbedding(nn.Module):
    """Default (unscaled) RoPE with half-split rotation; positions always start at 0.

    ``inv_freq`` is a non-persistent buffer on purpose: casting the module to bf16 rounds it, exactly like
    the reference's ``.to(bf16)`` does, which matters for bit-level comparisons.
    """

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.register_buffer("inv_freq", self._compute_inv_freq(), persistent=False)

    def _compute_inv_freq(self, device: torch.device | str | None = None) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim
        return 1.0 / (self.theta**exponents)

    def init_non_persistent_buffers(self) -> None:
        """Recompute the buffer after ``to_empty`` (meta-device construction leaves it uninitialised)."""
        dtype = self.inv_freq.dtype
        self.inv_freq = self._compute_inv_freq(self.inv_freq.device).to(dtype)

    def forward(self, seq_len: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(seq_len, device=self.inv_freq.device, dtype=torch.float32)
        angles = positions[:, None] * self.inv_freq.float()[None, :]
        emb = torch.cat((angles, angles), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, heads, L, head_dim]; cos/sin: [L, head_dim]."""
    return x * cos + rotate_half(x) * sin


def sliding_window_mask(seq_len: int, window: int, device: torch.device | str) -> torch.Tensor:
    """Boolean [L, L] band (True = may attend): bidirectional, |i - j| <= window."""
    idx = torch.arange(seq_len, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= window


def build_attention_mask(
    seq_len: int,
    window: int | None,
    key_padding: torch.Tensor | None,
    device: torch.device | str,
) -> torch.Tensor | SlidingWindow | None:
    """Combine a sliding band and a key padding mask into an SDPA boolean mask; None when nothing is masked.

    Returning None for unmasked full attention lets SDPA pick its flash kernel on GPU; long unpadded
    sliding layers get a :class:`SlidingWindow` marker so only the band is computed.
    """
    padded = key_padding is not None and not bool(key_padding.all())
    if window is not None and not padded and seq_len > 4 * window:
        return SlidingWindow(window, band_block_mask(seq_len, window, device))
    mask = None
    if window is not None and seq_len > window + 1:
        mask = sliding_window_mask(seq_len, window, device)[None, None]
    if padded:
        pad = key_padding.bool()[:, None, None, :]
        mask = pad if mask is None else mask & pad
    return mask


class MLP(nn.Module):
    """SwiGLU feed-forward without biases (Qwen3MLP)."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    """Multi-head attention with GQA and per-head q/k RMSNorm; RoPE for self-attention only."""

    def __init__(self, config: AceStepConfig, kv_input_size: int | None = None):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        hidden = config.hidden_size
        kv_in = kv_input_size or hidden
        bias = config.attention_bias
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(kv_in, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(kv_in, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def project_kv(
        self, source: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values as [B, kv_heads, L, head_dim]; cross-attention callers cache this across steps."""
        batch, length, _ = source.shape
        k = self.k_norm(self.k_proj(source).view(batch, length, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(source).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            k = apply_rope(k, *rope)
        return k, v

    def forward(
        self,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_source: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        cached_kv: tuple[torch.Tensor, torch.Tensor] | GroupedKV | None = None,
    ) -> torch.Tensor:
        batch, length, _ = hidden.shape
        q = self.q_norm(self.q_proj(hidden).view(batch, length, self.num_heads, self.head_dim)).transpose(1, 2)
        if rope is not None:
            q = apply_rope(q, *rope)
        if isinstance(cached_kv, GroupedKV):
            out = cached_kv.attend(q)
        else:
            if cached_kv is not None:
                k, v = cached_kv
            else:
                k, v = self.project_kv(hidden if kv_source is None else kv_source, rope if kv_source is None else None)
            if isinstance(attn_mask, SlidingWindow):
                out = banded_attention(q, k, v, attn_mask.window, attn_mask.block_mask)
            else:
                out = grouped_attention(q, k, v, attn_mask)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim))


def grouped_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None
) -> torch.Tensor:
    """SDPA with GQA (query head h reads kv head h // group, like transformers' repeat_kv).

    Unmasked calls use SDPA's native GQA so the flash kernel applies; masked calls expand k/v because
    not every masked kernel accepts grouped heads.
    """
    group = q.shape[1] // k.shape[1]
    if attn_mask is None:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=group > 1)
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def band_block_mask(length: int, window: int, device: torch.device | str) -> torch.Tensor:
    """[1, blocks, window, 3·window] mask for block-local attention (True = attend)."""
    blocks = -(-length // window)
    query = torch.arange(blocks, device=device)[:, None, None] * window + torch.arange(window, device=device)[:, None]
    key = (
        torch.arange(blocks, device=device)[:, None, None] * window
        - window
        + torch.arange(3 * window, device=device)[None, None, :]
    )
    return (((query - key).abs() <= window) & (key >= 0) & (key < length))[None]


def banded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, block_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact bidirectional sliding-window attention (|i − j| ≤ window) that only scores the band.

    Queries are cut into blocks of ``window`` rows; each block attends its 3·window neighbouring keys
    with a fixed relative mask, so cost grows with L·window instead of L². Same result as the full
    masked SDPA up to summation order.
    """
    batch, heads, length, dim = q.shape
    group = heads // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    blocks = -(-length // window)
    padded = blocks * window
    q = F.pad(q, (0, 0, 0, padded - length)).reshape(batch * heads, blocks, window, dim)
    key_pad = (window, padded - length + window)
    k = F.pad(k, (0, 0, *key_pad)).unfold(2, 3 * window, window).transpose(-1, -2)
    v = F.pad(v, (0, 0, *key_pad)).unfold(2, 3 * window, window).transpose(-1, -2)
    k = k.reshape(batch * heads, blocks, 3 * window, dim)
    v = v.reshape(batch * heads, blocks, 3 * window, dim)
    if block_mask is None:
        block_mask = band_block_mask(length, window, q.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=block_mask)
    return out.reshape(batch, heads, padded, dim)[:, :, :length]


class GroupedKV:
    """Cached cross-attention K/V of several requests merged into one batch, kept apart.

    Query rows ``rows[i]`` attend only to ``kv[i]``, that request's own keys at their own length. Padding
    them to one length would change a request's audio (the released DiT masks no cross-attention key),
    and even masked padding changes the rounding of the softmax sums; separate attention calls change nothing.
    """

    def __init__(self, rows: list[int], kv: list[tuple[torch.Tensor, torch.Tensor]]):
        self.rows = rows
        self.kv = kv

    def attend(self, q: torch.Tensor) -> torch.Tensor:
        parts = q.split(self.rows)
        return torch.cat([grouped_attention(part, k, v, None) for part, (k, v) in zip(parts, self.kv, strict=True)])


class SlidingWindow:
    """Passed instead of a dense mask when attention should use :func:`banded_attention`."""

    def __init__(self, window: int, block_mask: torch.Tensor):
        self.window = window
        self.block_mask = block_mask


class EncoderLayer(nn.Module):
    """Pre-norm bidirectional transformer layer used by the lyric/timbre encoders, pooler and detokenizer."""

    def __init__(self, config: AceStepConfig, layer_index: int):
        super().__init__()
        self.sliding_window = config.sliding_window if config.is_sliding(layer_index) else None
        self.self_attn = Attention(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config.hidden_size, config.intermediate_size)

    def forward(
        self,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        masks: dict[int | None, torch.Tensor | None],
    ) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), rope=rope, attn_mask=masks[self.sliding_window])
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class EncoderStack(nn.Module):
    """``embed_tokens`` Linear → encoder layers → final norm (lyric/timbre encoders, pooler, detokenizer)."""

    def __init__(self, config: AceStepConfig, input_size: int, num_layers: int):
        super().__init__()
        self.embed_tokens = nn.Linear(input_size, config.hidden_size)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(min(num_layers, config.num_hidden_layers)))

    def run_layers(self, hidden: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        length = hidden.shape[1]
        rope = self.rotary_emb(length, hidden.dtype)
        windows = {layer.sliding_window for layer in self.layers}
        masks = {w: build_attention_mask(length, w, key_padding, hidden.device) for w in windows}
        for layer in self.layers:
            hidden = layer(hidden, rope, masks)
        return self.norm(hidden)
