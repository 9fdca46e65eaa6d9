"""Top module whose ``state_dict()`` keys are exactly the released ``model.safetensors`` keys."""

from __future__ import annotations

import torch
from torch import nn

from .audio_tokenizer import AudioTokenDetokenizer, AudioTokenizer
from .condition_encoder import ConditionEncoder
from .config import AceStepConfig
from .decoder import DiTModel


class AceStepModel(nn.Module):
    """Container for the DiT, condition encoder, audio tokenizer/detokenizer and the CFG null embedding."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.config = config
        self.decoder = DiTModel(config)
        # XL widens only the DiT: everything that produces or quantises conditions keeps the encoder width.
        encoder_config = config.encoder_view()
        self.encoder = ConditionEncoder(encoder_config)
        self.tokenizer = AudioTokenizer(encoder_config)
        self.detokenizer = AudioTokenDetokenizer(encoder_config)
        self.null_condition_emb = nn.Parameter(torch.zeros(1, 1, encoder_config.hidden_size))

    def init_non_persistent_buffers(self) -> None:
        """Rebuild RoPE / FSQ buffers after ``to_empty`` (meta-device construction)."""
        for module in self.modules():
            if module is not self and hasattr(module, "init_non_persistent_buffers"):
                module.init_non_persistent_buffers()

    def codes_to_hints(self, code_ids: torch.Tensor) -> torch.Tensor:
        """5 Hz code ids [B, T5] → 25 Hz hints [B, 5·T5, C] (the path LM codes take)."""
        return self.detokenizer(self.tokenizer.quantizer.output_from_indices(code_ids))

    def latents_to_hints(self, latents: torch.Tensor, silence_latent: torch.Tensor) -> torch.Tensor:
        """Cover path: tokenize then detokenize, cropped back to the input length."""
        quantized, _ = self.tokenizer(latents, silence_latent)
        return self.detokenizer(quantized)[:, : latents.shape[1]]


def build_model_on_meta(config: AceStepConfig) -> AceStepModel:
    """Free construction (no memory, no init) for key checks and fast loading."""
    with torch.device("meta"):
        return AceStepModel(config)
