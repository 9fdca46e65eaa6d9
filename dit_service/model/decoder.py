"""The DiT (``decoder.``): 2:1 patchify, AdaLN-modulated self-attention (sliding/full), cross-attention, MLP."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..stop_points import stop_point
from .config import AceStepConfig
from .layers import MLP, Attention, GroupedKV, RMSNorm, RotaryEmbedding, build_attention_mask


class Transpose(nn.Module):
    """Parameter-less [B, L, C] ⇄ [B, C, L] swap; exists so ``proj_in.1`` / ``proj_out.1`` keys line up."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class TimestepEmbedding(nn.Module):
    """Sinusoidal (cos first) timestep features → embedding and the 6 AdaLN modulation vectors."""

    def __init__(self, hidden_size: int, in_channels: int = 256, scale: float = 1000.0):
        super().__init__()
        self.in_channels = in_channels
        self.scale = scale
        self.linear_1 = nn.Linear(in_channels, hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)
        self.time_proj = nn.Linear(hidden_size, hidden_size * 6)
        self.hidden_size = hidden_size

    def sinusoid(self, t: torch.Tensor) -> torch.Tensor:
        # t * 1000 happens in t's dtype on purpose: the reference rounds it to bf16 before sin/cos.
        scaled = (t * self.scale).float()
        half = self.in_channels // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = scaled[:, None] * freqs[None, :]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(t.dtype)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.linear_2(F.silu(self.linear_1(self.sinusoid(t).to(self.linear_1.weight.dtype))))
        proj = self.time_proj(F.silu(emb)).view(-1, 6, self.hidden_size)
        return emb, proj


class DiTLayer(nn.Module):
    def __init__(self, config: AceStepConfig, layer_index: int):
        super().__init__()
        hidden = config.hidden_size
        self.sliding_window = config.sliding_window if config.is_sliding(layer_index) else None
        self.self_attn_norm = RMSNorm(hidden, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.cross_attn_norm = RMSNorm(hidden, config.rms_norm_eps)
        self.cross_attn = Attention(config)
        self.mlp_norm = RMSNorm(hidden, config.rms_norm_eps)
        self.mlp = MLP(hidden, config.intermediate_size)
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 6, hidden))

    def forward(
        self,
        hidden: torch.Tensor,
        modulation: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        masks: dict[int | None, torch.Tensor | None],
        cross_kv: tuple[torch.Tensor, torch.Tensor] | GroupedKV,
    ) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.scale_shift_table + modulation).chunk(6, dim=1)
        dtype = hidden.dtype
        attn_in = (self.self_attn_norm(hidden) * (1 + scale1) + shift1).to(dtype)
        hidden = (hidden + gate1 * self.self_attn(attn_in, rope=rope, attn_mask=masks[self.sliding_window])).to(dtype)
        hidden = hidden + self.cross_attn(self.cross_attn_norm(hidden), cached_kv=cross_kv)
        mlp_in = (self.mlp_norm(hidden) * (1 + scale2) + shift2).to(dtype)
        return (hidden + gate2 * self.mlp(mlp_in)).to(dtype)


class DiTModel(nn.Module):
    """Predicts the flow velocity v ≈ noise − x0 from x_t, the timestep and the conditions."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        hidden = config.hidden_size
        self.config = config
        self.patch_size = config.patch_size
        self.proj_in = nn.Sequential(
            Transpose(), nn.Conv1d(config.in_channels, hidden, config.patch_size, stride=config.patch_size), Transpose()
        )
        self.time_embed = TimestepEmbedding(hidden)
        self.time_embed_r = TimestepEmbedding(hidden)
        self.condition_embedder = nn.Linear(config.condition_hidden_size, hidden)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.layers = nn.ModuleList(DiTLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm_out = RMSNorm(hidden, config.rms_norm_eps)
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 2, hidden))
        self.proj_out = nn.Sequential(
            Transpose(),
            nn.ConvTranspose1d(hidden, config.audio_acoustic_hidden_dim, config.patch_size, stride=config.patch_size),
            Transpose(),
        )

    def precompute_cross_kv(self, encoder_hidden: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys/values per layer; constant across steps, so computed once per condition."""
        enc = self.condition_embedder(encoder_hidden)
        return [layer.cross_attn.project_kv(enc) for layer in self.layers]

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        context_latents: torch.Tensor,
        cross_kv: list[tuple[torch.Tensor, torch.Tensor]] | list[GroupedKV],
        r: torch.Tensor | None = None,
        row_groups: list[int] | None = None,
    ) -> torch.Tensor:
        """x_t [B, T, C], t [B], context [B, T, 2C] → v [B, T, C]. Padding masks are never applied (as released).

        Batches merged from several requests (see ``batch_ops``) pass per-layer :class:`GroupedKV` (each
        request attends to its own keys) and ``row_groups`` (rows per request): the timestep MLPs and the
        patchify convolutions then run per request, because CPU kernels round a lone row differently
        (matrix-vector paths), so every request gets exactly the numbers it gets alone.
        """
        r = t if r is None else r
        temb_t, proj_t = _by_rows(self.time_embed, t, row_groups)
        temb_r, proj_r = _by_rows(self.time_embed_r, t - r, row_groups)
        temb, modulation = temb_t + temb_r, proj_t + proj_r

        length = x_t.shape[1]
        hidden = torch.cat([context_latents, x_t], dim=-1)
        pad = (-length) % self.patch_size
        if pad:
            hidden = F.pad(hidden, (0, 0, 0, pad))
        hidden = _by_rows(self.proj_in, hidden, row_groups)
        tokens = hidden.shape[1]
        rope = self.rotary_emb(tokens, hidden.dtype)
        windows = {layer.sliding_window for layer in self.layers}
        masks = {w: build_attention_mask(tokens, w, None, hidden.device) for w in windows}
        for layer, kv in zip(self.layers, cross_kv, strict=True):
            stop_point("DiT forward")  # a forward over a long song takes seconds on CPU: stop between layers
            hidden = layer(hidden, modulation, rope, masks, kv)
        shift, scale = (self.scale_shift_table + temb[:, None, :]).chunk(2, dim=1)
        hidden = (self.norm_out(hidden) * (1 + scale) + shift).to(hidden.dtype)
        return _by_rows(self.proj_out, hidden, row_groups)[:, :length]


_row_part = threading.local()


@contextmanager
def row_part(index: int) -> Iterator[None]:
    """Marks a call that sees only row group ``index`` of a merged batch (see :func:`_by_rows`).

    Per-row adapters (``dit_service.adapters``) read it: inside, a layer's input holds that group's rows only.
    """
    previous = getattr(_row_part, "index", None)
    _row_part.index = index
    try:
        yield
    finally:
        _row_part.index = previous


def current_row_part() -> int | None:
    """The row group the running call belongs to, or None when it sees every row."""
    return getattr(_row_part, "index", None)


def _by_rows(module: nn.Module, x: torch.Tensor, groups: list[int] | None):
    """``module(x)``, computed per group of rows when groups are given (outputs concatenated back)."""
    if groups is None or len(groups) <= 1:
        return module(x)
    parts = []
    for index, part in enumerate(x.split(groups)):
        with row_part(index):
            parts.append(module(part))
    if isinstance(parts[0], tuple):
        return tuple(_cat_rows(outputs) for outputs in zip(*parts, strict=True))
    return _cat_rows(parts)


def _cat_rows(parts) -> torch.Tensor:
    """``torch.cat`` along rows that keeps the parts' memory layout: the patchify output is a transposed view,
    and the GEMMs after it round differently on a contiguous copy."""
    strides = parts[0].stride()
    order = [0, *sorted(range(1, parts[0].dim()), key=lambda dim: -strides[dim])]
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return torch.cat([part.permute(order) for part in parts]).permute(inverse)
