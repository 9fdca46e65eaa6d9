"""Write random adapters in the real on-disk formats (tests, the offline demo, benchmarks).

``make-tiny-checkpoints`` puts two next to the tiny checkpoints, for the turbo model:
``adapters/tiny-lora`` (PEFT LoRA, r=4, alpha 8 on q/k/v/o) and ``adapters/tiny-lokr`` (LyCORIS LoKr as upstream
exports it: every Linear of the decoder wrapped, the untrained MLP ones saved with w2 = 0). Their B / w2 factors
are random and non-zero, so they change the audio (which is noise anyway).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..model.acestep_model import build_model_on_meta
from ..model.config import AceStepConfig
from .formats import LYCORIS_PREFIX, LYCORIS_WEIGHTS, PEFT_CONFIG, PEFT_WEIGHTS, linear_shapes

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # upstream's default target_modules
TINY_LORA = "tiny-lora"
TINY_LOKR = "tiny-lokr"


def decoder_linears(config: AceStepConfig) -> dict[str, tuple[int, int]]:
    """(out, in) of every Linear of the decoder a checkpoint with ``config`` builds (no weights allocated)."""
    return linear_shapes(build_model_on_meta(config).decoder)


def targeted(linears: dict[str, tuple[int, int]], suffixes: Iterable[str]) -> list[str]:
    """Modules whose last name is one of ``suffixes``: PEFT's target_modules matching."""
    wanted = set(suffixes)
    return [name for name in linears if name.rsplit(".", 1)[-1] in wanted]


def lora_tensors(
    linears: dict[str, tuple[int, int]], modules: Iterable[str], rank: int, generator: torch.Generator,
    up_std: float = 0.1,
) -> dict[str, torch.Tensor]:
    """PEFT keys → A [r, in] (Kaiming-like) and B [out, r] (random, not PEFT's zero init)."""
    tensors = {}
    for module in modules:
        fan_out, fan_in = linears[module]
        key = f"base_model.model.{module}"
        tensors[f"{key}.lora_A.weight"] = torch.randn(rank, fan_in, generator=generator) / math.sqrt(fan_in)
        tensors[f"{key}.lora_B.weight"] = up_std * torch.randn(fan_out, rank, generator=generator)
    return tensors


def write_peft_lora(
    folder: Path, tensors: dict[str, torch.Tensor], rank: int, alpha: float, base_model: str | None,
    targets: Iterable[str] = ATTENTION_TARGETS, dtype: torch.dtype = torch.float32, **config: object,
) -> Path:
    """``adapter_config.json`` + ``adapter_model.safetensors`` as PEFT's ``save_pretrained`` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": base_model, "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "layers_pattern": None,
        "layers_to_transform": None, "lora_alpha": alpha, "lora_dropout": 0.0, "modules_to_save": None,
        "peft_type": "LORA", "r": rank, "rank_pattern": {}, "revision": None, "target_modules": list(targets),
        "task_type": "FEATURE_EXTRACTION", "use_dora": False, "use_rslora": False, **config,
    }
    (folder / PEFT_CONFIG).write_text(json.dumps(settings, indent=2))
    save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, str(folder / PEFT_WEIGHTS),
              metadata={"format": "pt"})
    return folder


def split_dim(size: int) -> tuple[int, int]:
    """size = m·n with m <= n and m as close to √size as divides it (LoKr's factorisation with factor -1)."""
    m = math.isqrt(size)
    while size % m:
        m -= 1
    return m, size // m


def lokr_tensors(
    linears: dict[str, tuple[int, int]], modules: Iterable[str], rank: int | None, alpha: float,
    generator: torch.Generator, zero: Iterable[str] = (), w2_std: float = 0.1,
) -> dict[str, torch.Tensor]:
    """LyCORIS keys: w1 whole [a, c]; w2 split [b, r]·[r, d] when ``rank`` is given, else whole [b, d].

    ``zero`` modules are saved as LyCORIS saves wrapped-but-untrained layers (w2, or w2_b, all zero).
    """
    tensors = {}
    zero = set(zero)
    for module in [*modules, *sorted(zero)]:
        fan_out, fan_in = linears[module]
        (a, b), (c, d) = split_dim(fan_out), split_dim(fan_in)
        key = LYCORIS_PREFIX + module.replace(".", "_")
        tensors[f"{key}.lokr_w1"] = torch.randn(a, c, generator=generator) / math.sqrt(c)
        std = 0.0 if module in zero else w2_std
        if rank is None:
            tensors[f"{key}.lokr_w2"] = std * torch.randn(b, d, generator=generator)
        else:
            tensors[f"{key}.lokr_w2_a"] = torch.randn(b, rank, generator=generator) / math.sqrt(rank)
            tensors[f"{key}.lokr_w2_b"] = std * torch.randn(rank, d, generator=generator)
        tensors[f"{key}.alpha"] = torch.tensor(float(alpha))
    return tensors


def write_lycoris_lokr(
    folder: Path, tensors: dict[str, torch.Tensor], rank: int, alpha: float,
    targets: Iterable[str] = ATTENTION_TARGETS, dtype: torch.dtype = torch.float32,
) -> Path:
    """``lokr_weights.safetensors`` with the metadata upstream's LoKr export writes (algo, format, lokr_config)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "linear_dim": rank, "linear_alpha": alpha, "factor": -1, "decompose_both": False, "use_tucker": False,
        "use_scalar": False, "weight_decompose": False, "target_modules": list(targets), "full_matrix": False,
        "bypass_mode": False, "rs_lora": False, "unbalanced_factorization": False,
    }
    metadata = {"algo": "lokr", "format": "lycoris", "lokr_config": json.dumps(config)}
    save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, str(folder / LYCORIS_WEIGHTS),
              metadata=metadata)
    return folder


def write_tiny_adapters(folder: Path, config: AceStepConfig, base_model: str, seed: int = 0) -> list[Path]:
    """``tiny-lora`` and ``tiny-lokr`` under ``folder``, shaped for a decoder built from ``config``."""
    linears = decoder_linears(config)
    attention = targeted(linears, ATTENTION_TARGETS)
    generator = torch.Generator().manual_seed(seed)
    lora = write_peft_lora(folder / TINY_LORA, lora_tensors(linears, attention, 4, generator), rank=4, alpha=8,
                           base_model=base_model)
    untrained = [name for name in linears if name not in attention]
    lokr = write_lycoris_lokr(
        folder / TINY_LOKR, lokr_tensors(linears, attention, 2, 4.0, generator, zero=untrained), rank=2, alpha=4.0
    )
    return [lora, lokr]
