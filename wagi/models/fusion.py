"""Wavelet fusion: write the input's high-frequency information into SWAGAN's wavelet skip.

SWAGAN keeps, at every feature resolution r, a 12-channel wavelet map (the Haar coefficients
``[LL | LH | HL | HH]`` of a 2r x 2r RGB image) that it upsamples in the wavelet domain. An encoder's
latent code cannot carry the fine details of a real image (letters, strands, pupils), so after the first
reconstruction x̂0 = G(w+) the :class:`WaveletFusion` module predicts corrections to the *high-frequency*
channels (LH, HL, HH; 9 of the 12) of that skip at chosen resolutions:

    Δ       = x − x̂0                                  (the distortion: what the latent missed)
    D_r     = Haar pyramid of resize(Δ, 2r)  and  of resize(x_ref, 2r)
    ΔC_r    = g_r ⊙ (HF(DWT(resize(Δ, 2r))) + f_r(D_r))      (N, 9, r, r)
    skip_r  ← skip_r + [0 | ΔC_r]                           (LL channels never change)

* ``fusion.cascade``: the levels run coarse to fine and level r sees the residual the coarser ones left,
  Δ − M_<r and x_ref + M_<r, M_<r the image change of the corrections at r' < r (the skip chain is linear:
  :meth:`wagi.models.swagan.Generator.correction_image`), so a finer level can undo a coarse level's blocks.
* ``g_r`` are per-channel gates initialised to ``gate_init`` (0 by default), so at step 0 the fused output
  equals the plain generator's and training starts from the base model.
* With ``g_r = 1`` and ``f_r = 0`` the correction is exactly the Haar detail of the residual at that
  level: the identity transfer. ``f_r`` (a small CNN) learns what to keep, where, and how to combine levels.
* Low frequencies stay with the latent code, so editing the latent still controls the image.
* For edits, the distortion of the *unedited* reconstruction is moved onto the edited image by the
  :class:`ResidualAligner` (the idea of HFGI's adaptive distortion alignment): it sees (Δ, x̂_edit) and
  outputs the aligned Δ. It is trained self-supervised: Δ is warped with a random perspective, and the
  aligner must undo the warp given x̂0 (L1 to the unwarped Δ).

:class:`FeatureFusion` is the HFGI-style baseline: (scale, shift) modulation of one feature map computed
from the distortion map. Every choice here is a config option, see ``docs/method.md``.

Every fusion variant subclasses :class:`Fusion`, which declares what it injects into the generator
(``injects``: :data:`WAVELET_CORRECTIONS`, applied to the skip chain only, or :data:`FEATURE_CONDITIONS`,
which need a full synthesis pass) and holds its optional ``aligner``; the variants are registered in
:data:`FUSIONS` (``fusion.kind``) by a builder ``fn(fusion_config, generator, aligner) -> Fusion``
(``docs/extending.md``).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import wavelets as wv
from ..registry import Registry
from ..tensors import resize

N_HF = 9  # LH, HL, HH for 3 colour channels
FULL_WIDTH_MAX_RES = 128
EDIT_MODES = ("reuse", "recompute")
EDIT_SIGNALS = ("high", "pixel")  # fusion CNNs above this feature resolution halve their width per level (cost)
WAVELET_CORRECTIONS = "wavelet_corrections"  # {r: (N, 9, r, r)} added to the HF channels of SWAGAN's skip
FEATURE_CONDITIONS = "feature_conditions"    # {r: (scale, shift)} modulating the features at resolution r
INJECTIONS = (WAVELET_CORRECTIONS, FEATURE_CONDITIONS)


def haar_pyramid(img: torch.Tensor, levels: int) -> torch.Tensor:
    """Haar pyramid of ``img`` (N,C,2r,2r) stacked at resolution r: (N, C + 3C·levels, r, r).

    Level 1 is native; coarser levels are repeated (nearest) up to r so that each location sees its
    coarse context. LL is the coarsest low band, also repeated.
    """
    ll, highs = wv.dwt_multilevel(img, levels)
    r = highs[0].shape[-1]
    parts = [highs[0]]
    for hi in highs[1:]:
        f = r // hi.shape[-1]
        parts.append(hi.repeat_interleave(f, dim=-1).repeat_interleave(f, dim=-2))
    f = r // ll.shape[-1]
    parts.append(ll.repeat_interleave(f, dim=-1).repeat_interleave(f, dim=-2))
    return torch.cat(parts, dim=1)


def level_width(width: int, r: int) -> int:
    """Channels of the fusion CNN at feature resolution r: ``width`` up to 128, halved per level above
    (a 512² level at full width would cost more than the generator's last block)."""
    w = width
    while r > FULL_WIDTH_MAX_RES and w > 8:
        w, r = w // 2, r // 2
    return w


class _LevelNet(nn.Module):
    """Per-resolution predictor: pyramid(Δ) ⊕ pyramid(x_ref) → 9 HF channels."""

    def __init__(self, in_ch: int, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, N_HF, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualAligner(nn.Module):
    """Move a distortion map Δ (N,3,S,S) onto a target image (N,3,S,S) by warping it.

    A small U-Net sees (Δ, target) resized to ``work_size`` and predicts a displacement field (N,2,a,a)
    in normalised coordinates; the field is upsampled to S and Δ is resampled along it (bilinear).
    Warping moves Δ's details without re-synthesising them, so their high frequencies survive, and the
    network runs at a fixed small resolution whatever the output size (at 1024² it costs 1/16 of a
    full-resolution U-Net). The last convolution is zero-initialised: an untrained aligner returns Δ
    (up to resampling round-off, ~1e-6).
    """

    def __init__(self, width: int = 32, work_size: int = 256):
        super().__init__()
        if work_size < 16 or work_size % 4:
            raise ValueError(f"aligner work_size must be a multiple of 4 and >= 16, got {work_size}")
        w = width
        self.work_size = int(work_size)
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.enc1 = nn.Sequential(nn.Conv2d(6, w, 3, padding=1), act(), nn.Conv2d(w, w, 3, padding=1), act())
        self.enc2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), act(),
                                  nn.Conv2d(2 * w, 2 * w, 3, padding=1), act())
        self.enc3 = nn.Sequential(nn.Conv2d(2 * w, 3 * w, 3, stride=2, padding=1), act(),
                                  nn.Conv2d(3 * w, 3 * w, 3, padding=1), act())
        self.dec2 = nn.Sequential(nn.Conv2d(5 * w, 2 * w, 3, padding=1), act())
        self.dec1 = nn.Sequential(nn.Conv2d(3 * w, w, 3, padding=1), act())
        self.flow = nn.Conv2d(w, 2, 3, padding=1)
        nn.init.zeros_(self.flow.weight)
        nn.init.zeros_(self.flow.bias)

    def displacement(self, delta: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Displacement field (N, 2, S, S) in normalised [-1, 1] units (x, y), as ``grid_sample`` reads it."""
        if delta.shape != target.shape:
            raise ValueError(f"aligner needs equal shapes, got {tuple(delta.shape)} and {tuple(target.shape)}")
        size = delta.shape[-1]
        if delta.shape[-2] != size or size % 4:
            raise ValueError(f"aligner needs square sizes divisible by 4, got {tuple(delta.shape[-2:])}")
        a = min(self.work_size, size)
        e1 = self.enc1(torch.cat([resize(delta, a), resize(target, a)], dim=1))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1))
        flow = self.flow(d1)
        return flow if a == size else F.interpolate(flow, size=(size, size), mode="bilinear", align_corners=False)

    def forward(self, delta: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        flow = self.displacement(delta, target)
        n, _, h, w = delta.shape
        ys = (torch.arange(h, device=delta.device, dtype=flow.dtype) * 2 + 1) / h - 1
        xs = (torch.arange(w, device=delta.device, dtype=flow.dtype) * 2 + 1) / w - 1
        base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        grid = base.unsqueeze(0) + flow.permute(0, 2, 3, 1)
        return F.grid_sample(delta, grid.to(delta.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def random_perspective(x: torch.Tensor, distortion_scale: float, p: float,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-sample random perspective warp (torchvision's RandomPerspective geometry), for aligner training."""
    from torchvision.transforms import functional as TF

    n, _, h, w = x.shape
    out = []
    half_h, half_w = h // 2, w // 2
    dh, dw = int(distortion_scale * half_h), int(distortion_scale * half_w)
    for i in range(n):
        if float(torch.rand((), generator=generator)) >= p:
            out.append(x[i])
            continue

        def r(hi: int) -> int:
            return int(torch.randint(0, hi + 1, (), generator=generator))

        start = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
        end = [[r(dw), r(dh)], [w - 1 - r(dw), r(dh)], [w - 1 - r(dw), h - 1 - r(dh)], [r(dw), h - 1 - r(dh)]]
        out.append(TF.perspective(x[i], start, end, interpolation=TF.InterpolationMode.BILINEAR, fill=0.0))
    return torch.stack(out)


def edit_change_gate(base: torch.Tensor, edited: torch.Tensor, resolutions: Sequence[int], lo: float, hi: float,
                     dilate: int = 1, signal: str = "high") -> Dict[int, torch.Tensor]:
    """Per-location weights ``{r: (N, 1, r, r)}`` in [0, 1] for the corrections of an edit pass.

    The edit's change of the high bands at that level, ``m = max_c Σ_band |HF(DWT(edited_2r − base_2r))|``
    (N,1,r,r; images area-resized to 2r), is dilated by ``dilate`` coefficients and mapped to
    ``clamp((hi − m) / (hi − lo), 0, 1)``: 1 (keep the input's details) where the edit changed the level's
    details by less than ``lo``, 0 (let the edited image's own details through) where by more than ``hi``.
    Smooth changes (colour, shading) leave the high bands alone and keep the details; new or removed
    edges (a frame, a necklace) close the gate around them. ``signal='pixel'`` measures the change on the
    pixels instead (``max`` over each coefficient's block of ``mean_c |edited − base|``): it also closes
    where the edit only repainted a region smoothly, e.g. where the generator drew a removed attribute
    faintly and the reconstruction's corrections carry its sharp edges.
    At strength 0 (``edited == base``) every weight is 1, so the edit pass equals the reconstruction.
    """
    if not 0.0 <= lo < hi:
        raise ValueError(f"edit gate needs 0 <= lo < hi, got lo={lo}, hi={hi}")
    if signal not in EDIT_SIGNALS:
        raise ValueError(f"edit gate signal must be one of {EDIT_SIGNALS}, got {signal!r}")
    out: Dict[int, torch.Tensor] = {}
    for r in resolutions:
        if signal == "pixel":
            m = F.adaptive_max_pool2d((edited.float() - base.float()).abs().mean(1, keepdim=True), int(r))
        else:
            diff = resize(edited.float(), 2 * int(r)) - resize(base.float(), 2 * int(r))
            m = wv.high_bands(wv.dwt(diff)).abs().view(diff.shape[0], 3, 3, int(r), int(r)).sum(1).amax(1, keepdim=True)
        if dilate > 0:
            m = F.max_pool2d(m, 2 * dilate + 1, stride=1, padding=dilate)
        out[int(r)] = ((hi - m) / (hi - lo)).clamp(0.0, 1.0)
    return out


class Fusion(nn.Module):
    """The interface of a fusion variant (see the module docstring).

    ``forward(x, x_hat0, target=None, source_map=None)`` returns the mapping the generator takes as its
    ``injects`` argument (:meth:`wagi.models.swagan.Generator.compose` for :data:`WAVELET_CORRECTIONS`,
    :meth:`~wagi.models.swagan.Generator.synthesize` for :data:`FEATURE_CONDITIONS`). ``aligner`` is a
    :class:`ResidualAligner` or None: with one, ``forward`` moves the distortion onto ``target`` through it,
    and the fusion stage trains it (``loss.aligner``). ``edit_mode`` and :meth:`gate_edit` say how an edit
    pass reuses the corrections (defaults: recompute them, apply them everywhere).
    """

    injects: str = WAVELET_CORRECTIONS
    edit_mode: str = "recompute"
    cascade: bool = False  # True: forward takes ``correction_image`` (see WaveletFusion); WaGI passes it

    def __init__(self, aligner: Optional[ResidualAligner] = None):
        super().__init__()
        if self.injects not in INJECTIONS:
            raise ValueError(f"{type(self).__name__}.injects must be one of {INJECTIONS}, got {self.injects!r}")
        self.aligner = aligner

    @property
    def has_aligner(self) -> bool:
        return self.aligner is not None

    def _aligner_last(self) -> None:
        """Register the aligner after the variant's own modules. Optimiser states are matched to parameters
        by position, and the built-in variants registered it last before this base class existed: keeping
        that order lets their older training states resume. Call at the end of ``__init__``."""
        if self._modules.get("aligner") is not None:
            self._modules["aligner"] = self._modules.pop("aligner")

    def gate_edit(self, corrections, base: torch.Tensor, edited: torch.Tensor):
        """An edit pass's corrections as applied (default: unchanged)."""
        return corrections


class WaveletFusion(Fusion):
    """Predict HF corrections to SWAGAN's wavelet skip (see the module docstring).

    Args:
        image_size: generator output size S.
        resolutions: feature resolutions r to fuse (each a power of two in [4, S/2]); the correction at r
            has shape (N, 9, r, r) and corresponds to the Haar details of a 2r x 2r image.
        width: channels of each per-level CNN (see :func:`level_width` for levels above 128).
        source: ``'residual'`` (Δ = x − x̂0, default) or ``'input'`` (x itself).
        levels: Haar levels of the pyramid fed to each per-level CNN.
        gate_init: initial value of the per-channel gates (0 ⇒ output unchanged at init).
        aligner: optional :class:`ResidualAligner` used for edits (and trained with augmentation).
        edit_mode: how an edit pass gets its corrections: ``'reuse'`` (those of the reconstruction: the
            input's details as the reconstruction had them, moved to the edited image unchanged) or
            ``'recompute'`` (computed again with the edited image as the target, through the aligner).
        edit_gate: ``(lo, hi, dilate)`` for :meth:`gate_edit` (see :func:`edit_change_gate`), or None to
            apply an edit pass's corrections everywhere.
        edit_signal: what the gate measures, ``'high'`` or ``'pixel'`` (:func:`edit_change_gate`).
        cascade: compute the levels coarse to fine, each from the residual the coarser ones left
            (:meth:`forward`); needs ``source='residual'``.
    """

    injects = WAVELET_CORRECTIONS

    def __init__(self, image_size: int, resolutions: Sequence[int], width: int = 64, source: str = "residual",
                 levels: int = 1, gate_init: float = 0.0, aligner: Optional[ResidualAligner] = None,
                 edit_mode: str = "recompute", edit_gate: Optional[Tuple[float, float, int]] = None,
                 edit_signal: str = "high", cascade: bool = False):
        super().__init__(aligner)
        if edit_mode not in EDIT_MODES:
            raise ValueError(f"edit_mode must be one of {EDIT_MODES}, got {edit_mode!r}")
        self.edit_mode = edit_mode
        if edit_signal not in EDIT_SIGNALS:
            raise ValueError(f"edit_signal must be one of {EDIT_SIGNALS}, got {edit_signal!r}")
        self.edit_signal = edit_signal
        if edit_gate is not None:
            lo, hi, dilate = edit_gate
            if not 0.0 <= lo < hi or dilate < 0:
                raise ValueError(f"edit_gate needs 0 <= lo < hi and dilate >= 0, got {edit_gate}")
        self.edit_gate = None if edit_gate is None else (float(edit_gate[0]), float(edit_gate[1]), int(edit_gate[2]))
        if source not in ("residual", "input"):
            raise ValueError(f"source must be 'residual' or 'input', got {source!r}")
        self.image_size = image_size
        self.resolutions = sorted(int(r) for r in resolutions)
        for r in self.resolutions:
            if r < 4 or r > image_size // 2 or r & (r - 1):
                raise ValueError(f"fusion resolution {r} is not a feature resolution of a size-{image_size} SWAGAN")
            if r % (2 ** (levels - 1)):
                raise ValueError(f"fusion resolution {r} is too small for {levels} Haar levels")
        self.source = source
        self.levels = levels
        self.cascade = bool(cascade)
        self._check_cascade()
        in_ch = 2 * (3 + 9 * levels)
        self.nets = nn.ModuleDict({str(r): _LevelNet(in_ch, level_width(width, r)) for r in self.resolutions})
        self.gates = nn.ParameterDict({str(r): nn.Parameter(torch.full((1, N_HF, 1, 1), float(gate_init)))
                                       for r in self.resolutions})
        self._aligner_last()

    def distortion(self, x: torch.Tensor, x_hat0: torch.Tensor) -> torch.Tensor:
        """The source map the corrections are computed from (N,3,S,S)."""
        return x - x_hat0 if self.source == "residual" else x

    def _check_cascade(self) -> None:
        if self.cascade and self.source != "residual":
            raise ValueError(f"cascade fusion computes each level from the residual the coarser ones left; it needs "
                             f"source 'residual', got {self.source!r}")

    def level(self, r: int, src: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The correction ΔC_r (N, 9, r, r) at feature resolution ``r`` from a source map and a target image
        (both (N,3,S,S)): ``g_r ⊙ (HF(DWT(resize(src, 2r))) + f_r(pyramid(src) ⊕ pyramid(target)))``."""
        src_r, tgt_r = resize(src, 2 * r), resize(target, 2 * r)
        feats = torch.cat([haar_pyramid(src_r, self.levels), haar_pyramid(tgt_r, self.levels)], dim=1)
        direct = wv.high_bands(wv.dwt(src_r))
        return self.gates[str(r)] * (direct + self.nets[str(r)](feats))

    def forward(self, x: torch.Tensor, x_hat0: torch.Tensor, target: Optional[torch.Tensor] = None,
                source_map: Optional[torch.Tensor] = None,
                correction_image: Optional[Callable[[Dict[int, torch.Tensor]], torch.Tensor]] = None
                ) -> Dict[int, torch.Tensor]:
        """Corrections ``{r: (N, 9, r, r)}`` for ``Generator(..., wavelet_corrections=...)``.

        Args:
            x: input images (N,3,S,S) in [-1, 1] (resized to S if needed).
            x_hat0: the plain reconstruction G(w+) of ``x`` (N,3,S,S).
            target: the image the corrections will land on; defaults to ``x_hat0``. For an edit pass the
                edited reconstruction. With an aligner, Δ is always passed through it onto ``target``
                (as in training, where it learns to undo random warps given x̂0).
            source_map: an already aligned distortion map; used as is (no aligner call).
            correction_image: with ``cascade``, ``fn(corrections) -> (N,3,S,S)``, the image change those
                corrections make (:meth:`wagi.models.swagan.Generator.correction_image`; :class:`WaGI` passes it).

        Independent levels (default): every level sees the same source map Δ and target. ``cascade``: the levels
        run coarse to fine, and level r sees what the coarser levels left, ``Δ − M_<r`` and ``target + M_<r``,
        ``M_<r = correction_image({r' < r: ΔC_r'})``: without an aligner that is ``x − x̂_<r`` and ``x̂_<r``, the
        image fused with the coarser levels only.
        """
        s = self.image_size
        x, x_hat0 = resize(x, s), resize(x_hat0, s)
        target = x_hat0 if target is None else resize(target, s)
        src = self.distortion(x, x_hat0) if source_map is None else resize(source_map, s)
        if self.aligner is not None and source_map is None:
            src = self.aligner(src, target)
        if self.cascade:
            self._check_cascade()
            if correction_image is None:
                raise ValueError("a cascade fusion needs correction_image (the generator's skip chain); "
                                 "WaGI.fusion_outputs passes Generator.correction_image")
        out: Dict[int, torch.Tensor] = {}
        for r in self.resolutions:
            if self.cascade and out:
                change = correction_image(out)
                out[r] = self.level(r, src - change, target + change)
            else:
                out[r] = self.level(r, src, target)
        return out

    def gate_edit(self, corrections: Dict[int, torch.Tensor], base: torch.Tensor, edited: torch.Tensor
                  ) -> Dict[int, torch.Tensor]:
        """An edit pass's corrections, weighted down where the edit changed the image (``edit_gate``):
        the input's old details are not pasted back over what the edit drew, and kept where it drew nothing."""
        if self.edit_gate is None:
            return corrections
        lo, hi, dilate = self.edit_gate
        gates = edit_change_gate(base, edited, list(corrections), lo, hi, dilate, getattr(self, "edit_signal", "high"))
        return {r: c * gates[r].to(c.dtype) for r, c in corrections.items()}


class FeatureFusion(Fusion):
    """HFGI-style baseline: from the distortion map Δ, predict (scale, shift) for the feature map at one
    resolution ``r``: F ← F ⊙ (1 + scale) + shift, after the first convolution of that block.

    The heads' last layers are zero-initialised, so the output is unchanged at init.
    """

    injects = FEATURE_CONDITIONS

    def __init__(self, image_size: int, resolution: int, feature_channels: int, width: int = 64,
                 aligner: Optional[ResidualAligner] = None):
        super().__init__(aligner)
        if resolution < 8 or resolution > image_size // 2 or resolution & (resolution - 1):
            raise ValueError(f"feature-fusion resolution {resolution} is invalid for a size-{image_size} SWAGAN")
        self.image_size, self.resolution = image_size, resolution
        n_down = int(math.log2(image_size // resolution))
        layers: List[nn.Module] = [nn.Conv2d(6, width, 3, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(n_down):
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.trunk = nn.Sequential(*layers)
        self.scale = nn.Conv2d(width, feature_channels, 3, padding=1)
        self.shift = nn.Conv2d(width, feature_channels, 3, padding=1)
        for conv in (self.scale, self.shift):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self._aligner_last()

    def forward(self, x: torch.Tensor, x_hat0: torch.Tensor, target: Optional[torch.Tensor] = None,
                source_map: Optional[torch.Tensor] = None) -> Dict[int, Tuple[torch.Tensor, torch.Tensor]]:
        s = self.image_size
        x, x_hat0 = resize(x, s), resize(x_hat0, s)
        target = x_hat0 if target is None else resize(target, s)
        delta = x - x_hat0 if source_map is None else resize(source_map, s)
        if self.aligner is not None and source_map is None:
            delta = self.aligner(delta, target)
        h = self.trunk(torch.cat([delta, target], dim=1))
        return {self.resolution: (self.scale(h), self.shift(h))}


# ------------------------------------------------------------------------------------------------ registry

# builder(fusion config section, generator, aligner or None) -> Fusion; "none" (no fusion) is not an entry
FUSIONS: Registry[Callable[..., Fusion]] = Registry("fusion kind", "fusion.kind")


@FUSIONS.register("wavelet")
def _wavelet_fusion(fc, generator: nn.Module, aligner: Optional[ResidualAligner]) -> Fusion:
    gate = None if fc.edit_gate is None else (fc.edit_gate[0], fc.edit_gate[1], int(fc.edit_gate[2]))
    return WaveletFusion(generator.size, fc.resolutions, width=fc.width, source=fc.source, levels=fc.levels,
                         gate_init=fc.gate_init, aligner=aligner, edit_mode=fc.edit_mode, edit_gate=gate,
                         edit_signal=fc.edit_signal, cascade=fc.cascade)


@FUSIONS.register("feature")
def _feature_fusion(fc, generator: nn.Module, aligner: Optional[ResidualAligner]) -> Fusion:
    r = fc.resolutions[0]
    return FeatureFusion(generator.size, r, generator.channels[r], width=fc.width, aligner=aligner)
