"""Adapter folders as users train them with upstream ACE-Step 1.5 → :class:`AdapterSpec`, from the headers alone.

Upstream trains on the DiT decoder itself (PEFT ``get_peft_model(decoder)``, LyCORIS ``create_lycoris(decoder)``),
so module paths are decoder paths such as ``layers.0.self_attn.q_proj``, the same names as ours. Layouts:

- PEFT LoRA: ``adapter_config.json`` (``peft_type`` LORA, ``r``, ``lora_alpha``, ``use_rslora``, ``rank_pattern``,
  ``alpha_pattern``, ``base_model_name_or_path``) and ``adapter_model.safetensors`` holding
  ``base_model.model.<module>.lora_A.weight`` [r, in] and ``lora_B.weight`` [out, r]:
  ΔW = B·A · alpha/r (alpha/√r with ``use_rslora``). A ``decoder.`` after the prefix (the whole model wrapped) is
  accepted too.
- PEFT LoKr: the same two files with ``peft_type`` LOKR and ``<module>.lokr_w1`` [a, c] (or ``lokr_w1_a`` [a, r] and
  ``lokr_w1_b`` [r, c]) and ``lokr_w2`` [b, d] (or ``lokr_w2_a``/``lokr_w2_b``): ΔW = kron(w1, w2) · alpha/r with the
  config's ``r`` and ``alpha``.
- LyCORIS LoKr, upstream's own LoKr export: ``lokr_weights.safetensors`` (or any safetensors whose metadata holds
  ``lokr_config``) with ``lycoris_<module path, dots as underscores>.lokr_*`` and ``.alpha``. Its scale is alpha/r,
  r being the inner size of whichever factor is split (w1's first), and 1 when neither is (LyCORIS' rule).

Everything is checked against the served decoder before any tensor is read: a module it lacks or a shape it does not
have means the adapter belongs to another base model (FailedPrecondition naming both); a broken folder is a
FailedPrecondition naming the adapter. The server keeps serving either way.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from safetensors import safe_open
from torch import nn

from acestep_client.errors import FailedPrecondition

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
LYCORIS_WEIGHTS = "lokr_weights.safetensors"
PEFT_PREFIXES = ("base_model.model.decoder.", "base_model.model.")
LYCORIS_PREFIX = "lycoris_"
DIT_NAME_PREFIX = "acestep-v15-"  # a declared base model named like this is one of ours: it must be the served one
LORA_ROLES = {"lora_A.weight": "lora_A", "lora_B.weight": "lora_B"}
LOKR_ROLES = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
UNSUPPORTED_ROLES = {
    "lokr_t1": "Tucker-decomposed LoKr (a convolution adapter)",
    "lokr_t2": "Tucker-decomposed LoKr (a convolution adapter)",
    "dora_scale": "DoRA (weight_decompose)",
    "lora_magnitude_vector": "DoRA (use_dora)",
}
MAX_TENSORS = 100_000


@dataclass(frozen=True)
class Target:
    """One decoder Linear the adapter changes: its tensors (role → key in the file) and ΔW's scale."""

    module: str
    tensors: dict[str, str]
    scale: float
    nbytes_elements: int  # elements held once loaded (LoKr factors are kept whole)


@dataclass(frozen=True)
class AdapterSpec:
    """A checked adapter folder; loading it (:mod:`.weights`) reads only the tensors named here."""

    name: str
    format: str  # "lora" | "lokr"
    weights: Path
    declared_base: str | None  # what the files say it was trained on, when they say
    targets: tuple[Target, ...]
    nbytes: int  # bytes once loaded at the serving dtype
    fingerprint: tuple = field(default=(), compare=False)


def broken(name: str, message: str) -> FailedPrecondition:
    return FailedPrecondition(f"adapter {name!r}: {message}")


def other_base(name: str, model_name: str, detail: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"adapter {name!r} does not fit {model_name}, the DiT model served here: {detail}; it was trained on "
        f"another base model (serve it with that model's DiT)"
    )


def linear_shapes(decoder: nn.Module) -> dict[str, tuple[int, int]]:
    """(out, in) of every ``nn.Linear`` of the decoder, by module path."""
    return {
        name: (module.out_features, module.in_features)
        for name, module in decoder.named_modules()
        if isinstance(module, nn.Linear)
    }


def folder_fingerprint(folder: Path) -> tuple:
    """Names, sizes and mtimes of the folder's files: a retrained adapter (same name) is parsed and loaded again."""
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))
    except OSError:
        return ()


def parse_adapter(
    name: str, folder: Path, linears: dict[str, tuple[int, int]], model_name: str, itemsize: int
) -> AdapterSpec:
    """Detect the layout, read config and headers, check every tensor against ``linears``."""
    fingerprint = folder_fingerprint(folder)
    if (folder / PEFT_CONFIG).is_file():
        spec = _parse_peft(name, folder, linears, model_name, itemsize)
    else:
        weights = _lycoris_weights(folder)
        if weights is None:
            raise broken(
                name,
                f"{folder} holds neither {PEFT_CONFIG} + {PEFT_WEIGHTS} (PEFT LoRA/LoKr) nor {LYCORIS_WEIGHTS} "
                f"(LyCORIS LoKr)",
            )
        spec = _parse_lycoris(name, weights, linears, model_name, itemsize)
    return replace(spec, fingerprint=fingerprint)


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class _Header:
    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str]
    scalars: dict[str, float]  # one-element tensors ending ".alpha" (LyCORIS keeps alpha in the file)


def _read_header(name: str, path: Path) -> _Header:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            keys = list(handle.keys())
            if len(keys) > MAX_TENSORS:
                raise broken(name, f"{path.name} holds {len(keys)} tensors, at most {MAX_TENSORS} are read")
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in keys}
            scalars = {
                key: float(handle.get_tensor(key).float().reshape(-1)[0])
                for key, shape in shapes.items()
                if key.endswith(".alpha") and math.prod(shape) == 1
            }
            metadata = handle.metadata() or {}
    except FailedPrecondition:
        raise
    except Exception as exc:  # SafetensorError, OSError, a truncated file
        raise broken(name, f"{path.name} is not a readable safetensors file ({exc})") from None
    if not shapes:
        raise broken(name, f"{path.name} holds no tensors")
    return _Header(shapes, metadata, scalars)


def _read_config(name: str, path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise broken(name, f"{path.name} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise broken(name, f"{path.name} must hold a JSON object, got {type(config).__name__}")
    return config


def _lycoris_weights(folder: Path) -> Path | None:
    """``lokr_weights.safetensors``, else the one safetensors file whose metadata carries ``lokr_config``."""
    if (folder / LYCORIS_WEIGHTS).is_file():
        return folder / LYCORIS_WEIGHTS
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                if (handle.metadata() or {}).get("lokr_config"):
                    return path
        except Exception:
            continue
    return None


def declared_base(name: str, declared: Any, model_name: str) -> str | None:
    """The base model the config names (its last path part); one of ours other than the served one is refused."""
    if not isinstance(declared, str) or not declared.strip():
        return None
    base = PurePosixPath(declared.strip().replace("\\", "/").rstrip("/")).name
    if base.startswith(DIT_NAME_PREFIX) and base != model_name:
        raise FailedPrecondition(
            f"adapter {name!r} was trained on {base} (base_model_name_or_path in {PEFT_CONFIG}), not on "
            f"{model_name}, the DiT model served here; serve it with a {base} DiT"
        )
    return base or None


# ---------------------------------------------------------------------------------------------- PEFT


def _parse_peft(
    name: str, folder: Path, linears: dict[str, tuple[int, int]], model_name: str, itemsize: int
) -> AdapterSpec:
    config = _read_config(name, folder / PEFT_CONFIG)
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type not in ("LORA", "LOKR"):
        raise broken(name, f"peft_type {config.get('peft_type')!r} in {PEFT_CONFIG} is not served (LORA or LOKR)")
    unsupported = (("use_dora", "DoRA (use_dora)"), ("fan_in_fan_out", "fan_in_fan_out"), ("lora_bias", "lora_bias"))
    for flag, what in unsupported:
        if config.get(flag):
            raise broken(name, f"{what} adapters are not served (plain LoRA/LoKr only)")
    weights = folder / PEFT_WEIGHTS
    if not weights.is_file():
        pickled = (folder / "adapter_model.bin").is_file()
        hint = " (adapter_model.bin is there: save the adapter as safetensors, pickled files are not loaded)"
        raise broken(name, f"{PEFT_WEIGHTS} is missing{hint if pickled else ''}")
    base = declared_base(name, config.get("base_model_name_or_path"), model_name)
    header = _read_header(name, weights)
    roles = LORA_ROLES if peft_type == "LORA" else {role: role for role in LOKR_ROLES}
    modules: dict[str, dict[str, str]] = {}
    for key in header.shapes:
        prefix = next((p for p in PEFT_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            raise broken(name, f"tensor {key!r} does not start with 'base_model.model.' (not a PEFT adapter file)")
        module, role = _split_role(name, key, key[len(prefix):], roles)
        modules.setdefault(module, {})[role] = key
    targets = []
    for module, tensors in modules.items():
        shape = _linear(name, module, linears, model_name)
        if peft_type == "LORA":
            rank = _lora_rank(name, module, tensors, header.shapes, shape, model_name)
            alpha = _number(name, "lora_alpha", _per_module(name, config.get("alpha_pattern"), module,
                                                              config.get("lora_alpha", 8)))
            divisor = math.sqrt(rank) if config.get("use_rslora") else rank
            elements = sum(math.prod(header.shapes[key]) for key in tensors.values())
            targets.append(Target(module, tensors, alpha / divisor, elements))
        else:
            elements, _ = _kron_factors(name, module, tensors, header.shapes, shape, model_name)
            rank = _number(name, "r", _per_module(name, config.get("rank_pattern"), module, config.get("r", 8)))
            alpha = _number(name, "alpha", _per_module(name, config.get("alpha_pattern"), module,
                                                        config.get("alpha", rank)))
            if rank <= 0:
                raise broken(name, f"r in {PEFT_CONFIG} must be positive, got {rank}")
            targets.append(Target(module, tensors, alpha / rank, elements))
    fmt = "lora" if peft_type == "LORA" else "lokr"
    return _spec(name, fmt, weights, base, targets, itemsize)


def _split_role(name: str, key: str, rest: str, roles: dict[str, str]) -> tuple[str, str]:
    for suffix, role in roles.items():
        if rest.endswith("." + suffix):
            return rest[: -len(suffix) - 1], role
    last = rest.rsplit(".", 1)[-1]
    for unsupported, what in UNSUPPORTED_ROLES.items():
        if last == unsupported or rest.endswith(f".{unsupported}.weight"):
            raise broken(name, f"tensor {key!r}: {what} adapters are not served")
    raise broken(name, f"tensor {key!r} is none of {', '.join(roles)} (bias or modules_to_save tensors are not "
                       f"served)")


def _per_module(name: str, patterns: Any, module: str, default: Any) -> Any:
    """PEFT's rank_pattern / alpha_pattern: the first pattern matching the module path's tail wins."""
    if not patterns:
        return default
    if not isinstance(patterns, dict):
        raise broken(name, f"rank_pattern/alpha_pattern in {PEFT_CONFIG} must be objects, got {patterns!r}")
    for pattern, value in patterns.items():
        try:
            if re.fullmatch(rf"(?:.*\.)?(?:{pattern})", module):
                return value
        except re.error as exc:
            message = f"pattern {pattern!r} in {PEFT_CONFIG} is not a valid regular expression ({exc})"
            raise broken(name, message) from None
    return default


def _number(name: str, field_name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise broken(name, f"{field_name} in {PEFT_CONFIG} must be a finite number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------- LyCORIS


def _parse_lycoris(
    name: str, weights: Path, linears: dict[str, tuple[int, int]], model_name: str, itemsize: int
) -> AdapterSpec:
    header = _read_header(name, weights)
    by_lora_name = {LYCORIS_PREFIX + module.replace(".", "_"): module for module in linears}
    modules: dict[str, dict[str, str]] = {}
    alphas: dict[str, float] = {}
    for key in header.shapes:
        lora_name, _, role = key.partition(".")
        if role == "alpha":
            if key not in header.scalars:
                raise broken(name, f"tensor {key!r} must hold one number, has shape {header.shapes[key]}")
            alphas[lora_name] = header.scalars[key]
            continue
        if role in UNSUPPORTED_ROLES:
            raise broken(name, f"tensor {key!r}: {UNSUPPORTED_ROLES[role]} adapters are not served")
        if role not in LOKR_ROLES:
            raise broken(name, f"tensor {key!r} is not a LoKr weight ({', '.join(LOKR_ROLES)}, alpha): only the "
                               f"LoKr algorithm of LyCORIS is served")
        modules.setdefault(lora_name, {})[role] = key
    targets = []
    for lora_name, tensors in modules.items():
        module = by_lora_name.get(lora_name)
        if module is None:
            raise other_base(name, model_name, f"it changes {lora_name!r}, and the model has no Linear layer of "
                                               f"that name")
        elements, rank = _kron_factors(name, module, tensors, header.shapes, linears[module], model_name)
        alpha = alphas.get(lora_name)
        scale = 1.0 if rank is None or not alpha else alpha / rank
        targets.append(Target(module, tensors, scale, elements))
    return _spec(name, "lokr", weights, None, targets, itemsize)


# ---------------------------------------------------------------------------------------------- shapes


def _linear(name: str, module: str, linears: dict[str, tuple[int, int]], model_name: str) -> tuple[int, int]:
    if module not in linears:
        raise other_base(name, model_name, f"it changes {module!r}, and the model has no Linear layer of that name")
    return linears[module]


def _matrix(name: str, key: str, shapes: dict[str, tuple[int, ...]]) -> tuple[int, int]:
    shape = shapes[key]
    if len(shape) != 2 or min(shape) < 1:
        raise broken(name, f"tensor {key!r} has shape {shape}; a Linear layer's factor is a non-empty matrix")
    return shape[0], shape[1]


def _lora_rank(name, module, tensors, shapes, linear, model_name) -> int:
    missing = [role for role in ("lora_A", "lora_B") if role not in tensors]
    if missing:
        raise broken(name, f"{module}.{missing[0]}.weight is missing (a LoRA layer needs lora_A and lora_B)")
    rank, fan_in = _matrix(name, tensors["lora_A"], shapes)
    fan_out, rank_b = _matrix(name, tensors["lora_B"], shapes)
    if rank_b != rank:
        raise broken(name, f"{module}: lora_A {shapes[tensors['lora_A']]} and lora_B {shapes[tensors['lora_B']]} "
                           f"disagree on the rank")
    if (fan_out, fan_in) != linear:
        raise other_base(name, model_name, f"its {module} update is {fan_out}x{fan_in}, the model's layer is "
                                           f"{linear[0]}x{linear[1]}")
    return rank


def _kron_factor(name, module, which, tensors, shapes) -> tuple[int, int, int | None]:
    """(rows, cols, rank or None when whole) of factor w1 or w2."""
    whole, first, second = f"lokr_{which}", f"lokr_{which}_a", f"lokr_{which}_b"
    if whole in tensors:
        if first in tensors or second in tensors:
            raise broken(name, f"{module}: both {whole} and its {first}/{second} factors are given")
        rows, cols = _matrix(name, tensors[whole], shapes)
        return rows, cols, None
    if first in tensors and second in tensors:
        rows, rank = _matrix(name, tensors[first], shapes)
        rank_b, cols = _matrix(name, tensors[second], shapes)
        if rank != rank_b:
            raise broken(name, f"{module}: {first} {shapes[tensors[first]]} and {second} {shapes[tensors[second]]} "
                               f"disagree on the rank")
        return rows, cols, rank
    raise broken(name, f"{module}: {whole} (or {first} and {second}) is missing (a LoKr layer needs w1 and w2)")


def _kron_factors(name, module, tensors, shapes, linear, model_name) -> tuple[int, int | None]:
    """Elements once loaded (w1 and w2 whole) and the LyCORIS rank (w1's when split, else w2's, else None)."""
    rows1, cols1, rank1 = _kron_factor(name, module, "w1", tensors, shapes)
    rows2, cols2, rank2 = _kron_factor(name, module, "w2", tensors, shapes)
    if (rows1 * rows2, cols1 * cols2) != linear:
        raise other_base(name, model_name, f"its {module} update kron({rows1}x{cols1}, {rows2}x{cols2}) is "
                                           f"{rows1 * rows2}x{cols1 * cols2}, the model's layer is "
                                           f"{linear[0]}x{linear[1]}")
    return rows1 * cols1 + rows2 * cols2, rank1 if rank1 is not None else rank2


def _spec(name, fmt, weights, base, targets, itemsize) -> AdapterSpec:
    if not targets:
        raise broken(name, f"{weights.name} changes no layer")
    nbytes = itemsize * sum(target.nbytes_elements for target in targets)
    targets.sort(key=lambda target: target.module)
    return AdapterSpec(name, fmt, weights, base, tuple(targets), nbytes)
