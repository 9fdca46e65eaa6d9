"""Write tiny, randomly initialised checkpoints in exactly the released folder layout.

Used by tests, CI and the offline demo through the real loading path. Outputs are noise by design.
The VAE keeps the real downsampling ratios (hop 1920 → 25 Hz latents at 48 kHz) so lengths are real,
but uses 4 latent channels: Oobleck ties the encoder width to twice the latent size, and a 128-wide
encoder at 48 kHz would make every CPU test slow.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import AutoencoderOobleck
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import Qwen3Config, Qwen3Model

from .model.acestep_model import AceStepModel
from .model.config import AceStepConfig

TINY_LATENT_CHANNELS = 4
TINY_TEXT_HIDDEN = 32
SILENCE_FRAMES = 15000
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

VARIANTS = {
    "acestep-v15-turbo": {"is_turbo": True, "model_version": "turbo"},
    "acestep-v15-base": {"is_turbo": False, "model_version": "base"},
    "acestep-v15-sft": {"is_turbo": False, "model_version": "sft"},
}


def tiny_dit_config(is_turbo: bool, model_version: str) -> AceStepConfig:
    return AceStepConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=16,
        num_lyric_encoder_hidden_layers=2,
        num_timbre_encoder_hidden_layers=2,
        num_attention_pooler_hidden_layers=2,
        num_audio_decoder_hidden_layers=2,
        text_hidden_dim=TINY_TEXT_HIDDEN,
        timbre_hidden_dim=TINY_LATENT_CHANNELS,
        audio_acoustic_hidden_dim=TINY_LATENT_CHANNELS,
        in_channels=3 * TINY_LATENT_CHANNELS,
        fsq_dim=64,
        is_turbo=is_turbo,
        model_version=model_version,
    )


def _randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Perturb every parameter so norms, gates and special tokens are all exercised."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() == 1 and "norm" in name:
                param.copy_(1.0 + 0.05 * noise)
            elif param.dim() >= 2 and ("proj" in name or "embed" in name or "linear" in name):
                fan_in = param.shape[1] * (param.shape[2] if param.dim() > 2 else 1)
                param.copy_(noise / fan_in**0.5)
            else:
                param.copy_(0.1 * noise)


def write_dit_folder(folder: Path, config: AceStepConfig, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    model = AceStepModel(config)
    _randomise(model, generator)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    meta = config.to_dict()
    meta.update(
        {
            "architectures": ["AceStepConditionGenerationModel"],
            "dtype": "bfloat16",
            "transformers_version": "4.57.0",
            "_tiny_random_checkpoint": True,
        }
    )
    (folder / "config.json").write_text(json.dumps(meta, indent=2))
    # Silence latent: a few distinct head frames then one constant frame repeated, like the real file.
    head = 0.3 * torch.randn(1, config.audio_acoustic_hidden_dim, 4, generator=generator)
    tail = 0.3 * torch.randn(1, config.audio_acoustic_hidden_dim, 1, generator=generator)
    silence = torch.cat([head, tail.expand(1, -1, SILENCE_FRAMES - 4)], dim=2).contiguous()
    torch.save(silence, folder / "silence_latent.pt")


def write_vae_folder(folder: Path, seed: int) -> None:
    torch.manual_seed(seed)
    vae = AutoencoderOobleck(
        encoder_hidden_size=2 * TINY_LATENT_CHANNELS,
        downsampling_ratios=[2, 4, 4, 6, 10],
        channel_multiples=[1, 2, 2, 2, 2],
        decoder_channels=8,
        decoder_input_channels=TINY_LATENT_CHANNELS,
        audio_channels=2,
        sampling_rate=48000,
    )
    vae.save_pretrained(str(folder), safe_serialization=True)


def build_tiny_tokenizer() -> Tokenizer:
    """Byte-level BPE over the 256 byte symbols plus Qwen's special tokens.

    Its post-processor appends <|endoftext|> to every text, like the Qwen3-Embedding tokenizer.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    eot = tokenizer.token_to_id(SPECIAL_TOKENS[0])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {SPECIAL_TOKENS[0]}",
        pair=f"$A {SPECIAL_TOKENS[0]} $B {SPECIAL_TOKENS[0]}",
        special_tokens=[(SPECIAL_TOKENS[0], eot)],
    )
    return tokenizer


def write_text_encoder_folder(folder: Path, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    tokenizer.save(str(folder / "tokenizer.json"))
    vocab = tokenizer.get_vocab()
    (folder / "vocab.json").write_text(json.dumps({k: v for k, v in vocab.items() if k not in SPECIAL_TOKENS}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    added = {tok: vocab[tok] for tok in SPECIAL_TOKENS}
    (folder / "added_tokens.json").write_text(json.dumps(added, indent=2))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}, indent=2)
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "model_max_length": 32768,
            },
            indent=2,
        )
    )
    (folder / "chat_template.jinja").write_text(
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}"
    )
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(vocab),
        hidden_size=TINY_TEXT_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=4096,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )
    Qwen3Model(config).save_pretrained(str(folder), safe_serialization=True)


def write_tiny_dit_checkpoints(root: Path, seed: int = 0) -> None:
    """Write turbo/base/sft DiT folders, the VAE and the text encoder under ``root`` (seeded, reproducible)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for offset, (name, flags) in enumerate(VARIANTS.items()):
        write_dit_folder(root / name, tiny_dit_config(**flags), seed + offset)
    write_vae_folder(root / "vae", seed + 10)
    write_text_encoder_folder(root / "Qwen3-Embedding-0.6B", seed + 20)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write tiny random ACE-Step DiT-side checkpoints (noise output).")
    parser.add_argument("root", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_tiny_dit_checkpoints(args.root, args.seed)
    print(f"wrote tiny random DiT-side checkpoints to {args.root} (outputs are noise)")


if __name__ == "__main__":
    main()
