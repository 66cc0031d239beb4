"""Edit augmentation of the fusion stage (``fusion.edit_aug``): real latent edits as training samples.

The fusion is trained on reconstructions only, where "make the output's details equal the input's" is always
right; given an edited image it pastes the input's old details back over what the edit changed
(``docs/method.md``, "Fusion for edits"). With edit augmentation a share ``prob`` of the samples also gets an
edit pass:

    w' = w + s·d         d: a unit W direction, the same for every W+ entry, from a source picked uniformly
                            among ``sources``: ``sefa`` (one of the generator's top-``sefa_components`` SeFa
                            directions, uniformly) or ``random`` (uniform on the unit sphere);
                         s: sign uniform, |s| uniform in ``strength`` = [lo, hi]
    x̂_e = G(w', F(x, x̂0, target = G(w')))       the edit pass of ``edit_mode: recompute`` (no edit gate): the
                                                 aligner moves Δ = x − x̂0 onto G(w') and the level networks
                                                 see the edited image, so they can learn what the edit changed
    m   = clamp((maxpool_{2k+1}(mean_c |G(w') − G(w)|) − lo) / (hi − lo), 0, 1)      ``mask`` = [lo, hi, k]
    T   = G(w') + (1 − m) ⊙ (x − G(w))           the edited generator image where the edit changed the image,
                                                 and the input's details on it (x + the edit's change) elsewhere
    L_edit = mean((x̂_e − T)²) + Σ_{b ∈ LH, HL, HH} mean((W_b x̂_e − W_b T)²)     at ``loss.loss_size``

weighted by ``loss.edit_aug`` and averaged over the edited samples of the batch (0 when a batch has none).
The edit pass trains the fusion and its aligner only: the generator images and the target carry no gradient
(in ``joint`` runs too). Every draw comes from the sample's augmentation seed
(:func:`wagi.training.data.sample_seeds`), in a stream of its own, so a resumed run draws the same edits.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .. import wavelets as wv

EDIT_AUG_STREAM = 0x2545F4914F6CDD1D  # XOR-ed into a sample's seed: edits draw independently of its other augmentations


class EditAugmentation:
    """Draws the augmentation edits of ``fusion.edit_aug`` (see the module docstring).

    Args:
        prob: share of samples edited.
        strength: ``(lo, hi)``, the range of |s|.
        sources: names from :data:`wagi.config.EDIT_AUG_SOURCES`.
        style_dim: D of W.
        sefa: ``(k, D)`` unit SeFa directions of the generator (needed when ``'sefa'`` is a source).
        mask: ``(lo, hi, dilate)`` of :func:`edit_change_mask`.
    """

    def __init__(self, prob: float, strength: Sequence[float], sources: Sequence[str], style_dim: int,
                 sefa: Optional[torch.Tensor] = None, mask: Sequence[float] = (0.06, 0.15, 2)):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"edit augmentation prob must be in [0, 1], got {prob}")
        lo, hi = (float(v) for v in strength)
        if not 0.0 <= lo <= hi:
            raise ValueError(f"edit augmentation strength needs 0 <= lo <= hi, got {list(strength)}")
        if not sources:
            raise ValueError("edit augmentation needs at least one source")
        if "sefa" in sources and (sefa is None or sefa.dim() != 2 or sefa.shape[1] != style_dim):
            raise ValueError(f"the 'sefa' source needs (k, {style_dim}) SeFa directions")
        self.prob, self.strength, self.sources = float(prob), (lo, hi), list(sources)
        self.style_dim = int(style_dim)
        self.sefa = None if sefa is None else sefa.detach().float().cpu()
        self.mask = (float(mask[0]), float(mask[1]), int(mask[2]))

    def draw(self, seed: int) -> Optional[torch.Tensor]:
        """The W shift ``s·d`` (D,) for the sample with augmentation seed ``seed``, or None (not edited)."""
        g = torch.Generator().manual_seed(int(seed) ^ EDIT_AUG_STREAM)
        if float(torch.rand((), generator=g)) >= self.prob:
            return None
        source = self.sources[int(torch.randint(len(self.sources), (), generator=g))]
        lo, hi = self.strength
        s = lo + (hi - lo) * float(torch.rand((), generator=g))
        if float(torch.rand((), generator=g)) < 0.5:
            s = -s
        if source == "sefa":
            d = self.sefa[int(torch.randint(self.sefa.shape[0], (), generator=g))]
        else:
            d = torch.randn(self.style_dim, generator=g)
            d = d / d.norm()
        return s * d

    def draw_batch(self, seeds: Sequence[int]) -> Tuple[List[int], torch.Tensor]:
        """``(indices of the edited samples, their shifts (n, D))`` for a batch's augmentation seeds."""
        picked, shifts = [], []
        for i, seed in enumerate(seeds):
            shift = self.draw(seed)
            if shift is not None:
                picked.append(i)
                shifts.append(shift)
        return picked, torch.stack(shifts) if shifts else torch.zeros(0, self.style_dim)


def edit_change_mask(base: torch.Tensor, edited: torch.Tensor, lo: float, hi: float, dilate: int = 0) -> torch.Tensor:
    """Where an edit changed the image, ``(N, 1, S, S)`` in [0, 1]: ``clamp((a − lo) / (hi − lo), 0, 1)`` with
    ``a = mean_c |edited − base|`` dilated by a ``(2·dilate + 1)²`` max filter. 0 where the edit changed a pixel
    by less than ``lo``, 1 where by more than ``hi`` (within ``dilate`` px)."""
    if not 0.0 <= lo < hi:
        raise ValueError(f"edit change mask needs 0 <= lo < hi, got lo={lo}, hi={hi}")
    a = (edited - base).abs().mean(1, keepdim=True)
    if dilate > 0:
        a = F.max_pool2d(a, 2 * dilate + 1, stride=1, padding=dilate)
    return ((a - lo) / (hi - lo)).clamp(0.0, 1.0)


def edit_target(x: torch.Tensor, base: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``T = edited + (1 − mask) ⊙ (x − base)``: the edited generator image, with the input's details
    (the distortion x − base) kept where the edit did not change the image. All (N, 3, S, S); mask (N, 1, S, S)."""
    return edited + (1.0 - mask) * (x - base)


def edit_loss(x_hat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean((x̂ − T)²) + Σ_{LH, HL, HH} mean((W_b x̂ − W_b T)²)`` (one Haar level): pixel L2 plus the
    high bands at the wavelet loss's default weights, where an edit's pasted old details show."""
    err = x_hat - target
    high = wv.high_bands(wv.dwt(err))
    return err.pow(2).mean() + high.pow(2).mean() * 3.0  # the mean over the 3 bands' coefficients, summed


__all__ = ["EDIT_AUG_STREAM", "EditAugmentation", "edit_change_mask", "edit_target", "edit_loss"]
