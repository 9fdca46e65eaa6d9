"""One layer's adapter update ΔW, applied to activations without ever forming ΔW (``dense`` is for checks).

For x [..., in], ``delta(x, s)`` is s · ΔW x, computed from the factors: a LoRA costs r·(in + out) per row, a
LoKr (ΔW = kron(w1, w2), w1 [a, c], w2 [b, d]) reshapes x to [..., c, d] and costs about in·(b + a) per row,
both small beside the layer's own in·out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class LoRAUpdate:
    """ΔW = scale · B A, with A [r, in] and B [out, r]."""

    def __init__(self, down: torch.Tensor, up: torch.Tensor, scale: float):
        self.down = down
        self.up = up
        self.scale = scale

    @property
    def nbytes(self) -> int:
        return self.down.nbytes + self.up.nbytes

    def delta(self, x: torch.Tensor, strength: float) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # plain GEMMs whatever x's layout (a row slice of a merged batch)
        out = F.linear(F.linear(flat, self.down), self.up) * (self.scale * strength)
        return out.view(*x.shape[:-1], out.shape[-1])

    def dense(self) -> torch.Tensor:
        return (self.up.double() @ self.down.double() * self.scale).to(self.up.dtype)


class LoKrUpdate:
    """ΔW = scale · kron(w1, w2), with w1 [a, c] and w2 [b, d]: ΔW[i·b + k, j·d + l] = w1[i, j] · w2[k, l].

    So (ΔW x)[i·b + k] = Σ_j w1[i, j] Σ_l w2[k, l] X[j, l] with X = x viewed as [c, d]: y = w1 · X · w2ᵀ.
    """

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor, scale: float):
        self.w1 = w1
        self.w2 = w2
        self.scale = scale

    @property
    def nbytes(self) -> int:
        return self.w1.nbytes + self.w2.nbytes

    def delta(self, x: torch.Tensor, strength: float) -> torch.Tensor:
        (a, c), (b, d) = self.w1.shape, self.w2.shape
        lead = x.shape[:-1]
        # Two plain GEMMs over every token: X · w2ᵀ ([n·c, d] · [d, b]), then w1 · that ([a, c] · [c, n·b]).
        # A batched matmul of n tiny matrices would take a slow per-matrix path on CPU.
        right = F.linear(x.reshape(-1, d), self.w2).view(-1, c, b)  # [n, c, b]
        n = right.shape[0]
        out = self.w1 @ right.transpose(0, 1).reshape(c, n * b)
        return out.reshape(a, n, b).transpose(0, 1).reshape(*lead, a * b) * (self.scale * strength)

    def dense(self) -> torch.Tensor:
        return (torch.kron(self.w1.double(), self.w2.double()) * self.scale).to(self.w1.dtype)


Update = LoRAUpdate | LoKrUpdate
