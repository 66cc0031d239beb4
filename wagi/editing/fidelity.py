"""Two measurements of what the wavelet fusion does to edits and to the image grid.

* :func:`change_kept`: how much of a latent edit's change survives the fusion. With the fusion off the
  edit changes the image by ``A = G(w + s·d) − G(w)``; with it on by ``B = fused(w + s·d) − fused(w)``.
  The share of A that B keeps is the projection coefficient ``<B, A> / <A, A>`` (1: all of it, 0: none;
  what B adds beyond A does not count), on the pixels and on the Haar high bands (LH, HL, HH) of level 1.
  A fusion that pastes the input's old details over the edited region keeps the pixel change but
  cancels part of its high-band change.
* :func:`lattice_amplitude`: a periodic block pattern in an error map. The absolute error, averaged over
  the colour channels, is folded modulo ``p`` pixels in both axes (the mean over every position with the
  same ``(y mod p, x mod p)``); the amplitude is the folded map's peak-to-peak range over its mean.
  Natural errors fold to a flat map (amplitude → 0 with enough pixels); the blocks that Haar
  corrections at a coarse level stamp on the image fold to a peak at their period.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import Tensor

from .. import wavelets as wv

LATTICE_PERIODS = (4, 8, 16)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a.double() * b.double()).flatten(1).sum(1)


def change_kept(unfused_base: Tensor, unfused_edit: Tensor, fused_base: Tensor, fused_edit: Tensor
                ) -> Dict[str, Tensor]:
    """Per image ``(N,)``: ``pixel`` and ``high`` shares of the unfused edit's change kept by the fused one.

    All four images are ``(N, 3, S, S)`` with S even. Images whose unfused change is zero get NaN.
    """
    shapes = {tuple(t.shape) for t in (unfused_base, unfused_edit, fused_base, fused_edit)}
    if len(shapes) != 1:
        raise ValueError(f"change_kept needs four images of one shape, got {sorted(shapes)}")
    a = unfused_edit - unfused_base
    b = fused_edit - fused_base
    ha, hb = wv.high_bands(wv.dwt(a)), wv.high_bands(wv.dwt(b))
    out = {}
    for name, (x, y) in {"pixel": (a, b), "high": (ha, hb)}.items():
        den = _dot(x, x)
        out[name] = torch.where(den > 0, _dot(y, x) / den.clamp_min(1e-300), torch.full_like(den, float("nan"))
                                ).float()
    return out


def fold(error: Tensor, period: int) -> Tensor:
    """``(N, C, H, W)`` error → ``(N, p, p)``: mean |error| over channels and over every pixel with the same
    position modulo ``period`` (H and W are cropped to multiples of it)."""
    if error.dim() != 4:
        raise ValueError(f"fold expects (N, C, H, W), got {tuple(error.shape)}")
    n, _, h, w = error.shape
    hp, wp = h // period * period, w // period * period
    if hp == 0 or wp == 0:
        raise ValueError(f"fold: a {h}x{w} map is smaller than the period {period}")
    e = error[:, :, :hp, :wp].abs().mean(1)
    return e.reshape(n, hp // period, period, wp // period, period).mean((1, 3))


def lattice_amplitude(error: Tensor, periods: Sequence[int] = LATTICE_PERIODS) -> Dict[int, Tensor]:
    """``{p: (N,)}``: peak-to-peak range of the folded |error| over its mean, per image and period."""
    out = {}
    for p in periods:
        f = fold(error, int(p)).flatten(1)
        out[int(p)] = (f.amax(1) - f.amin(1)) / f.mean(1).clamp_min(1e-12)
    return out


def region_colour_error(out: Tensor, x: Tensor, masks: Tensor) -> Tensor:
    """Local colour error: per image, the length (over RGB) of the mean of ``out − x`` inside the mask.

    ``out``, ``x``: ``(N, 3, H, W)``; ``masks``: ``(N, H, W)`` bool (e.g. where an attribute of a demo face is
    drawn, :func:`wagi.data.demo_faces.attribute_mask`). A colour cast confined to one region (a badge turning
    bluish) shows here while the whole-image mean offset stays near 0. NaN for an empty mask.
    """
    m = masks.to(out.dtype).unsqueeze(1)
    area = m.sum((2, 3))  # (N, 1)
    mean_diff = ((out - x) * m).sum((2, 3)) / area.clamp_min(1)  # (N, 3)
    err = mean_diff.norm(dim=1)
    return torch.where(area[:, 0] > 0, err, torch.full_like(err, float("nan")))


__all__ = ["LATTICE_PERIODS", "change_kept", "fold", "lattice_amplitude", "region_colour_error"]
