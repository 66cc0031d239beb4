"""Unsupervised directions of a generator: SeFa and GANSpace. No labels needed; both are computed from
the generator being edited (directions computed for another generator do not transfer).

SeFa (Shen & Zhou 2021, closed-form factorisation)
    Each modulated layer maps a W code to per-channel styles with an affine map ``A w + b``
    (``*.modulation.weight`` ``A``: ``(C_out, D)``). The W directions that change the styles most are
    the top eigenvectors of ``Aᵀ A`` for ``A`` = the selected layers' weights stacked along rows
    (``(Σ C_out, D)``). Directions ``(k, D)``, unit norm, sorted by eigenvalue (descending).

GANSpace (Härkönen et al. 2020)
    PCA of mapped latents ``w = mapping(z)``, ``z ~ N(0, I)``: components ``(k, D)`` (orthonormal),
    mean ``(D,)`` and the standard deviation of W along each component ``(k,)``.

The sign of an eigenvector / principal component is arbitrary; here each is flipped so that its entry
of largest magnitude is positive, which makes results reproducible across runs and libraries.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .directions import check_layer_range, restrict_layers

Tensor = torch.Tensor

MODULATION_KEY = "modulation.weight"
TO_RGBS_KEY = "to_rgbs"
DEFAULT_PCA_SAMPLES = 10_000
DEFAULT_PCA_COMPONENTS = 20
PCA_BATCH = 1_000  # mapped per call: bounded memory, negligible overhead

# Which W+ entry drives a modulated layer, from its state_dict name (rosinality's StyleGAN2 / SWAGAN
# synthesis loop): conv1 ← 0, to_rgb1 ← 1, convs.j ← j + 1, to_rgbs.k ← 2k + 3.
_LAYER_PATTERNS = (
    (re.compile(r"^conv1\."), lambda m: 0),
    (re.compile(r"^to_rgb1\."), lambda m: 1),
    (re.compile(r"^convs\.(\d+)\."), lambda m: int(m.group(1)) + 1),
    (re.compile(r"^to_rgbs\.(\d+)\."), lambda m: 2 * int(m.group(1)) + 3),
)


def fix_signs(rows: Tensor) -> Tensor:
    """Flip each row so that its entry of largest magnitude is positive (deterministic signs)."""
    idx = rows.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(rows.gather(1, idx))
    sign[sign == 0] = 1
    return rows * sign


def latent_index_of(key: str) -> Optional[int]:
    """The W+ entry that modulates the layer of state_dict key ``key`` (None if it is no synthesis layer)."""
    for pattern, index in _LAYER_PATTERNS:
        m = pattern.match(key)
        if m:
            return index(m)
    return None


def _state_dict(generator: Union[nn.Module, Mapping[str, Tensor]]) -> Mapping[str, Tensor]:
    return generator.state_dict() if isinstance(generator, nn.Module) else generator


def modulation_weights(generator: Union[nn.Module, Mapping[str, Tensor]],
                       layers: Union[str, Sequence[int], Sequence[str]] = "all",
                       include_to_rgbs: bool = False) -> Dict[str, Tensor]:
    """The modulation weights SeFa factorises, ``{key: (C_out, D)}`` in state_dict order.

    ``layers='all'``: every key containing ``modulation.weight`` except the ``to_rgbs.*`` ones, so
    ``to_rgb1`` *is* included (rosinality's ``closed_form_factorization.py``, which filters on the
    substring ``to_rgbs``); ``include_to_rgbs=True`` also takes the ``to_rgbs.*`` layers (in SWAGAN their
    styles modulate the wavelet outputs, i.e. colour and fine detail).
    ``layers=[i, j, ...]`` (ints): only the layers driven by those W+ entries (SeFa's layer-wise
    factorisation, for an edit applied to those entries), with the same ``to_rgbs`` rule.
    ``layers=['conv1.conv.modulation.weight', ...]`` (strings): exactly those keys.
    """
    sd = _state_dict(generator)
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be 'all', a list of W+ entries or a list of keys, got {layers!r}")
        chosen = {k: v for k, v in sd.items()
                  if MODULATION_KEY in k and (include_to_rgbs or TO_RGBS_KEY not in k)}
    else:
        layers = list(layers)
        if not layers:
            raise ValueError("layers is empty")
        if all(isinstance(x, str) for x in layers):
            missing = [k for k in layers if k not in sd]
            if missing:
                raise KeyError(f"no such modulation weight(s) in the generator: {missing[:8]}")
            chosen = {k: sd[k] for k in layers}
        elif all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
            wanted = set(layers)
            chosen = {k: v for k, v in sd.items()
                      if MODULATION_KEY in k and (include_to_rgbs or TO_RGBS_KEY not in k)
                      and latent_index_of(k) in wanted}
        else:
            raise TypeError("layers must be 'all', a list of ints (W+ entries) or a list of strings (keys)")
    if not chosen:
        hint = "" if include_to_rgbs else "; the to_rgbs layers count only with include_to_rgbs (--sefa-to-rgbs)"
        raise ValueError(f"no modulation weights selected for layers={layers!r}{hint}")
    dims = {tuple(v.shape[1:]) for v in chosen.values()}
    if any(v.dim() != 2 for v in chosen.values()) or len(dims) != 1:
        raise ValueError(f"modulation weights must all be (C_out, D) with one D, got shapes "
                         f"{sorted({tuple(v.shape) for v in chosen.values()})[:4]}")
    return dict(chosen)


def sefa_directions(generator: Union[nn.Module, Mapping[str, Tensor]],
                    layers: Union[str, Sequence[int], Sequence[str]] = "all", include_to_rgbs: bool = False,
                    normalize_rows: bool = False, n_components: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """SeFa directions of a generator (an ``nn.Module`` or its state_dict).

    Args:
        layers, include_to_rgbs: which modulation weights, see :func:`modulation_weights`.
        normalize_rows: scale each row of the stacked weight to unit norm first (the original SeFa code
            does; rosinality's script does not, the default here).
        n_components: keep the top k (default all D).
    Returns:
        ``(eigvecs (k, D), eigvals (k,))`` float32: unit-norm rows, eigenvalues of ``AᵀA`` descending.
        The stored weights are used as they are: the equalised-lr scale ``1/√D`` is the same for every
        modulation layer, so it scales the eigenvalues and leaves the eigenvectors unchanged.
    """
    weights = modulation_weights(generator, layers, include_to_rgbs)
    a = torch.cat([w.detach().to("cpu", torch.float64) for w in weights.values()], dim=0)
    if normalize_rows:
        a = a / a.norm(dim=1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    eigvals, eigvecs = torch.linalg.eigh(a.T @ a)  # ascending; columns are eigenvectors
    order = torch.argsort(eigvals, descending=True)
    eigvals, eigvecs = eigvals[order], eigvecs[:, order].T
    k = eigvecs.shape[0] if n_components is None else int(n_components)
    if not 1 <= k <= eigvecs.shape[0]:
        raise ValueError(f"n_components must be in [1, {eigvecs.shape[0]}], got {n_components}")
    return fix_signs(eigvecs[:k]).float(), eigvals[:k].clamp_min(0).float()


# ------------------------------------------------------------------------------------------- GANSpace
def _reference(module: nn.Module) -> Tuple[torch.device, torch.dtype]:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


@torch.no_grad()
def ganspace_directions(generator: nn.Module, n_samples: int = DEFAULT_PCA_SAMPLES,
                        n_components: int = DEFAULT_PCA_COMPONENTS, seed: int = 0,
                        batch_size: int = PCA_BATCH) -> Tuple[Tensor, Tensor, Tensor]:
    """GANSpace PCA of ``generator.get_latent(z)`` for ``n_samples`` seeded ``z ~ N(0, I)``.

    Returns ``(components (k, D), mean (D,), std (k,))`` float32 on the CPU: orthonormal components
    sorted by variance, the mean W code, and the standard deviation of W along each component.
    Computed by an SVD of the centred codes in float64 (exact PCA; scikit-learn adds nothing here).
    """
    dim = int(generator.style_dim)
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    if not 1 <= n_components <= min(n_samples, dim):
        raise ValueError(f"n_components must be in [1, {min(n_samples, dim)}], got {n_components}")
    device, dtype = _reference(generator)
    rng = torch.Generator().manual_seed(int(seed))  # CPU draws: the same codes on every device
    codes = []
    for start in range(0, n_samples, batch_size):
        z = torch.randn(min(batch_size, n_samples - start), dim, generator=rng, dtype=dtype)
        codes.append(generator.get_latent(z.to(device)).to("cpu", torch.float64))
    w = torch.cat(codes)
    mean = w.mean(0)
    _, s, vh = torch.linalg.svd(w - mean, full_matrices=False)
    components = fix_signs(vh[:n_components])
    std = s[:n_components] / (n_samples - 1) ** 0.5
    return components.float(), mean.float(), std.float()


def ganspace_direction(components: Tensor, std: Tensor, index: int, n_latent: int,
                       layer_range: Optional[Sequence[int]] = None) -> Tensor:
    """The additive GANSpace direction ``std[index] · components[index]``: strength s moves s standard
    deviations along the component. ``(1, D)``, or ``(n_latent, D)`` restricted to ``layer_range``."""
    if not 0 <= index < components.shape[0]:
        raise ValueError(f"GANSpace component {index} does not exist (computed {components.shape[0]})")
    d = (std[index] * components[index]).unsqueeze(0)
    return restrict_layers(d, n_latent, layer_range)


@dataclass(frozen=True)
class GanspaceEdit:
    """An HFGI / e4e GANSpace edit ``(index, start, end, strength)``, e.g. eyes ``(54, 7, 8, 20)``.

    Semantics of e4e's ``editing/latent_editor.py``: the coordinate of W+ entry 0 along component
    ``index``, in standard deviations, is moved to ``strength``; the same shift is added to entries
    ``[start, end)``. The shift depends on the code, so :meth:`directions` gives one per code.
    """

    index: int
    start: int
    end: int
    strength: float

    @classmethod
    def parse(cls, text: str) -> GanspaceEdit:
        """``"INDEX,START,END,STRENGTH"`` → edit."""
        parts = [p.strip() for p in text.split(",")]
        try:
            if len(parts) != 4:
                raise ValueError
            return cls(int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3]))
        except ValueError:
            raise ValueError(f"a GANSpace edit must be INDEX,START,END,STRENGTH (e.g. 54,7,8,20), "
                             f"got {text!r}") from None

    def directions(self, w_plus: Tensor, components: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """Per-code shifts ``(N, n_latent, D)``: ``w+ + directions`` is the edited code."""
        n_latent = w_plus.shape[1]
        start, end = check_layer_range((self.start, self.end), n_latent)
        if not 0 <= self.index < components.shape[0]:
            raise ValueError(f"GANSpace component {self.index} does not exist (computed {components.shape[0]})")
        u = components[self.index].to(w_plus)
        sigma = std[self.index].to(w_plus)
        coord = ((w_plus[:, 0] - mean.to(w_plus)) @ u) / sigma  # (N,)
        shift = ((self.strength - coord) * sigma).unsqueeze(1) * u  # (N, D)
        out = torch.zeros_like(w_plus)
        out[:, start:end] = shift.unsqueeze(1)
        return out
