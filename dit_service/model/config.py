"""AceStepConfig: the fields of a released ``acestep-v15-*/config.json`` that the model code reads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

# The released XL (4B) DiT shape: a wider, deeper decoder over the 2B condition encoder, tokenizer and detokenizer.
XL_DIMENSIONS: dict[str, int] = {
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "encoder_hidden_size": 2048,
    "encoder_intermediate_size": 6144,
    "encoder_num_attention_heads": 16,
    "encoder_num_key_value_heads": 8,
}

# Fields that only XL config.json files carry; None means "same as the decoder" and is not written back.
ENCODER_FIELDS = (
    "encoder_hidden_size",
    "encoder_intermediate_size",
    "encoder_num_attention_heads",
    "encoder_num_key_value_heads",
)


def default_layer_types(num_layers: int) -> list[str]:
    """Even layer indices use sliding-window attention, odd ones full attention (release default)."""
    return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers)]


@dataclass
class AceStepConfig:
    """Defaults are the real 2B turbo/base/sft values (model-dit.md §1.1)."""

    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_scaling: Any = None
    max_position_embeddings: int = 32768
    attention_bias: bool = False
    attention_dropout: float = 0.0
    use_sliding_window: bool = True
    sliding_window: int = 128
    layer_types: list[str] = field(default_factory=list)
    num_lyric_encoder_hidden_layers: int = 8
    num_timbre_encoder_hidden_layers: int = 4
    num_attention_pooler_hidden_layers: int = 2
    num_audio_decoder_hidden_layers: int = 24
    text_hidden_dim: int = 1024
    timbre_hidden_dim: int = 64
    audio_acoustic_hidden_dim: int = 64
    timbre_fix_frame: int = 750
    in_channels: int = 192
    patch_size: int = 2
    pool_window_size: int = 5
    fsq_dim: int = 2048
    fsq_input_levels: list[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    fsq_input_num_quantizers: int = 1
    vocab_size: int = 64003
    data_proportion: float = 0.5
    timestep_mu: float = -0.4
    timestep_sigma: float = 1.0
    use_cache: bool = True
    tie_word_embeddings: bool = True
    is_turbo: bool = False
    is_lego_sft: bool = False
    model_version: str = ""
    # XL: the condition encoder, tokenizer and detokenizer keep their own (2B) width; None = the decoder's.
    encoder_hidden_size: int | None = None
    encoder_intermediate_size: int | None = None
    encoder_num_attention_heads: int | None = None
    encoder_num_key_value_heads: int | None = None
    model_type: str = "acestep"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.layer_types:
            self.layer_types = default_layer_types(self.num_hidden_layers)

    @property
    def num_fsq_codes(self) -> int:
        total = 1
        for level in self.fsq_input_levels:
            total *= level
        return total

    @property
    def condition_hidden_size(self) -> int:
        """Width of the packed condition sequence (encoder output, null embedding, DiT condition_embedder input)."""
        return self.encoder_hidden_size or self.hidden_size

    @property
    def uses_xl_model_code(self) -> bool:
        """Whether upstream computes this checkpoint with its XL model code (timbre CLS token, fp32 FSQ).

        Upstream loads a DiT folder with the module its config.json's ``auto_map`` names, so that decides
        when present; without one, the XL-only ``encoder_hidden_size`` field does (upstream's XL code
        requires it, the 2B code never prepends the CLS token).
        """
        auto_map = self.extra.get("auto_map")
        if isinstance(auto_map, dict) and isinstance(auto_map.get("AutoModel"), str):
            module = auto_map["AutoModel"].split("--")[-1].rsplit(".", 1)[0]
            return "_xl_" in module
        return self.encoder_hidden_size is not None

    def encoder_view(self) -> AceStepConfig:
        """The config the condition encoder, audio tokenizer and detokenizer are built with (XL: the 2B sizes)."""
        return replace(
            self,
            hidden_size=self.condition_hidden_size,
            intermediate_size=self.encoder_intermediate_size or self.intermediate_size,
            num_attention_heads=self.encoder_num_attention_heads or self.num_attention_heads,
            num_key_value_heads=self.encoder_num_key_value_heads or self.num_key_value_heads,
            extra=dict(self.extra),
        )

    def is_sliding(self, layer_index: int) -> bool:
        return self.use_sliding_window and self.layer_types[layer_index] == "sliding_attention"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AceStepConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json(cls, path: str | Path) -> AceStepConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        for name in ENCODER_FIELDS:
            if data[name] is None:
                del data[name]
        data.update(extra)
        return data
