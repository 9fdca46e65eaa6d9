"""Oobleck VAE (diffusers ``AutoencoderOobleck``) with the release's conventions: raw latents, 1920-sample hop."""

from __future__ import annotations

import types
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderOobleck


def load_vae(folder: Path, device: torch.device | str, dtype: torch.dtype) -> AutoencoderOobleck:
    vae = AutoencoderOobleck.from_pretrained(str(folder), torch_dtype=torch.float32)
    return vae.to(device=device, dtype=dtype).eval()


def vae_hop(vae: AutoencoderOobleck) -> int:
    """Audio samples per latent frame (1920 for the release: 48 kHz / 25 Hz)."""
    hop = 1
    for ratio in vae.config.downsampling_ratios:
        hop *= int(ratio)
    return hop


def latent_channels(vae: AutoencoderOobleck) -> int:
    return int(vae.config.decoder_input_channels)


def fold_weight_norm(vae: AutoencoderOobleck) -> None:
    """Replace weight-norm (g, v) pairs by plain weights: same function, fewer kernels per conv at inference.

    Only for inference copies; the module's state dict then no longer has ``weight_g``/``weight_v``.
    """
    from torch.nn.utils import parametrize

    for module in vae.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        elif hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            torch.nn.utils.remove_weight_norm(module)


def snake(x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
    """Snake activation x + sin²(αx)/β with α, 1/β precomputed (same op order as diffusers' Snake1d)."""
    return x + inv_beta * torch.sin(alpha * x).pow(2)


def bias_snake(x: torch.Tensor, bias: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
    """Conv bias add followed by Snake, fused when compiled."""
    return snake(x + bias, alpha, inv_beta)


def bias_residual(residual: torch.Tensor, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return residual + (x + bias)


_compiled: dict[str, object] = {}


def _compiled_fn(name: str):
    if name not in _compiled:
        _compiled[name] = torch.compile(
            {"snake": snake, "bias_snake": bias_snake, "bias_residual": bias_residual}[name], dynamic=True
        )
    return _compiled[name]


def snake_into(out: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
    """:func:`snake` written into ``out`` (same shape as ``x``, may not alias it) with no other temporaries.

    The same ops run in the same order on the same values (``inv_beta * s`` and ``x + t`` become
    ``s *= inv_beta`` and ``t += x``, which IEEE arithmetic makes identical), so the result is bit-identical.
    Inference only: ``out=`` and in-place ops do not record autograd history.
    """
    torch.mul(alpha, x, out=out)
    return out.sin_().pow_(2).mul_(inv_beta).add_(x)


def _snake_forward(module, x: torch.Tensor) -> torch.Tensor:
    if module._use_compiled_snake:
        return _compiled_fn("snake")(x, module._alpha_exp, module._inv_beta)
    if torch.is_grad_enabled():
        return snake(x, module._alpha_exp, module._inv_beta)
    return snake_into(torch.empty_like(x), x, module._alpha_exp, module._inv_beta)


def _lean_residual_forward(unit, x: torch.Tensor) -> torch.Tensor:
    """diffusers' OobleckResidualUnit with 3 full-size allocations instead of 13 (bit-identical).

    Why: on CPU every activation above glibc's mmap threshold (at most 32 MiB) is a fresh ``mmap`` that
    the kernel zero-fills page by page on first touch and unmaps again on free. The eager unit allocated
    13 such tensors (5 per Snake, 2 convs, the residual add); for a batch of 4 30 s songs with the tiny
    VAE that was about 4 M page faults and more kernel (sys) time than compute. Here both Snakes share one
    scratch buffer and the residual add goes into the conv output; see also ``vae_decode.decode_latents``.
    """
    if torch.is_grad_enabled():
        return type(unit).forward(unit, x)
    scratch = torch.empty_like(x)
    y = unit.conv1(snake_into(scratch, x, unit.snake1._alpha_exp, unit.snake1._inv_beta))
    if y.shape == scratch.shape:  # always for Oobleck (the k7 conv keeps the length)
        y = snake_into(scratch, y, unit.snake2._alpha_exp, unit.snake2._inv_beta)
    else:
        y = unit.snake2(y)
    y = unit.conv2(y)
    padding = (x.shape[-1] - y.shape[-1]) // 2
    if padding > 0:
        x = x[..., padding:-padding]
    return y.add_(x)  # == x + y bit for bit; y is our own conv output


def _fused_residual_forward(unit, x: torch.Tensor) -> torch.Tensor:
    """Residual unit with conv biases folded into the neighbouring element-wise kernels.

    Same math as diffusers' OobleckResidualUnit (its k7 conv keeps the length, so no crop is needed);
    removes the separate bias-add and residual-add passes over the full-rate activations.
    """
    conv1, conv2 = unit.conv1, unit.conv2
    y = _compiled_fn("snake")(x, unit.snake1._alpha_exp, unit.snake1._inv_beta)
    y = F.conv1d(y, conv1.weight, None, conv1.stride, conv1.padding, conv1.dilation)
    y = _compiled_fn("bias_snake")(y, conv1.bias[:, None], unit.snake2._alpha_exp, unit.snake2._inv_beta)
    y = F.conv1d(y, conv2.weight, None)
    return _compiled_fn("bias_residual")(x, y, conv2.bias[:, None])


VAE_MODES = ("eager", "compile-snake", "fused")


def optimize_vae_for_inference(
    vae: AutoencoderOobleck, compile_snake: bool = False, mode: str | None = None
) -> AutoencoderOobleck:
    """Fold weight norm and precompute Snake parameters; optionally fuse Snake with torch.compile.

    The eager path computes exactly what diffusers computes (same dtype, same op order, bit-identical),
    with Snake parameters computed once instead of on every call and, at inference, Snake and the
    residual units writing into reused buffers instead of allocating a temporary per element-wise op
    (see :func:`_lean_residual_forward`). ``compile_snake`` (mode "fused") fuses the element-wise passes into
    single kernels and folds conv biases and residual adds into them; mode "compile-snake" fuses only
    Snake. Compiled modes differ from eager by rounding only (fused kernels keep fp32 intermediates).
    """
    mode = mode or ("fused" if compile_snake else "eager")
    if mode not in VAE_MODES:
        raise ValueError(f"vae mode must be one of {VAE_MODES}, got {mode!r}")
    compile_snake = mode != "eager"
    from diffusers.models.autoencoders.autoencoder_oobleck import OobleckResidualUnit, Snake1d

    fold_weight_norm(vae)
    for module in vae.modules():
        if isinstance(module, Snake1d):
            with torch.no_grad():
                alpha = torch.exp(module.alpha) if module.logscale else module.alpha
                beta = torch.exp(module.beta) if module.logscale else module.beta
                module._alpha_exp = alpha.detach().clone()
                module._inv_beta = (beta + 1e-9).reciprocal().detach().clone()
            module._use_compiled_snake = compile_snake
            module.forward = types.MethodType(_snake_forward, module)
    if mode == "fused":
        for module in vae.modules():
            if isinstance(module, OobleckResidualUnit) and module.conv1.bias is not None:
                module.forward = types.MethodType(_fused_residual_forward, module)
    elif mode == "eager":
        for module in vae.modules():
            if isinstance(module, OobleckResidualUnit):
                module.forward = types.MethodType(_lean_residual_forward, module)
    return vae


@torch.inference_mode()
def encode_audio_to_latents(vae: AutoencoderOobleck, wav: torch.Tensor) -> torch.Tensor:
    """[B, 2, n] audio → [B, T, C] latents, T = n // hop (input trimmed to a whole number of frames).

    Uses the posterior mean instead of the reference's unseeded ``sample()`` so results are reproducible.
    """
    hop = vae_hop(vae)
    usable = (wav.shape[-1] // hop) * hop
    param = next(vae.parameters())
    wav = wav[..., :usable].to(device=param.device, dtype=param.dtype)
    latents = vae.encode(wav).latent_dist.mean
    return latents.transpose(1, 2)
