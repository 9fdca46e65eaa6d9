"""Write tiny, randomly initialised checkpoints in exactly the released folder layout.

Used by tests, CI and the offline demo through the real loading path. Outputs are noise by design.
The VAE keeps the real downsampling ratios (hop 1920 → 25 Hz latents at 48 kHz) so lengths are real,
but uses 4 latent channels: Oobleck ties the encoder width to twice the latent size, and a 128-wide
encoder at 48 kHz would make every CPU test slow.
"""

from __future__ import annotations

import argparse
import json
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderOobleck
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import Qwen3Config, Qwen3Model

from .model.acestep_model import AceStepModel, build_model_on_meta
from .model.config import XL_DIMENSIONS, AceStepConfig

TINY_LATENT_CHANNELS = 4
TINY_TEXT_HIDDEN = 32
SILENCE_FRAMES = 15000
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Folder → config.json flags and the upstream module its ``auto_map`` names (which upstream loads it with).
# The order fixes each folder's seed (seed + index), so new variants go at the end.
VARIANTS: dict[str, dict[str, Any]] = {
    "acestep-v15-turbo": {"is_turbo": True, "model_version": "turbo", "module": "modeling_acestep_v15_turbo"},
    "acestep-v15-base": {"is_turbo": False, "model_version": "base", "module": "modeling_acestep_v15_base"},
    "acestep-v15-sft": {"is_turbo": False, "model_version": "sft", "module": "modeling_acestep_v15_base"},
    "acestep-v15-xl-turbo": {"is_turbo": True, "model_version": "turbo", "module": "modeling_acestep_v15_xl_turbo"},
    "acestep-v15-xl-base": {"is_turbo": False, "model_version": "base", "module": "modeling_acestep_v15_xl_base"},
    "acestep-v15-xl-sft": {"is_turbo": False, "model_version": "sft", "module": "modeling_acestep_v15_xl_base"},
}
# What ``make-tiny-checkpoints`` writes: the three 2B variants and one XL one (XL base/sft on request).
DEFAULT_TINY_VARIANTS = ("acestep-v15-turbo", "acestep-v15-base", "acestep-v15-sft", "acestep-v15-xl-turbo")

ADAPTERS_FOLDER = "adapters"  # root/adapters/tiny-lora (PEFT LoRA) and tiny-lokr (LyCORIS LoKr)
TINY_ADAPTER_BASE = "acestep-v15-turbo"

# Tiny XL shape: the decoder wider than the encoder side (and with more heads), like the release's 2560 vs 2048.
TINY_XL_DIMENSIONS: dict[str, int] = {
    "hidden_size": 96,
    "intermediate_size": 192,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "encoder_hidden_size": 64,
    "encoder_intermediate_size": 128,
    "encoder_num_attention_heads": 4,
    "encoder_num_key_value_heads": 2,
}


def _auto_map(module: str) -> dict[str, str]:
    return {
        "AutoConfig": "configuration_acestep_v15.AceStepConfig",
        "AutoModel": f"{module}.AceStepConditionGenerationModel",
    }


def is_xl_module(module: str) -> bool:
    return "_xl_" in module


def tiny_dit_config(is_turbo: bool, model_version: str, module: str | None = None) -> AceStepConfig:
    """Tiny shapes; ``module`` (an upstream modeling module name) adds its ``auto_map`` and, for XL, the XL split."""
    shape: dict[str, Any] = dict(
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
    )
    if module is not None and is_xl_module(module):
        shape.update(TINY_XL_DIMENSIONS)
    extra = {"auto_map": _auto_map(module)} if module else {}
    return AceStepConfig(**shape, is_turbo=is_turbo, model_version=model_version, extra=extra)


def released_dit_config(variant: str) -> AceStepConfig:
    """Full released shape of a known variant (2B defaults, or the XL dimensions), with its flags and auto_map."""
    flags = VARIANTS[variant]
    return AceStepConfig(
        is_turbo=flags["is_turbo"],
        model_version=flags["model_version"],
        **(XL_DIMENSIONS if is_xl_module(flags["module"]) else {}),
        extra={"auto_map": _auto_map(flags["module"])},
    )


def _random_value(name: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """One parameter's random fp32 value; the rule depends only on its name and shape."""
    noise = torch.randn(shape, generator=generator)
    if len(shape) == 1 and "norm" in name:
        return 1.0 + 0.05 * noise
    if len(shape) >= 2 and ("proj" in name or "embed" in name or "linear" in name):
        fan_in = shape[1] * (shape[2] if len(shape) > 2 else 1)
        return noise / fan_in**0.5
    return 0.1 * noise


def _randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Perturb every parameter so norms, gates and special tokens are all exercised."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(_random_value(name, param.shape, generator))


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def save_file_streaming(
    path: Path,
    shapes: dict[str, tuple[int, ...]],
    tensors: Iterable[tuple[str, torch.Tensor]],
    dtype: torch.dtype,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write a safetensors file one tensor at a time, so a multi-GB checkpoint never sits in memory.

    ``shapes`` fixes the header up front; ``tensors`` must then yield exactly those names in that order.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    code = SAFETENSORS_DTYPES[dtype]
    for name, shape in shapes.items():
        size = itemsize * int(torch.Size(shape).numel())
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data must start 8-byte aligned
    expected = iter(shapes.items())
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)))
        handle.write(blob)
        for name, tensor in tensors:
            want_name, want_shape = next(expected)
            if name != want_name or tuple(tensor.shape) != tuple(want_shape):
                raise ValueError(f"tensor {name} {tuple(tensor.shape)} arrived where {want_name} {want_shape} belongs")
            data = tensor.detach().to(dtype).contiguous().reshape(-1).view(torch.uint8)
            handle.write(memoryview(data.numpy()))
    if next(expected, None) is not None:
        raise ValueError(f"{path}: fewer tensors than the header lists")


def _streamed_random_state(
    config: AceStepConfig, generator: torch.Generator
) -> tuple[dict[str, tuple[int, ...]], Iterator[tuple[str, torch.Tensor]]]:
    """Shapes of every state-dict tensor (from a meta model) and a generator of their random values.

    Values are drawn in ``named_parameters`` order with the same rule as :func:`_randomise`, so for a
    given seed the file equals the one the in-memory path writes.
    """
    model = build_model_on_meta(config)
    names = [name for name, _ in model.named_parameters()]
    state_shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if list(state_shapes) != names:  # a persistent buffer or a tied weight would need its own value
        raise ValueError("streamed writing needs a state dict made of parameters only, in parameter order")

    def values() -> Iterator[tuple[str, torch.Tensor]]:
        for name in names:
            yield name, _random_value(name, torch.Size(state_shapes[name]), generator)

    return state_shapes, values()


def write_dit_folder(
    folder: Path,
    config: AceStepConfig,
    seed: int,
    *,
    dtype: torch.dtype = torch.bfloat16,
    low_memory: bool = False,
    random_marker: str = "_tiny_random_checkpoint",
) -> None:
    """Random DiT weights + config.json + silence latent in the released folder layout.

    ``low_memory`` builds the model on the meta device and streams each tensor to disk (same values):
    a real-size 2B DiT then needs a few hundred MB of RAM instead of ~15 GB.
    """
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    weights = folder / "model.safetensors"
    if low_memory:
        shapes, values = _streamed_random_state(config, generator)
        save_file_streaming(weights, shapes, values, dtype, metadata={"format": "pt"})
    else:
        model = AceStepModel(config)
        _randomise(model, generator)
        state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(weights), metadata={"format": "pt"})
        del model, state
    meta = config.to_dict()
    meta.update(
        {
            "architectures": ["AceStepConditionGenerationModel"],
            "dtype": str(dtype).removeprefix("torch."),
            "transformers_version": "4.57.0",
            random_marker: True,
        }
    )
    (folder / "config.json").write_text(json.dumps(meta, indent=2))
    # Silence latent: a few distinct head frames then one constant frame repeated, like the real file.
    head = 0.3 * torch.randn(1, config.audio_acoustic_hidden_dim, 4, generator=generator)
    tail = 0.3 * torch.randn(1, config.audio_acoustic_hidden_dim, 1, generator=generator)
    silence = torch.cat([head, tail.expand(1, -1, SILENCE_FRAMES - 4)], dim=2).contiguous()
    torch.save(silence, folder / "silence_latent.pt")


TINY_VAE_CONFIG: dict[str, Any] = {
    "encoder_hidden_size": 2 * TINY_LATENT_CHANNELS,
    "downsampling_ratios": [2, 4, 4, 6, 10],
    "channel_multiples": [1, 2, 2, 2, 2],
    "decoder_channels": 8,
    "decoder_input_channels": TINY_LATENT_CHANNELS,
    "audio_channels": 2,
    "sampling_rate": 48000,
}


def write_vae_folder(
    folder: Path, seed: int, config: dict[str, Any] | None = None, dtype: torch.dtype | None = None
) -> None:
    """Random ``AutoencoderOobleck``; ``config`` (default: the tiny one) and ``dtype`` (default fp32) as saved."""
    torch.manual_seed(seed)
    vae = AutoencoderOobleck(**(config or TINY_VAE_CONFIG))
    if dtype is not None:
        vae = vae.to(dtype)
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


def write_text_encoder_folder(
    folder: Path, seed: int, config_overrides: dict[str, Any] | None = None, dtype: torch.dtype | None = None
) -> None:
    """Tiny tokenizer + random ``Qwen3Model``; ``config_overrides`` reshape it (e.g. to Qwen3-Embedding-0.6B).

    The tokenizer stays the tiny byte-level one, whose ids all lie below any vocab_size it is given.
    """
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
    shape: dict[str, Any] = dict(
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
    config = Qwen3Config(**{**shape, **(config_overrides or {})})  # built whole: layer_types follow the depth
    model = Qwen3Model(config)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(str(folder), safe_serialization=True)


def write_tiny_dit_checkpoints(root: Path, seed: int = 0, variants: Iterable[str] = DEFAULT_TINY_VARIANTS) -> None:
    """Write the DiT ``variants`` (names from VARIANTS), the VAE and the text encoder under ``root`` (seeded), and
    with the turbo model two tiny adapters of it under ``root/adapters``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    wanted = set(variants)
    unknown = wanted - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown DiT variants {sorted(unknown)}; known: {list(VARIANTS)}")
    for offset, (name, flags) in enumerate(VARIANTS.items()):
        if name in wanted:
            # The XL snapshots are stored in fp32, the 2B ones in bf16.
            dtype = torch.float32 if is_xl_module(flags["module"]) else torch.bfloat16
            write_dit_folder(root / name, tiny_dit_config(**flags), seed + offset, dtype=dtype)
    write_vae_folder(root / "vae", seed + 10)
    write_text_encoder_folder(root / "Qwen3-Embedding-0.6B", seed + 20)
    if TINY_ADAPTER_BASE in wanted:  # two adapters in the real formats, for `serve dit --adapters root/adapters`
        from .adapters.tiny import write_tiny_adapters

        write_tiny_adapters(root / ADAPTERS_FOLDER, tiny_dit_config(**VARIANTS[TINY_ADAPTER_BASE]), TINY_ADAPTER_BASE,
                            seed + 30)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write tiny random ACE-Step DiT-side checkpoints (noise output).")
    parser.add_argument("root", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(DEFAULT_TINY_VARIANTS))
    args = parser.parse_args()
    write_tiny_dit_checkpoints(args.root, args.seed, args.variants)
    print(f"wrote tiny random DiT-side checkpoints to {args.root} (outputs are noise)")


if __name__ == "__main__":
    main()
