"""upfirdn2d: upsample by zero insertion, pad (or crop), FIR-filter, downsample.

Semantics follow rosinality's ``upfirdn2d(input, kernel, up, down, pad)`` so that SWAGAN modules and
buffers match its checkpoints:

* ``x``: ``(N, C, H, W)``; ``kernel``: ``(kh, kw)``, applied to every channel as a true convolution
  (the kernel is flipped, as in signal processing);
* ``up`` / ``down``: int or ``(x, y)`` pair;
* ``pad``: ``(p0, p1)`` = (before, after) on both axes, or ``(x0, x1, y0, y1)``; negative values crop
  (NVlabs' 2-list means ``[x, y]`` instead: a different convention);
* output size per axis: ``(in * up + p0 + p1 - k) // down + 1``.

``upfirdn2d`` runs the CUDA kernel (``csrc/upfirdn2d.cu``) for CUDA tensors and the pure-PyTorch
``upfirdn2d_ref`` otherwise; ``WAGI_OPS_IMPL`` and the build are described in ``wagi.ops._plugin``.
On the CUDA path the kernel is a constant (as in rosinality): a kernel that requires grad is routed to
the reference, which differentiates it. Gradients w.r.t. ``x`` exist to any order: the gradient of
upfirdn2d is upfirdn2d of the gradient with the flipped kernel, ``up`` and ``down`` swapped, and pads
chosen so that the shapes match (``_grad_geometry``).
"""
from __future__ import annotations

import functools
import numbers
from types import ModuleType
from typing import Callable, NamedTuple, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from . import _plugin

IntPair = Union[int, Sequence[int]]
CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Geometry(NamedTuple):
    """Parsed arguments: ``up`` and ``down`` as ``(x, y)``, ``pad`` as ``(x0, x1, y0, y1)``."""
    up: Tuple[int, int]
    down: Tuple[int, int]
    pad: Tuple[int, int, int, int]


def _pair(v: IntPair, name: str) -> Tuple[int, int]:
    if isinstance(v, numbers.Integral):
        v = (v, v)
    v = tuple(int(i) for i in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or an (x, y) pair, got {v}")
    if min(v) < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return v  # type: ignore[return-value]


def parse_pad(pad: Sequence[int]) -> Tuple[int, int, int, int]:
    """Return ``(x0, x1, y0, y1)`` from a 2-tuple (before, after on both axes) or a 4-tuple."""
    pad = tuple(int(p) for p in pad)
    if len(pad) == 2:
        return pad[0], pad[1], pad[0], pad[1]
    if len(pad) == 4:
        return pad  # type: ignore[return-value]
    raise ValueError(f"pad must have 2 or 4 entries, got {pad}")


def output_size(size: int, up: int, down: int, pad0: int, pad1: int, k: int) -> int:
    """Output length along one axis: ``(size * up + pad0 + pad1 - k) // down + 1``."""
    return (size * up + pad0 + pad1 - k) // down + 1


def _geometry(x: torch.Tensor, kernel: torch.Tensor, up: IntPair, down: IntPair, pad: Sequence[int]) -> Geometry:
    if x.dim() != 4:
        raise ValueError(f"upfirdn2d expects (N, C, H, W), got {tuple(x.shape)}")
    if kernel.dim() != 2:
        raise ValueError(f"upfirdn2d expects a 2-D kernel, got {tuple(kernel.shape)}")
    g = Geometry(_pair(up, "up"), _pair(down, "down"), parse_pad(pad))
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = g
    kh, kw = kernel.shape
    if x.shape[3] * upx + px0 + px1 < kw or x.shape[2] * upy + py0 + py1 < kh:
        raise ValueError(f"upfirdn2d: input {tuple(x.shape[2:])} upsampled by {g.up} and padded by {g.pad} "
                         f"is smaller than the kernel {tuple(kernel.shape)}")
    return g


def _upfirdn2d_ref(x: torch.Tensor, kernel: torch.Tensor, g: Geometry) -> torch.Tensor:
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = g
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


def upfirdn2d_ref(x: torch.Tensor, kernel: torch.Tensor, up: IntPair = 1, down: IntPair = 1,
                  pad: Sequence[int] = (0, 0)) -> torch.Tensor:
    """Pure-PyTorch upfirdn2d (any device/dtype, autograd to any order, kernel included). See the module
    docstring."""
    return _upfirdn2d_ref(x, kernel, _geometry(x, kernel, up, down, pad))


def _grad_geometry(g: Geometry, in_hw: Sequence[int], out_hw: Sequence[int], k_hw: Sequence[int]) -> Geometry:
    """Geometry of the op that maps d(out) to d(x).

    Per axis the forward reads ``out[o] = sum_t xup[o*down + t - p0] * k[K-1-t]``; collecting the terms that
    touch ``x[i]`` gives an upfirdn2d of ``d(out)`` upsampled by ``down``, filtered with the flipped kernel
    and decimated by ``up``, with ``p0' = K - 1 - p0``. ``p1' = in*up - out*down + p0 - up + 1`` makes the
    output length exactly ``in`` (also when ``in*up + p0 + p1 - K`` is not a multiple of ``down``: the
    samples the forward's floor division dropped are cropped here).
    """
    (upx, upy), (downx, downy), (px0, _, py0, _) = g
    (in_h, in_w), (out_h, out_w), (kh, kw) = in_hw, out_hw, k_hw
    pad = (kw - 1 - px0, in_w * upx - out_w * downx + px0 - upx + 1,
           kh - 1 - py0, in_h * upy - out_h * downy + py0 - upy + 1)
    return Geometry((downx, downy), (upx, upy), pad)


Forward = Callable[[torch.Tensor, torch.Tensor, Geometry], torch.Tensor]


class _UpFirDn2dFn(torch.autograd.Function):
    """upfirdn2d with an explicit gradient, differentiable to any order w.r.t. ``x``.

    ``forward_impl(x, kernel, geometry)`` computes values only (the CUDA plugin, or the reference for
    tests); the backward calls this Function again, so double backward (R1) works with any forward.
    The kernel is a constant.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, g: Geometry, forward_impl: Forward) -> torch.Tensor:
        if ctx.needs_input_grad[1]:
            raise ValueError("the fused upfirdn2d treats the kernel as a constant; use upfirdn2d_ref "
                             "for kernel gradients")
        ctx.save_for_backward(kernel)
        ctx.geometry, ctx.forward_impl, ctx.in_hw = g, forward_impl, tuple(x.shape[2:])
        return forward_impl(x, kernel, g)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (kernel,) = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            g = _grad_geometry(ctx.geometry, ctx.in_hw, grad_out.shape[2:], kernel.shape)
            grad_x = _UpFirDn2dFn.apply(grad_out, torch.flip(kernel, [0, 1]), g, ctx.forward_impl)
        return grad_x, None, None, None


def _plugin_forward(plugin: ModuleType, x: torch.Tensor, kernel: torch.Tensor, g: Geometry) -> torch.Tensor:
    return plugin.upfirdn2d(x, kernel, *g.up, *g.down, *g.pad)


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: IntPair = 1, down: IntPair = 1,
              pad: Sequence[int] = (0, 0)) -> torch.Tensor:
    """upfirdn2d with the fastest available implementation (see the module docstring).

    Output ``(N, C, (H*upy + py0 + py1 - kh) // downy + 1, (W*upx + px0 + px1 - kw) // downx + 1)``.
    """
    g = _geometry(x, kernel, up, down, pad)
    if x.dtype in CUDA_DTYPES and not (kernel.requires_grad and torch.is_grad_enabled()):
        plugin = _plugin.plugin_for(x)
        if plugin is not None:
            return _UpFirDn2dFn.apply(x, kernel, g, functools.partial(_plugin_forward, plugin))
    return _upfirdn2d_ref(x, kernel, g)
