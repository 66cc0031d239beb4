"""Orthonormal 2-D Haar wavelet transform: the single home of the Haar DWT in WaGI.

Every other part of the project (the SWAGAN generator's wavelet skip, the wavelet loss, the wavelet
fusion and the per-sub-band evaluation) calls the functions here.

Conventions (identical to pywt ``dwt2(x, 'haar')`` and pytorch_wavelets ``DWTForward(wave='haar')``,
and to the Haar kernels of rosinality's SWAGAN). For a 2x2 block ``[[a, b], [c, d]]``
(a top-left, b top-right, c bottom-left, d bottom-right)::

    LL = (a + b + c + d) / 2     2 x the block mean
    LH = (a + b - c - d) / 2     top row minus bottom row   (pywt cH, "horizontal detail")
    HL = (a - b + c - d) / 2     left column minus right    (pywt cV, "vertical detail")
    HH = (a - b - c + d) / 2     diagonal                   (pywt cD)

The transform is orthonormal, so ``sum(x**2) == sum(dwt(x)**2)`` (Parseval) and ``idwt(dwt(x)) == x``.
With mean reduction each band holds a quarter of the pixels, hence
``mse(x, y) == (mse_LL + mse_LH + mse_HL + mse_HH) / 4``.

Layout: ``dwt(x)`` maps ``(N, C, H, W)`` to ``(N, 4C, H/2, W/2)`` band-major ``[LL | LH | HL | HH]``,
each block C channels: the 12-channel layout of SWAGAN's wavelet skip for RGB images.

Written with reshapes and slicing rather than a convolution or a library: a few lines of exact tensor
arithmetic that work for any dtype and device, are differentiable to any order, and avoid the
packaging problems of pytorch_wavelets (it imports ``pkg_resources``).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch

BANDS: Tuple[str, ...] = ("LL", "LH", "HL", "HH")
HIGH_BANDS: Tuple[str, ...] = ("LH", "HL", "HH")


def _check_even(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{what} expects a 4-D tensor (N, C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(
            f"{what} needs even height and width, got {h}x{w}; resize or crop the image to an even size "
            "(WaGI does not pad silently: padding would change the border sub-bands)"
        )


def dwt(x: torch.Tensor) -> torch.Tensor:
    """One level of the orthonormal Haar DWT.

    Args:
        x: ``(N, C, H, W)`` with H and W even.
    Returns:
        ``(N, 4C, H/2, W/2)`` laid out ``[LL | LH | HL | HH]``, C channels per band.
    """
    _check_even(x, "dwt")
    a = x[..., 0::2, 0::2]
    b = x[..., 0::2, 1::2]
    c = x[..., 1::2, 0::2]
    d = x[..., 1::2, 1::2]
    s_ab, d_ab = a + b, a - b
    s_cd, d_cd = c + d, c - d
    ll = (s_ab + s_cd) * 0.5
    lh = (s_ab - s_cd) * 0.5
    hl = (d_ab + d_cd) * 0.5
    hh = (d_ab - d_cd) * 0.5
    return torch.cat([ll, lh, hl, hh], dim=1)


def idwt(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dwt`: ``(N, 4C, h, w)`` ``[LL | LH | HL | HH]`` to ``(N, C, 2h, 2w)``."""
    if y.dim() != 4 or y.shape[1] % 4:
        raise ValueError(f"idwt expects (N, 4C, h, w), got shape {tuple(y.shape)}")
    ll, lh, hl, hh = y.chunk(4, dim=1)
    s1, s2 = ll + lh, ll - lh  # (a+b), (c+d) scaled by 1/2 below
    d1, d2 = hl + hh, hl - hh  # (a-b), (c-d)
    a = (s1 + d1) * 0.5
    b = (s1 - d1) * 0.5
    c = (s2 + d2) * 0.5
    d = (s2 - d2) * 0.5
    n, ch, h, w = ll.shape
    # Interleave: out[..., 2i+r, 2j+s] with (r, s) = (0,0)->a, (0,1)->b, (1,0)->c, (1,1)->d.
    top = torch.stack([a, b], dim=-1).reshape(n, ch, h, 2 * w)
    bottom = torch.stack([c, d], dim=-1).reshape(n, ch, h, 2 * w)
    return torch.stack([top, bottom], dim=-2).reshape(n, ch, 2 * h, 2 * w)


def split_bands(y: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Split a ``[LL | LH | HL | HH]`` tensor ``(N, 4C, h, w)`` into a dict of ``(N, C, h, w)`` bands."""
    if y.shape[1] % 4:
        raise ValueError(f"split_bands expects 4C channels, got {y.shape[1]}")
    return dict(zip(BANDS, y.chunk(4, dim=1)))


def merge_bands(bands: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`split_bands`."""
    missing = [b for b in BANDS if b not in bands]
    if missing:
        raise KeyError(f"merge_bands is missing bands {missing}")
    return torch.cat([bands[b] for b in BANDS], dim=1)


def high_bands(y: torch.Tensor) -> torch.Tensor:
    """The LH, HL, HH channels ``(N, 3C, h, w)`` of a ``[LL | LH | HL | HH]`` tensor."""
    c = y.shape[1] // 4
    return y[:, c:]


def dwt_multilevel(x: torch.Tensor, levels: int) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """``levels``-level Haar decomposition by recursing on LL.

    Returns:
        ``(ll, highs)``: ``ll`` is the coarsest LL ``(N, C, H/2^J, W/2^J)``; ``highs[j]`` is the
        ``(N, 3C, H/2^(j+1), W/2^(j+1))`` ``[LH | HL | HH]`` tensor of level ``j+1``, finest first
        (the order of pytorch_wavelets).
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    h, w = x.shape[-2:]
    if h % (2 ** levels) or w % (2 ** levels):
        raise ValueError(f"a {levels}-level Haar DWT needs H and W divisible by {2 ** levels}, got {h}x{w}")
    highs: List[torch.Tensor] = []
    ll = x
    for _ in range(levels):
        y = dwt(ll)
        c = y.shape[1] // 4
        ll, hi = y[:, :c], y[:, c:]
        highs.append(hi)
    return ll, highs


def idwt_multilevel(ll: torch.Tensor, highs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`dwt_multilevel` (``highs`` finest first)."""
    x = ll
    for hi in reversed(list(highs)):
        x = idwt(torch.cat([x, hi], dim=1))
    return x


def subband_mse(x: torch.Tensor, y: torch.Tensor, levels: int = 1,
                reduce_batch: bool = True) -> Dict[str, torch.Tensor]:
    """Mean squared error per Haar sub-band and level between ``x`` and ``y`` (same shape).

    Keys are ``"LL"`` (coarsest LL) and ``"LH1"``, ``"HL1"``, ``"HH1"``, ... (level 1 finest). With
    one level ``MSE_pixel == (LL + LH1 + HL1 + HH1) / 4``. ``reduce_batch=False`` gives one value per
    image, shape ``(N,)``.
    """
    if x.shape != y.shape:
        raise ValueError(f"subband_mse needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    ll_e, highs_e = dwt_multilevel(x - y, levels)  # the DWT is linear: DWT(x) - DWT(y) == DWT(x - y)
    dims = (1, 2, 3)

    def _mse(t: torch.Tensor) -> torch.Tensor:
        v = t.pow(2).mean(dim=dims)
        return v.mean() if reduce_batch else v

    out: Dict[str, torch.Tensor] = {"LL": _mse(ll_e)}
    for j, hi in enumerate(highs_e, start=1):
        for name, band in zip(HIGH_BANDS, hi.chunk(3, dim=1)):
            out[f"{name}{j}"] = _mse(band)
    return out
