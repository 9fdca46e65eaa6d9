"""Condition encoder (``encoder.``): text projector, lyric encoder, timbre encoder and sequence packing."""

from __future__ import annotations

import torch
from torch import nn

from .config import AceStepConfig
from .layers import EncoderStack


class LyricEncoder(EncoderStack):
    """Encodes raw Qwen3 token *embeddings* of the lyric prompt (no Qwen3 transformer pass)."""

    def __init__(self, config: AceStepConfig):
        super().__init__(config, config.text_hidden_dim, config.num_lyric_encoder_hidden_layers)

    def forward(self, lyric_embeddings: torch.Tensor, lyric_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.run_layers(self.embed_tokens(lyric_embeddings), key_padding=lyric_mask)


class TimbreEncoder(EncoderStack):
    """Reference-audio latents [N, frames, 64] → one timbre vector per reference (output row 0).

    The XL model code prepends ``special_token`` as a CLS token, so row 0 is that token's output; the 2B
    release never prepends it (the parameter is loaded and unused) and row 0 is the first frame's.
    """

    def __init__(self, config: AceStepConfig):
        super().__init__(config, config.timbre_hidden_dim, config.num_timbre_encoder_hidden_layers)
        self.special_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.prepend_cls = config.uses_xl_model_code

    def forward(self, reference_latents: torch.Tensor) -> torch.Tensor:
        hidden = self.embed_tokens(reference_latents)
        if self.prepend_cls:
            cls = self.special_token.to(hidden.dtype).expand(hidden.shape[0], 1, -1)
            hidden = torch.cat([cls, hidden], dim=1)
        return self.run_layers(hidden)[:, 0, :]


def unpack_timbre(vectors: torch.Tensor, order: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed [N, H] vectors with their batch index → ([B, max_count, H], validity mask [B, max_count])."""
    counts = torch.bincount(order, minlength=batch_size)
    max_count = int(counts.max().item())
    out = vectors.new_zeros(batch_size, max_count, vectors.shape[-1])
    mask = torch.zeros(batch_size, max_count, dtype=torch.bool, device=vectors.device)
    slot = [0] * batch_size
    for row, item in enumerate(order.tolist()):
        out[item, slot[item]] = vectors[row]
        mask[item, slot[item]] = True
        slot[item] += 1
    return out, mask


def pack_sequences(
    first: torch.Tensor, second: torch.Tensor, first_mask: torch.Tensor, second_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate two padded sequences and move every row's valid tokens to the front, order kept."""
    hidden = torch.cat([first, second], dim=1)
    mask = torch.cat([first_mask, second_mask], dim=1).bool()
    order = torch.argsort(mask.int(), dim=1, descending=True, stable=True)
    hidden = torch.gather(hidden, 1, order[..., None].expand_as(hidden))
    valid = mask.sum(dim=1, keepdim=True)
    new_mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < valid
    return hidden, new_mask


class ConditionEncoder(nn.Module):
    """Builds the packed cross-attention sequence [lyrics | timbre | text] for the DiT."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.text_projector = nn.Linear(config.text_hidden_dim, config.hidden_size, bias=False)
        self.lyric_encoder = LyricEncoder(config)
        self.timbre_encoder = TimbreEncoder(config)

    def forward(
        self,
        text_hidden: torch.Tensor,
        text_mask: torch.Tensor,
        lyric_embeddings: torch.Tensor,
        lyric_mask: torch.Tensor,
        reference_latents: torch.Tensor,
        reference_order: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.text_projector(text_hidden)
        lyrics = self.lyric_encoder(lyric_embeddings, lyric_mask)
        timbre_vectors = self.timbre_encoder(reference_latents)
        timbre, timbre_mask = unpack_timbre(timbre_vectors, reference_order, text.shape[0])
        hidden, mask = pack_sequences(lyrics, timbre, lyric_mask, timbre_mask)
        return pack_sequences(hidden, text, mask, text_mask)
