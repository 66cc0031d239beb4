"""Fused bias + leaky ReLU + gain: ``scale * leaky_relu(x + bias, negative_slope)``, bias over dim 1.

``x``: any shape ``(N, C, ...)`` (rank >= 2 with a bias, any rank without); ``bias``: ``(C,)``; the
output has the shape (and, on CUDA, the memory format) of ``x``.

``fused_leaky_relu`` runs the CUDA kernel (``csrc/bias_act.cu``) for CUDA tensors and the PyTorch
reference ``fused_leaky_relu_ref`` otherwise (``WAGI_OPS_IMPL``: see ``wagi.ops._plugin``). Both have
gradients of any order. The fused backward is ``grad * scale * (x + bias > 0 ? 1 : negative_slope)``,
with the sign read from the saved output (so no copy of the input is kept), and the bias gradient is
that sum over every dim but 1. Reading the sign from the output needs ``negative_slope >= 0``; other
slopes run the reference.
"""
from __future__ import annotations

import functools
from types import ModuleType
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _plugin

SQRT2 = 2 ** 0.5  # gain that keeps the activation variance of a leaky ReLU near 1 (StyleGAN2)
CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_bias(x: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
    if bias is None:
        return
    if x.dim() < 2:
        raise ValueError(f"a bias needs x of rank >= 2 (bias along dim 1), got x {tuple(x.shape)}")
    if bias.dim() != 1 or bias.shape[0] != x.shape[1]:
        raise ValueError(f"bias must have shape ({x.shape[1]},), got {tuple(bias.shape)}")


def fused_leaky_relu_ref(x: torch.Tensor, bias: Optional[torch.Tensor] = None, negative_slope: float = 0.2,
                         scale: float = SQRT2) -> torch.Tensor:
    """Pure-PyTorch reference: any rank >= 2 (bias broadcast along dim 1), autograd to any order."""
    _check_bias(x, bias)
    if bias is not None:
        x = x + bias.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))
    return F.leaky_relu(x, negative_slope) * scale


class BiasActImpl(NamedTuple):
    """Value-only kernels behind the autograd Functions: ``forward(x, bias, slope, scale)`` and
    ``grad(grad_out, out, slope, scale)``."""
    forward: Callable[..., torch.Tensor]
    grad: Callable[..., torch.Tensor]


def _positive(out: torch.Tensor, scale: float) -> torch.Tensor:
    """Where ``x + bias > 0``, read from ``out = scale * leaky_relu(x + bias)`` (needs slope >= 0)."""
    return out < 0 if scale < 0 else out > 0


def _ref_grad(grad_out: torch.Tensor, out: torch.Tensor, negative_slope: float, scale: float) -> torch.Tensor:
    g = grad_out * scale
    return torch.where(_positive(out, scale), g, g * negative_slope)


REF_IMPL = BiasActImpl(fused_leaky_relu_ref, _ref_grad)


class _FusedLeakyReLUFn(torch.autograd.Function):
    """Forward through ``impl.forward``; backward through ``_FusedLeakyReLUGradFn`` (differentiable)."""

    @staticmethod
    def forward(ctx, x, bias, negative_slope: float, scale: float, impl: BiasActImpl):
        out = impl.forward(x, bias, negative_slope, scale)
        ctx.save_for_backward(out)
        ctx.negative_slope, ctx.scale, ctx.impl = negative_slope, scale, impl
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_x = _FusedLeakyReLUGradFn.apply(grad_out, out, ctx.negative_slope, ctx.scale, ctx.impl)
        if ctx.needs_input_grad[1]:
            grad_bias = grad_x.sum(dim=[d for d in range(grad_x.dim()) if d != 1])
        if not ctx.needs_input_grad[0]:
            grad_x = None
        return grad_x, grad_bias, None, None, None


class _FusedLeakyReLUGradFn(torch.autograd.Function):
    """``grad_out -> grad_out * scale * (positive ? 1 : slope)``: linear in ``grad_out`` with a piecewise
    constant factor, so its own gradient is the same map and nothing flows to ``out``."""

    @staticmethod
    def forward(ctx, grad_out, out, negative_slope: float, scale: float, impl: BiasActImpl):
        ctx.save_for_backward(out)
        ctx.negative_slope, ctx.scale, ctx.impl = negative_slope, scale, impl
        return impl.grad(grad_out, out, negative_slope, scale)

    @staticmethod
    def backward(ctx, grad_grad):
        (out,) = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0]:
            grad = _FusedLeakyReLUGradFn.apply(grad_grad, out, ctx.negative_slope, ctx.scale, ctx.impl)
        return grad, None, None, None, None


@functools.cache
def _plugin_impl(plugin: ModuleType) -> BiasActImpl:
    return BiasActImpl(plugin.bias_act, plugin.bias_act_grad)


def fused_leaky_relu(x: torch.Tensor, bias: Optional[torch.Tensor] = None, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> torch.Tensor:
    """Bias + leaky ReLU + gain with the fastest available implementation (see the module docstring)."""
    _check_bias(x, bias)
    negative_slope, scale = float(negative_slope), float(scale)
    if x.dtype in CUDA_DTYPES and negative_slope >= 0:
        plugin = _plugin.plugin_for(x)
        if plugin is not None:
            if bias is not None:
                bias = bias.to(device=x.device, dtype=x.dtype)
            return _FusedLeakyReLUFn.apply(x, bias, negative_slope, scale, _plugin_impl(plugin))
    return fused_leaky_relu_ref(x, bias, negative_slope, scale)


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias (state_dict key ``bias``, shape ``(channel,)``), leaky ReLU and gain."""

    def __init__(self, channel: int, bias: bool = True, negative_slope: float = 0.2, scale: float = SQRT2):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)

    def extra_repr(self) -> str:
        channels = self.bias.shape[0] if self.bias is not None else None
        return f"{channels}, negative_slope={self.negative_slope}, scale={self.scale:.4f}"
