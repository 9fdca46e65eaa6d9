"""An :class:`AdapterSpec` → a :class:`LoadedAdapter`: its updates on the model's device, in the model's dtype."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from safetensors import safe_open

from acestep_client.errors import FailedPrecondition

from .formats import AdapterSpec, Target, broken
from .updates import LoKrUpdate, LoRAUpdate, Update


@dataclass(eq=False)
class LoadedAdapter:
    """Per decoder module path, the update its Linear adds; layers whose ΔW is zero are left out."""

    name: str
    format: str
    updates: dict[str, Update]
    fingerprint: tuple = ()
    zero_layers: int = 0  # LyCORIS saves every Linear it wrapped, untrained ones with w2 = 0

    @property
    def nbytes(self) -> int:
        return sum(update.nbytes for update in self.updates.values())


def load_adapter(spec: AdapterSpec, device: torch.device | str, dtype: torch.dtype) -> LoadedAdapter:
    updates: dict[str, Update] = {}
    zero = 0
    try:
        with safe_open(str(spec.weights), framework="pt", device="cpu") as handle:
            for target in spec.targets:
                tensors = {role: handle.get_tensor(key).float() for role, key in target.tensors.items()}
                for role, tensor in tensors.items():
                    if not torch.isfinite(tensor).all():
                        raise broken(spec.name, f"{target.tensors[role]} holds NaN or infinite values")
                update = _update(spec.format, target, tensors, device, dtype)
                if update is None:
                    zero += 1
                else:
                    updates[target.module] = update
    except FailedPrecondition:
        raise
    except Exception as exc:  # a file cut short or changed since it was checked
        raise broken(spec.name, f"reading {spec.weights.name} failed ({type(exc).__name__}: {exc})") from None
    return LoadedAdapter(spec.name, spec.format, updates, spec.fingerprint, zero)


def _whole(tensors: dict[str, torch.Tensor], which: str) -> torch.Tensor:
    """A LoKr factor, multiplied out in fp32 when it was saved split (it is small: a·c or b·d)."""
    if f"lokr_{which}" in tensors:
        return tensors[f"lokr_{which}"]
    return tensors[f"lokr_{which}_a"] @ tensors[f"lokr_{which}_b"]


def _update(fmt: str, target: Target, tensors, device, dtype) -> Update | None:
    if target.scale == 0.0:
        return None
    if fmt == "lora":
        down, up = tensors["lora_A"], tensors["lora_B"]
        if not down.any() or not up.any():
            return None
        return LoRAUpdate(down.to(device=device, dtype=dtype), up.to(device=device, dtype=dtype), target.scale)
    w1, w2 = _whole(tensors, "w1"), _whole(tensors, "w2")
    if not w1.any() or not w2.any():
        return None
    return LoKrUpdate(w1.to(device=device, dtype=dtype), w2.to(device=device, dtype=dtype), target.scale)
