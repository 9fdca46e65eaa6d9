"""Checkpoint root (released layout) → ready models, with errors that name what is missing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from acestep_client.errors import NotFound

from .model.acestep_model import AceStepModel, build_model_on_meta
from .model.config import AceStepConfig
from .model.text_encoder import TextEncoder
from .model.vae import load_vae, optimize_vae_for_inference

DIT_PREFIX = "acestep-v15-"
VAE_FOLDER = "vae"
TEXT_ENCODER_FOLDER = "Qwen3-Embedding-0.6B"
DIT_FILES = ("config.json", "model.safetensors", "silence_latent.pt")
VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
TEXT_ENCODER_FILES = ("config.json", "model.safetensors", "tokenizer.json")


@dataclass
class LoadedCheckpoint:
    config: AceStepConfig
    model: AceStepModel
    silence_latent: torch.Tensor  # [frames, C] in model dtype
    vae: object
    text_encoder: TextEncoder


def is_dit_folder(folder: Path) -> bool:
    """A DiT folder is known by its config.json (``model_type`` "acestep"), not by its name: fine-tunes and new
    upstream variants load like the released ones."""
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type") == "acestep"
    except (OSError, ValueError, AttributeError):
        return False


def available_variants(root: Path) -> list[str]:
    """DiT folders under ``root``: the released ``acestep-v15-*`` names and any other folder with a DiT config."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p.name.startswith(DIT_PREFIX) or is_dit_folder(p)))


def require_files(folder: Path, names: tuple[str, ...]) -> None:
    if not folder.is_dir():
        raise NotFound(f"checkpoint folder {folder} does not exist")
    for name in names:
        if not (folder / name).is_file():
            raise NotFound(f"checkpoint file {folder / name} is missing")


def load_state_dict_checked(model: torch.nn.Module, path: Path, device: str, dtype: torch.dtype) -> None:
    """Strict load that reports missing / unexpected / mis-shaped keys by name (first few of each)."""
    expected = model.state_dict()
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        present = set(handle.keys())
        missing = sorted(set(expected) - present)
        unexpected = sorted(present - set(expected))
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing state-dict keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
            if unexpected:
                parts.append(f"unexpected state-dict keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
            raise NotFound(f"{path}: " + "; ".join(parts))
        tensors = {}
        for key in expected:
            tensor = handle.get_tensor(key)
            if tuple(tensor.shape) != tuple(expected[key].shape):
                raise NotFound(
                    f"{path}: state-dict key {key} has shape {tuple(tensor.shape)}, "
                    f"config.json implies {tuple(expected[key].shape)}"
                )
            tensors[key] = tensor.to(device=device, dtype=dtype)
    model.load_state_dict(tensors, strict=True, assign=True)


def load_dit_model(folder: Path, device: str, dtype: torch.dtype) -> tuple[AceStepConfig, AceStepModel, torch.Tensor]:
    require_files(folder, DIT_FILES)
    config = AceStepConfig.from_json(folder / "config.json")
    model = build_model_on_meta(config)
    # Buffers are rebuilt in fp32 and then cast, which rounds RoPE frequencies like the reference's .to(bf16).
    model = model.to_empty(device=device)
    model.init_non_persistent_buffers()
    model = model.to(dtype)
    load_state_dict_checked(model, folder / "model.safetensors", device, dtype)
    model.eval()
    silence = torch.load(folder / "silence_latent.pt", map_location="cpu", weights_only=True)
    if silence.dim() != 3 or silence.shape[1] != config.audio_acoustic_hidden_dim:
        raise NotFound(f"{folder / 'silence_latent.pt'} has shape {tuple(silence.shape)}, expected [1, C, frames]")
    silence_latent = silence[0].transpose(0, 1).contiguous().to(device=device, dtype=dtype)
    return config, model, silence_latent


def load_checkpoint(
    root: str | Path, variant: str, device: str, dtype: torch.dtype, compile_kernels: bool = False
) -> LoadedCheckpoint:
    root = Path(root)
    if not root.is_dir():
        raise NotFound(f"checkpoint root {root} does not exist")
    dit_folder = root / variant
    if not dit_folder.is_dir():
        raise NotFound(f"DiT variant folder {dit_folder} does not exist; available: {available_variants(root)}")
    config, model, silence_latent = load_dit_model(dit_folder, device, dtype)
    if compile_kernels:
        # Automatic dynamic shapes: request lengths vary, so avoid one recompile per length.
        for layer in model.decoder.layers:
            layer.compile()
    require_files(root / VAE_FOLDER, VAE_FILES)
    vae = optimize_vae_for_inference(load_vae(root / VAE_FOLDER, device, dtype), compile_snake=compile_kernels)
    require_files(root / TEXT_ENCODER_FOLDER, TEXT_ENCODER_FILES)
    text_encoder = TextEncoder(root / TEXT_ENCODER_FOLDER, device, dtype)
    if text_encoder.hidden_size != config.text_hidden_dim:
        raise NotFound(
            f"{root / TEXT_ENCODER_FOLDER}: hidden_size {text_encoder.hidden_size} != text_hidden_dim "
            f"{config.text_hidden_dim} in {dit_folder / 'config.json'}"
        )
    return LoadedCheckpoint(config, model, silence_latent, vae, text_encoder)
