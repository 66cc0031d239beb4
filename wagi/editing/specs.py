"""Direction specs ``KIND:SPEC`` → a :class:`LatentEdit` for a WaGI model, and rendering of edits.

=========================  ==================================================================================
``boundary:FILE``          InterFaceGAN boundary (``.npy`` / ``.pt``), :func:`load_boundary`; strength in
                           the file's units (unit norm: distance to the hyperplane). ``boundary:NAME``
                           takes a direction shipped with the demo bundle (``glasses``, ...)
``sefa:INDEX``             SeFa eigenvector INDEX (unit norm) of the generator's modulation weights; with a
                           layer range, factorised from the layers of those W+ entries only
``ganspace:INDEX``         GANSpace component INDEX scaled by its standard deviation (strength = σ's)
``ganspace:I,START,END,S`` HFGI / e4e edit: coordinate of component I set to S σ on entries [START, END);
                           strength t interpolates (t = 1 is the HFGI edit)
``text:PROMPT``            StyleCLIP global direction (needs CLIP) from ``neutral`` to PROMPT
``mapper:FILE``            StyleCLIP LevelsMapper checkpoint; strength t gives ``w + t · 0.1 · M(w)``
=========================  ==================================================================================

A layer range ``(start, end)`` restricts every kind to W+ entries ``[start, end)``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..tensors import resize
from .directions import LayerRange, check_layer_range, restrict_layers
from .factorization import DEFAULT_PCA_SAMPLES, GanspaceEdit, ganspace_direction, ganspace_directions, sefa_directions
from .interfacegan import load_boundary
from .styleclip import (
    DEFAULT_AXES,
    DEFAULT_BETA,
    DEFAULT_CLIP_MODEL,
    DEFAULT_CLIP_WEIGHTS,
    DEFAULT_STAT_SAMPLES,
    DEFAULT_STEP,
    GlobalDirectionStats,
    TextImageEncoder,
    global_direction,
    load_clip,
    load_mapper,
    styleclip_global_stats,
)

logger = logging.getLogger(__name__)

Tensor = torch.Tensor

DIRECTION_KINDS = ("boundary", "sefa", "ganspace", "text", "mapper")
LINEAR_STRENGTHS = (-3.0, 0.0, 3.0)
INTERPOLATION_STRENGTHS = (0.0, 0.5, 1.0)  # for edits whose strength 1 is the method's own edit
DEFAULT_NEUTRAL = "a face"


@dataclass
class LatentEdit:
    """One edit of W+ codes: a fixed ``direction`` ``(1, D)`` / ``(n_latent, D)``, or ``per_code``
    ``w+ (N, n_latent, D) → directions (N, n_latent, D)``. Edited code = ``w+ + strength · direction``."""

    name: str
    direction: Optional[Tensor] = None
    per_code: Optional[Callable[[Tensor], Tensor]] = None
    default_strengths: Tuple[float, ...] = LINEAR_STRENGTHS
    notes: Tuple[str, ...] = ()

    def __post_init__(self):
        if (self.direction is None) == (self.per_code is None):
            raise ValueError("a LatentEdit needs exactly one of direction and per_code")

    def directions(self, w_plus: Tensor) -> Tensor:
        """``(N, n_latent, D)`` shift per unit strength for codes ``w_plus``."""
        if self.per_code is not None:
            return self.per_code(w_plus)
        return self.direction.to(w_plus).expand(w_plus.shape[1], -1).expand(w_plus.shape[0], -1, -1)

    def apply(self, w_plus: Tensor, strength: float) -> Tensor:
        return w_plus + float(strength) * self.directions(w_plus)


@dataclass
class EditOptions:
    """Settings of :func:`build_edit` beyond the spec (the CLI flags of ``edit.py``)."""

    layer_range: Optional[LayerRange] = None
    seed: int = 0
    pca_samples: int = DEFAULT_PCA_SAMPLES
    sefa_include_to_rgbs: bool = False
    neutral: str = DEFAULT_NEUTRAL
    beta: float = DEFAULT_BETA
    clip_model: str = DEFAULT_CLIP_MODEL
    clip_weights: str = DEFAULT_CLIP_WEIGHTS
    clip_stats: Optional[str] = None  # cache file of GlobalDirectionStats: read if present, else written
    clip_axes: int = DEFAULT_AXES
    clip_samples: int = DEFAULT_STAT_SAMPLES
    clip_step: float = DEFAULT_STEP
    encoder: Optional[TextImageEncoder] = None  # a ready encoder instead of load_clip()
    progress: bool = False
    log: Callable[[str], None] = field(default=logger.info, repr=False)


def parse_direction(text: str) -> Tuple[str, str]:
    """``"KIND:SPEC"`` → ``(kind, spec)`` with kind in :data:`DIRECTION_KINDS`."""
    kind, sep, spec = text.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in DIRECTION_KINDS or not spec.strip():
        raise ValueError(f"direction must be KIND:SPEC with KIND one of {', '.join(DIRECTION_KINDS)} "
                         "(e.g. boundary:smile.npy, sefa:0, ganspace:3, text:\"a smiling face\", mapper:m.pt), "
                         f"got {text!r}")
    return kind, spec.strip()


def _index(spec: str, kind: str) -> int:
    try:
        value = int(spec)
    except ValueError:
        raise ValueError(f"{kind}:INDEX needs an integer component index, got {spec!r}") from None
    if value < 0:
        raise ValueError(f"{kind} index must be >= 0, got {value}")
    return value


def build_edit(model: nn.Module, text: str, options: Optional[EditOptions] = None) -> LatentEdit:
    """Resolve a direction spec for ``model`` (a :class:`~wagi.models.wagi.WaGI`). Raises ValueError /
    FileNotFoundError / :class:`~wagi.editing.styleclip.CLIPUnavailableError` with one line."""
    opts = options or EditOptions()
    kind, spec = parse_direction(text)
    g = model.generator
    n_latent, style_dim = g.n_latent, g.style_dim
    layer_range = check_layer_range(opts.layer_range, n_latent) if opts.layer_range is not None else None
    ref = model.latent_avg

    if kind == "boundary":
        strengths = LINEAR_STRENGTHS
        if not Path(spec).exists():  # a shipped direction's name (boundary:glasses)
            from .shipped import check_direction_fits, direction_entries, resolve_shipped  # bundle reader
            entry = direction_entries().get(spec)
            if entry is not None:
                check_direction_fits(entry, g, spec)
                s = float(entry["strength"])  # its documented strength: remove, unchanged, add
                strengths = (-s, 0.0, s)
            spec = str(resolve_shipped(spec) or spec)
        d = load_boundary(spec, n_latent, style_dim, layer_range)
        return LatentEdit(text, direction=d.to(ref), default_strengths=strengths)

    if kind == "sefa":
        index = _index(spec, kind)
        layers = list(range(*layer_range)) if layer_range is not None else "all"
        eigvecs, eigvals = sefa_directions(g, layers=layers, include_to_rgbs=opts.sefa_include_to_rgbs)
        if index >= eigvecs.shape[0]:
            raise ValueError(f"sefa index {index} is out of range: the factorisation has {eigvecs.shape[0]} directions")
        d = restrict_layers(eigvecs[index:index + 1], n_latent, layer_range)
        return LatentEdit(text, direction=d.to(ref), notes=(f"SeFa eigenvalue {float(eigvals[index]):.4g}",))

    if kind == "ganspace":
        if "," in spec:
            hfgi = GanspaceEdit.parse(spec)
            comps, mean, std = ganspace_directions(g, opts.pca_samples, max(hfgi.index + 1, 1), seed=opts.seed)
            comps, mean, std = comps.to(ref), mean.to(ref), std.to(ref)

            def per_code(w: Tensor) -> Tensor:
                return restrict_layers(hfgi.directions(w, comps, mean, std), n_latent, layer_range)

            return LatentEdit(text, per_code=per_code, default_strengths=INTERPOLATION_STRENGTHS)
        index = _index(spec, kind)
        if index >= min(style_dim, opts.pca_samples):
            raise ValueError(f"ganspace index {index} is out of range (style_dim={style_dim})")
        comps, _, std = ganspace_directions(g, opts.pca_samples, index + 1, seed=opts.seed)
        d = ganspace_direction(comps, std, index, n_latent, layer_range)
        return LatentEdit(text, direction=d.to(ref), notes=(f"GANSpace σ = {float(std[index]):.4g}",))

    if kind == "text":
        encoder = opts.encoder if opts.encoder is not None else load_clip(opts.clip_model, opts.clip_weights,
                                                                          device=ref.device)
        stats = None
        if opts.clip_stats and Path(opts.clip_stats).is_file():
            stats = GlobalDirectionStats.load(opts.clip_stats)
            stats.check(n_latent, style_dim)
        if stats is None:
            opts.log(f"computing StyleCLIP W+ statistics ({opts.clip_samples} codes x {n_latent} entries x "
                     f"{opts.clip_axes} axes x 2 renders)")
            stats = styleclip_global_stats(model, encoder, opts.clip_samples, opts.clip_axes, opts.clip_step,
                                           seed=opts.seed, pca_samples=opts.pca_samples, progress=opts.progress)
            if opts.clip_stats:
                stats.save(opts.clip_stats)
        d, info = global_direction(stats, encoder, spec, opts.neutral, opts.beta)
        if info["n_kept"] == 0:
            raise ValueError(f"no W+ unit reaches beta={opts.beta} for {spec!r} (largest relevance "
                             f"{info['max_relevance']:.3f}); lower --beta")
        d = restrict_layers(d, n_latent, layer_range)
        return LatentEdit(text, direction=d.to(ref),
                          notes=(f"StyleCLIP: {info['n_kept']}/{info['n_units']} W+ units kept at beta={opts.beta}",))

    # mapper
    mapper = load_mapper(spec, n_latent, style_dim).to(ref)

    def per_code(w: Tensor) -> Tensor:
        return restrict_layers(mapper.step * mapper(w), n_latent, layer_range)

    return LatentEdit(text, per_code=per_code, default_strengths=INTERPOLATION_STRENGTHS)


@torch.no_grad()
def render_edits(model: nn.Module, inputs: Tensor, edit: LatentEdit, strengths: Sequence[float],
                 fuse: bool = True) -> Tensor:
    """Edited images ``(len(strengths), N, 3, S, S)`` through :meth:`WaGI.edit`.

    ``inputs``: images ``(N, 3, H, W)`` in [-1, 1] (inverted; with ``fuse`` the wavelet fusion is
    re-applied through the aligner) or W+ codes ``(N, n_latent, D)`` (no fusion: no input image).
    Per-code edits invert the images once to get their shift, then edit each image on its own.
    """
    strengths = [float(s) for s in strengths]
    if edit.direction is not None:
        return model.edit(inputs, edit.direction, strengths, fuse=fuse)
    if inputs.dim() == 4:
        w = model.encode(resize(inputs, model.image_size))
    else:
        w = inputs
    shifts = edit.directions(w)
    return torch.cat([model.edit(inputs[i:i + 1], shifts[i], strengths, fuse=fuse) for i in range(inputs.shape[0])],
                     dim=1)
