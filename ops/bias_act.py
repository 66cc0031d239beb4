"""Fused bias + leaky ReLU + gain: ``scale * leaky_relu(x + bias, negative_slope)``, bias over dim 1."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

SQRT2 = 2 ** 0.5  # gain that keeps the activation variance of a leaky ReLU near 1 (StyleGAN2)


def fused_leaky_relu_ref(x: torch.Tensor, bias: Optional[torch.Tensor] = None, negative_slope: float = 0.2,
                         scale: float = SQRT2) -> torch.Tensor:
    """Pure-PyTorch reference: any rank >= 2 (bias broadcast along dim 1), autograd to any order."""
    if bias is not None:
        if bias.dim() != 1 or bias.shape[0] != x.shape[1]:
            raise ValueError(f"bias must have shape ({x.shape[1]},), got {tuple(bias.shape)}")
        x = x + bias.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))
    return F.leaky_relu(x, negative_slope) * scale


def fused_leaky_relu(x: torch.Tensor, bias: Optional[torch.Tensor] = None, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> torch.Tensor:
    """Bias + leaky ReLU + gain with the fastest available implementation."""
    return fused_leaky_relu_ref(x, bias, negative_slope, scale)


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias (state_dict key ``bias``), leaky ReLU and gain."""

    def __init__(self, channel: int, bias: bool = True, negative_slope: float = 0.2, scale: float = SQRT2):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)
