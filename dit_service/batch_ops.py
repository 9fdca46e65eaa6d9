"""What one merged forward means for the DiT and the VAE (the ops a :class:`ForwardBatcher` runs).

Merging must be invisible: an item gets the numbers it gets alone. Rows of a DiT forward are
independent except through cross-attention, whose keys are each request's own condition sequence.
Those sequences have different lengths, and the released DiT never masks its cross-attention keys, so
padding one request's keys to another's length would change its audio; masking the added keys fixes the
maths but still moves fp32 results by ~3e-7 per attention (softmax sums over a longer row). So a merged
forward shares every projection, MLP and self-attention, and runs cross-attention per request on its
own unpadded K/V (:class:`GroupedKV`).

Adapters do not split batches: each call names its own (or none), and the decoder's Linear layers add each
call's low-rank update to its rows only (:mod:`dit_service.adapters.routing`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch

from .adapters.routing import AdapterUse, adapter_rows
from .model.layers import GroupedKV
from .vae_decode import decode_latents

CrossKV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (k, v), each [rows, kv_heads, S, head_dim]


@dataclass
class DiTCall:
    """One ``decoder(x, t, context, cross_kv)`` call: x [rows, L, C], t [rows], context [rows, L, 2C]; every row
    with ``adapter`` (None: the base model)."""

    x: torch.Tensor
    t: torch.Tensor
    context: torch.Tensor
    cross_kv: CrossKV
    adapter: AdapterUse | None = None

    @property
    def rows(self) -> int:
        return self.x.shape[0]

    def key(self) -> Hashable:
        """Calls merge when the latent length and dtype/device agree; steps, schedules and adapters may differ."""
        return self.x.shape[1:], self.context.shape[2], self.x.dtype, self.x.device, len(self.cross_kv)


def merge_cross_kv(kvs: list[CrossKV]) -> list[GroupedKV]:
    """Per layer, every call's own K/V side by side (no padding): each call's rows attend only to its keys."""
    rows = [kv[0][0].shape[0] for kv in kvs]
    return [GroupedKV(rows, list(layer)) for layer in zip(*kvs, strict=True)]


def run_dit(decoder, calls: list[DiTCall]) -> list[torch.Tensor]:
    """One decoder forward for all calls; a lone call runs exactly as it would without the batcher."""
    if len(calls) == 1:
        call = calls[0]
        with adapter_rows([(call.rows, call.adapter)]):
            return [decoder(call.x, call.t, call.context, call.cross_kv)]
    with adapter_rows([(call.rows, call.adapter) for call in calls]):
        out = decoder(
            torch.cat([call.x for call in calls]),
            torch.cat([call.t for call in calls]),
            torch.cat([call.context for call in calls]),
            merge_cross_kv([call.cross_kv for call in calls]),
            row_groups=[call.rows for call in calls],
        )
    return list(out.split([call.rows for call in calls]))


def vae_key(latents: torch.Tensor) -> Hashable:
    """VAE windows merge when they have the same frame count (and dtype/device)."""
    return latents.shape[1:], latents.dtype, latents.device


def run_vae(vae, windows: list[torch.Tensor]) -> list[torch.Tensor]:
    """Decode latent windows [rows, T, C] as one VAE call; returns each caller's audio [rows, 2, T·hop]."""
    if len(windows) == 1:
        return [decode_latents(vae, windows[0])]
    audio = decode_latents(vae, torch.cat(windows))
    return list(audio.split([w.shape[0] for w in windows]))
