"""A batch of items through the VAE decode gives each item exactly what it gets alone (CPU, fp32)."""

from __future__ import annotations

from pathlib import Path

import torch

from dit_service.model.vae import load_vae, optimize_vae_for_inference, vae_hop
from dit_service.vae_decode import decode_latents, iter_decoded_windows

CHUNK, OVERLAP = 64, 8  # small windows: several windows per item, and a fast test


def windowed(vae, latents: torch.Tensor) -> torch.Tensor:
    return torch.cat(
        [audio for _, audio in iter_decoded_windows(vae, latents, vae_hop(vae), chunk=CHUNK, overlap=OVERLAP)], -1
    )


def test_batch_decode_equals_each_item_alone(tiny_root: Path):
    plain = load_vae(tiny_root / "vae", "cpu", torch.float32)  # diffusers as released: the reference
    fast = optimize_vae_for_inference(load_vae(tiny_root / "vae", "cpu", torch.float32))
    latents = torch.randn(3, 150, 4, generator=torch.Generator().manual_seed(3))
    batch = windowed(fast, latents)
    assert batch.shape == (3, 2, 150 * vae_hop(fast))
    for item in range(3):
        alone = windowed(plain, latents[item : item + 1])
        assert float((batch[item : item + 1] - alone).abs().max()) <= 1e-6
        assert float((windowed(fast, latents[item : item + 1]) - alone).abs().max()) <= 1e-6
    with torch.inference_mode():
        direct = decode_latents(fast, latents[:, :40])
        for item in range(3):
            assert (
                float((direct[item : item + 1] - decode_latents(plain, latents[item : item + 1, :40])).abs().max())
                <= 1e-6
            )


def test_lean_eager_vae_is_bit_identical_for_a_batch_and_with_grad(tiny_root: Path):
    """The allocation-lean eager forward (model/vae.py) computes diffusers' numbers bit for bit at B > 1."""
    plain, fast = (load_vae(tiny_root / "vae", "cpu", torch.float32) for _ in range(2))
    with torch.no_grad():
        for module in (plain, fast):  # non-trivial Snake parameters (the tiny checkpoint's are all zero)
            for name, param in module.named_parameters():
                if "alpha" in name or "beta" in name:
                    param.copy_(0.3 * torch.randn(param.shape, generator=torch.Generator().manual_seed(len(name))))
    optimize_vae_for_inference(fast)
    z = torch.randn(2, 4, 30, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        reference = plain.decode(z).sample
        assert torch.equal(fast.decode(z).sample, reference)
    with torch.enable_grad():  # the in-place path steps aside when autograd is recording
        assert torch.equal(fast.decode(z).sample.detach(), reference)
