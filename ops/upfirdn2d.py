"""upfirdn2d: upsample by zero insertion, pad (or crop), FIR-filter, downsample.

Semantics follow rosinality's ``upfirdn2d(input, kernel, up, down, pad)`` so that SWAGAN modules and
buffers match its checkpoints:

* ``x``: ``(N, C, H, W)``; ``kernel``: ``(kh, kw)``, applied to every channel as a true convolution
  (the kernel is flipped, as in signal processing);
* ``up`` / ``down``: int or ``(x, y)`` pair;
* ``pad``: ``(p0, p1)`` = (before, after) on both axes, or ``(x0, x1, y0, y1)``; negative values crop;
* output size per axis: ``(in * up + p0 + p1 - k) // down + 1``.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F

IntPair = Union[int, Sequence[int]]


def _pair(v: IntPair, name: str) -> Tuple[int, int]:
    if isinstance(v, int):
        return v, v
    v = tuple(int(i) for i in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or an (x, y) pair, got {v}")
    return v  # type: ignore[return-value]


def parse_pad(pad: Sequence[int]) -> Tuple[int, int, int, int]:
    """Return ``(x0, x1, y0, y1)`` from a 2-tuple (before, after on both axes) or a 4-tuple."""
    pad = tuple(int(p) for p in pad)
    if len(pad) == 2:
        return pad[0], pad[1], pad[0], pad[1]
    if len(pad) == 4:
        return pad  # type: ignore[return-value]
    raise ValueError(f"pad must have 2 or 4 entries, got {pad}")


def upfirdn2d_ref(x: torch.Tensor, kernel: torch.Tensor, up: IntPair = 1, down: IntPair = 1,
                  pad: Sequence[int] = (0, 0)) -> torch.Tensor:
    """Pure-PyTorch upfirdn2d (any device/dtype, autograd to any order). See the module docstring."""
    if x.dim() != 4:
        raise ValueError(f"upfirdn2d expects (N, C, H, W), got {tuple(x.shape)}")
    if kernel.dim() != 2:
        raise ValueError(f"upfirdn2d expects a 2-D kernel, got {tuple(kernel.shape)}")
    upx, upy = _pair(up, "up")
    downx, downy = _pair(down, "down")
    px0, px1, py0, py1 = parse_pad(pad)
    n, c, h, w = x.shape
    kh, kw = kernel.shape

    # Zero insertion: each sample followed by (up - 1) zeros along each axis.
    y = x.reshape(n * c, 1, h, 1, w, 1)
    y = F.pad(y, [0, upx - 1, 0, 0, 0, upy - 1])
    y = y.reshape(n * c, 1, h * upy, w * upx)

    # Positive pads add zeros; negative pads crop.
    y = F.pad(y, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    y = y[:, :, max(-py0, 0): y.shape[2] - max(-py1, 0), max(-px0, 0): y.shape[3] - max(-px1, 0)]

    # True convolution = cross-correlation with the flipped kernel.
    weight = torch.flip(kernel, [0, 1]).to(dtype=x.dtype, device=x.device).reshape(1, 1, kh, kw)
    y = F.conv2d(y, weight)
    y = y[:, :, ::downy, ::downx]
    return y.reshape(n, c, y.shape[2], y.shape[3])


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: IntPair = 1, down: IntPair = 1,
              pad: Sequence[int] = (0, 0)) -> torch.Tensor:
    """upfirdn2d with the fastest available implementation (see the module docstring)."""
    return upfirdn2d_ref(x, kernel, up=up, down=down, pad=pad)
