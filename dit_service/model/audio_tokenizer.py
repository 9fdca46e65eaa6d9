"""5 Hz semantic path: attention pooler + FSQ tokenizer (``tokenizer.``) and the detokenizer (``detokenizer.``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AceStepConfig
from .layers import EncoderStack


class FiniteScalarQuantizer(nn.Module):
    """ResidualFSQ with one symmetric, soft-clamped FSQ layer (vector-quantize-pytorch ≥ 1.26 semantics).

    Only ``project_in``/``project_out`` are persistent; the level tables are rebuilt as buffers so their
    dtype follows the module (bf16 rounding of the codebook as in a bf16-constructed reference).
    """

    def __init__(self, dim: int, levels: list[int]):
        super().__init__()
        self.levels_list = list(levels)
        self.project_in = nn.Linear(dim, len(levels))
        self.project_out = nn.Linear(len(levels), dim)
        self.register_buffer("levels", torch.zeros(len(levels), dtype=torch.int64), persistent=False)
        self.register_buffer("basis", torch.zeros(len(levels), dtype=torch.int64), persistent=False)
        self.register_buffer("soft_clamp_input_value", torch.zeros(len(levels)), persistent=False)
        self.init_non_persistent_buffers()

    @property
    def codebook_size(self) -> int:
        total = 1
        for level in self.levels_list:
            total *= level
        return total

    def init_non_persistent_buffers(self) -> None:
        device = self.levels.device
        levels = torch.tensor(self.levels_list, dtype=torch.int64, device=device)
        basis = torch.cumprod(torch.tensor([1, *self.levels_list[:-1]], dtype=torch.int64, device=device), dim=0)
        self.levels = levels
        self.basis = basis
        clamp = 1.0 + 1.0 / (levels.double() - 1.0)
        self.soft_clamp_input_value = clamp.to(device=device, dtype=self.soft_clamp_input_value.dtype)

    def _level_codes(self, digits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Level index b ∈ [0, L) → code b·2/(L−1) − 1, computed in ``dtype`` like the implicit codebook."""
        half_width = (2.0 / (self.levels - 1)).to(dtype)
        return digits.to(dtype) * half_width - 1

    def quantize(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[..., dim] → (quantized [..., dim], code ids [..., 1]), computed in ``hidden``'s dtype.

        The projections take their weights in that dtype, so fp32 input on a bf16 module runs the whole
        quantiser in fp32 on the bf16-rounded weights (what upstream's XL code does by casting it up).
        """
        z = _linear(self.project_in, hidden)
        clamp = self.soft_clamp_input_value.to(z.dtype)
        z = torch.tanh(z / clamp) * clamp
        z32 = z.float().clamp(-1.0, 1.0)
        levels32 = self.levels.float()
        digits = torch.floor((levels32 - 1) * (z32 + 1) / 2 + 0.5)
        codes = ((2.0 / (levels32 - 1)) * digits - 1).to(z.dtype)  # step size first, as upstream rounds it
        indices = (digits.long() * self.basis).sum(dim=-1, keepdim=True)
        return _linear(self.project_out, codes), indices

    def output_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Code ids [...] → project_out(code vector) [..., dim]; ids are clamped into the codebook."""
        indices = indices.long().clamp(0, self.codebook_size - 1)
        digits = (indices[..., None] // self.basis) % self.levels
        codes = self._level_codes(digits, self.project_out.weight.dtype)
        return self.project_out(codes)


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` with the weights cast to ``x``'s dtype (a no-op when they already match)."""
    bias = None if layer.bias is None else layer.bias.to(x.dtype)
    return F.linear(x, layer.weight.to(x.dtype), bias)


class AttentionPooler(EncoderStack):
    """Pools each group of ``pool_window_size`` frames into one token via a prepended special token."""

    def __init__(self, config: AceStepConfig):
        super().__init__(config, config.hidden_size, config.num_attention_pooler_hidden_layers)
        self.special_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        """groups [B, T5, window, H] → [B, T5, H]."""
        batch, count, window, hidden = groups.shape
        flat = self.embed_tokens(groups).reshape(batch * count, window, hidden)
        flat = torch.cat([self.special_token.expand(batch * count, 1, hidden).to(flat.dtype), flat], dim=1)
        return self.run_layers(flat)[:, 0].reshape(batch, count, hidden)


class AudioTokenizer(nn.Module):
    """25 Hz latents → 5 Hz FSQ codes (used for cover hints and ``encode_audio`` codes)."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.pool_window_size = config.pool_window_size
        self.audio_acoustic_proj = nn.Linear(config.audio_acoustic_hidden_dim, config.hidden_size)
        self.attention_pooler = AttentionPooler(config)
        self.quantizer = FiniteScalarQuantizer(config.fsq_dim, config.fsq_input_levels)
        # Upstream's XL code runs the quantiser in fp32 whatever the model dtype; the 2B code in model dtype.
        self.fp32_quantizer = config.uses_xl_model_code

    def forward(self, latents: torch.Tensor, silence_latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latents [B, T, C]; silence_latent [frames, C] pads T up to a multiple of the pool window."""
        batch, length, channels = latents.shape
        pad = (-length) % self.pool_window_size
        if pad:
            filler = silence_latent[:pad].to(latents.dtype)[None].expand(batch, pad, channels)
            latents = torch.cat([latents, filler], dim=1)
        groups = latents.reshape(batch, -1, self.pool_window_size, channels)
        pooled = self.attention_pooler(self.audio_acoustic_proj(groups))
        if self.fp32_quantizer:
            quantized, indices = self.quantizer.quantize(pooled.float())
            return quantized.to(pooled.dtype), indices
        return self.quantizer.quantize(pooled)


class AudioTokenDetokenizer(EncoderStack):
    """5 Hz code embeddings → 25 Hz latent-space hints (``pool_window_size`` frames per code)."""

    def __init__(self, config: AceStepConfig):
        super().__init__(config, config.hidden_size, config.num_attention_pooler_hidden_layers)
        self.window = config.pool_window_size
        self.special_tokens = nn.Parameter(torch.zeros(1, config.pool_window_size, config.hidden_size))
        self.proj_out = nn.Linear(config.hidden_size, config.audio_acoustic_hidden_dim)

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        batch, count, hidden = quantized.shape
        tokens = self.embed_tokens(quantized)[:, :, None, :].expand(batch, count, self.window, hidden)
        tokens = (tokens + self.special_tokens[None].to(tokens.dtype)).reshape(batch * count, self.window, hidden)
        out = self.proj_out(self.run_layers(tokens))
        return out.reshape(batch, count * self.window, -1)
