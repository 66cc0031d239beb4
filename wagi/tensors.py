"""Small tensor utilities shared by the model, the losses, training and editing.

One resize for every image tensor that must meet a fixed square size (encoder input, loss resolution,
fusion scales, edit benchmarks): exact block means when shrinking by a power of two, as pSp's
``face_pool`` does.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` to ``(N, C, size, size)``; ``None`` or an equal size returns ``x`` itself.

    Shrinking (``H >= size`` and ``W >= size``) uses adaptive average pooling (the exact block mean for an
    integer factor: 512 -> 256 is a 2x2 mean); anything else is bilinear (``align_corners=False``).
    """
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    if x.shape[-2] >= size and x.shape[-1] >= size:
        return F.adaptive_avg_pool2d(x, (size, size))
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


__all__ = ["resize"]
