"""Single-level 1-D discrete wavelet transform (zero padding) for the DCW sampler correction.

Why our own: upstream's DCW runs ``pytorch_wavelets`` (which needs PyWavelets) in fp32; the transform
is two strided convolutions, so a dependency is not worth it. Conventions follow PyWavelets' "zero"
mode exactly: ``n_out = (n + L - 1) // 2`` coefficients per band, and the inverse of those
coefficients reproduces the signal (plus at most one extra sample for odd ``n``; callers trim).

Filter banks: the published orthogonal wavelets that upstream's UI offers, given by their
decomposition low-pass filter (PyWavelets' ``dec_lo``, Daubechies 1992 tables). The other three
filters follow from it: ``rec_lo = dec_lo[::-1]``, ``rec_hi[k] = (-1)^k dec_lo[k]``,
``dec_hi = rec_hi[::-1]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_SQRT_HALF = 0.7071067811865476

DEC_LO: dict[str, tuple[float, ...]] = {
    "haar": (_SQRT_HALF, _SQRT_HALF),
    "db2": (-0.12940952255126037, 0.2241438680420134, 0.8365163037378079, 0.48296291314453416),
    "db4": (
        -0.010597401785069032, 0.0328830116668852, 0.030841381835560764, -0.18703481171909309,
        -0.027983769416859854, 0.6308807679298589, 0.7148465705529157, 0.2303778133088965,
    ),
    "sym4": (
        -0.07576571478927333, -0.02963552764599851, 0.49761866763201545, 0.8037387518059161,
        0.29785779560527736, -0.09921954357684722, -0.012603967262037833, 0.0322231006040427,
    ),
    "sym8": (
        -0.0033824159510061256, -0.0005421323317911481, 0.03169508781149298, 0.007607487324917605,
        -0.1432942383508097, -0.061273359067658524, 0.4813596512583722, 0.7771857517005235,
        0.3644418948353314, -0.05194583810770904, -0.027219029917056003, 0.049137179673607506,
        0.003808752013890615, -0.01495225833704823, -0.0003029205147213668, 0.0018899503327594609,
    ),
    "coif2": (
        -0.000720549445520347, -0.0018232088709110323, 0.005611434819368834, 0.02368017194684777,
        -0.05943441864643109, -0.07648859907828076, 0.4170051844232391, 0.8127236354494135,
        0.3861100668227629, -0.0673725547237256, -0.04146493678687178, 0.01638733646320364,
    ),
}
WAVELETS = tuple(DEC_LO)

_FILTERS: dict[tuple[str, str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def filter_bank(wavelet: str) -> dict[str, list[float]]:
    """dec_lo, dec_hi, rec_lo, rec_hi of an orthogonal wavelet (float64 lists)."""
    dec_lo = list(DEC_LO[wavelet])
    rec_lo = dec_lo[::-1]
    rec_hi = [(-1) ** k * value for k, value in enumerate(dec_lo)]
    return {"dec_lo": dec_lo, "dec_hi": rec_hi[::-1], "rec_lo": rec_lo, "rec_hi": rec_hi}


def _filters(wavelet: str, kind: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) conv weights [1, 1, L] in fp32, cached per device: analysis ones reversed for correlation."""
    key = (wavelet, kind, device)
    if key not in _FILTERS:
        bank = filter_bank(wavelet)
        if kind == "analysis":
            low, high = bank["dec_lo"][::-1], bank["dec_hi"][::-1]
        else:
            low, high = bank["rec_lo"], bank["rec_hi"]
        _FILTERS[key] = tuple(
            torch.tensor(values, dtype=torch.float32, device=device).reshape(1, 1, -1) for values in (low, high)
        )
    return _FILTERS[key]


def dwt1d(x: torch.Tensor, wavelet: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, C, N] fp32 → (low, high), each [B, C, (N + L − 1) // 2], zero-padded full convolution.

    One grouped convolution with interleaved (low, high) filters per channel: the same arithmetic,
    in the same order, as upstream's transform, so the bands agree bit for bit.
    """
    channels, n = x.shape[1], x.shape[2]
    low_w, high_w = _filters(wavelet, "analysis", x.device)
    length = low_w.shape[-1]
    n_out = (n + length - 1) // 2
    pad = 2 * (n_out - 1) - n + length
    if pad % 2:
        x = F.pad(x, (0, 1))
    weight = torch.cat([low_w, high_w] * channels, dim=0)
    bands = F.conv1d(x, weight, stride=2, padding=pad // 2, groups=channels)
    return bands[:, 0::2].contiguous(), bands[:, 1::2].contiguous()


def idwt1d(low: torch.Tensor, high: torch.Tensor, wavelet: str) -> torch.Tensor:
    """Inverse of :func:`dwt1d`: [B, C, n] bands → [B, C, 2n − L + 2] (trim to the original length)."""
    channels = low.shape[1]
    low_w, high_w = _filters(wavelet, "synthesis", low.device)
    length = low_w.shape[-1]
    lo = F.conv_transpose1d(low, torch.cat([low_w] * channels), stride=2, padding=length - 2, groups=channels)
    hi = F.conv_transpose1d(high, torch.cat([high_w] * channels), stride=2, padding=length - 2, groups=channels)
    return lo + hi
