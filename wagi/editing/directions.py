"""Latent directions in W+: shape handling, layer ranges, and the edit ``w+ ← w+ + s · d``.

Every editing method of :mod:`wagi.editing` ends in a direction ``d`` of shape ``(1, D)`` (one W
direction, added to every W+ entry) or ``(n_latent, D)`` (one row per W+ entry; rows outside a layer
range are zero). Methods whose shift depends on the code being edited (a StyleCLIP mapper, an
HFGI-style GANSpace edit) give one such direction per code, ``(N, n_latent, D)``.

``D`` is the generator's ``style_dim``; ``n_latent`` its number of W+ entries (SWAGAN: 12 at 256²,
16 at 1024²).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

Tensor = torch.Tensor
LayerRange = Tuple[int, Optional[int]]  # [start, end); end None = up to n_latent


def as_rows(d: Tensor) -> Tensor:
    """A direction's accepted layouts as rows: ``(D,)`` → ``(1, D)`` and ``(1, L, D)`` → ``(L, D)``; any
    other shape is returned as it is, for the caller to check and name."""
    if d.dim() == 3 and d.shape[0] == 1:
        d = d[0]
    if d.dim() == 1:
        d = d.unsqueeze(0)
    return d


def as_direction(direction: Tensor, n_latent: int, style_dim: int, what: str = "direction") -> Tensor:
    """Normalise a direction to ``(1, D)`` or ``(n_latent, D)``.

    Accepts ``(D,)``, ``(1, D)``, ``(n_latent, D)`` and ``(1, n_latent, D)``; anything else, a wrong
    ``D``, or non-finite values raise ``ValueError`` with one line naming the problem.
    """
    d = torch.as_tensor(direction)
    shape = tuple(d.shape)
    d = as_rows(d)
    if d.dim() != 2:
        raise ValueError(f"{what} must have shape (D,), (1, D), ({n_latent}, D) or (1, {n_latent}, D) "
                         f"with D={style_dim}, got {shape}")
    if d.shape[1] != style_dim:
        raise ValueError(f"{what} has dimension {d.shape[1]} but the generator's W has style_dim={style_dim} "
                         f"(shape {shape})")
    if d.shape[0] not in (1, n_latent):
        raise ValueError(f"{what} has {d.shape[0]} W+ entries but the generator has n_latent={n_latent} "
                         f"(shape {shape})")
    if not d.is_floating_point():
        d = d.float()
    if not torch.isfinite(d).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return d


def parse_layer_range(text: str) -> LayerRange:
    """``"START:END"`` → ``(start, end)``; ``"START:"`` leaves ``end`` open (None); ``":END"`` starts at 0."""
    parts = text.split(":")
    if len(parts) != 2:
        raise ValueError(f"layer range must look like START:END (W+ entries [START, END)), got {text!r}")
    try:
        start = int(parts[0]) if parts[0].strip() else 0
        end = int(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise ValueError(f"layer range must hold integers, START:END, got {text!r}") from None
    return start, end


def check_layer_range(layer_range: Union[LayerRange, Sequence[int]], n_latent: int) -> Tuple[int, int]:
    """Resolve an open end and check ``0 <= start < end <= n_latent``."""
    start, end = layer_range
    end = n_latent if end is None else int(end)
    start = int(start)
    if not 0 <= start < end <= n_latent:
        raise ValueError(f"layer range {start}:{end} is outside the W+ entries 0:{n_latent} "
                         f"(need 0 <= START < END <= {n_latent})")
    return start, end


def restrict_layers(direction: Tensor, n_latent: int,
                    layer_range: Optional[Union[LayerRange, Sequence[int]]]) -> Tensor:
    """Keep a direction only on W+ entries ``[start, end)``.

    ``direction`` ``(1, D)`` or ``(n_latent, D)`` → ``(n_latent, D)`` with zero rows outside the range;
    also works on per-code directions ``(N, n_latent, D)``. ``layer_range=None`` returns it unchanged.
    """
    if layer_range is None:
        return direction
    start, end = check_layer_range(layer_range, n_latent)
    if direction.dim() == 2:
        direction = direction.expand(n_latent, -1)
    mask = torch.zeros(n_latent, 1, dtype=direction.dtype, device=direction.device)
    mask[start:end] = 1
    return direction * mask


def shift_latents(w_plus: Tensor, direction: Tensor, strength: float) -> Tensor:
    """``w+ + strength · direction``: ``w_plus`` ``(N, n_latent, D)``; ``direction`` ``(1, D)``,
    ``(n_latent, D)`` or per code ``(N, n_latent, D)``."""
    if w_plus.dim() != 3:
        raise ValueError(f"w_plus must be (N, n_latent, D), got {tuple(w_plus.shape)}")
    return w_plus + float(strength) * direction.to(w_plus)
