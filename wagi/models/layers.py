"""Building blocks of StyleGAN2 / SWAGAN with rosinality's state_dict names and numerics.

Every module keeps the parameter and buffer names of rosinality's ``model.py`` so that its
checkpoints load with ``strict=True``. Equalised learning rate: weights are stored with unit
variance (divided by ``lr_mul``) and rescaled at run time by ``lr_mul / sqrt(fan_in)``.

Shapes: images and feature maps are ``(N, C, H, W)``; styles (W vectors) are ``(N, style_dim)``.
FIR kernels are 2-D buffers named ``kernel``; filtering goes through :func:`wagi.ops.upfirdn2d`
(true convolution, rosinality padding convention) and bias + leaky ReLU + gain through
:func:`wagi.ops.fused_leaky_relu`. Nothing here calls ``.cuda()``: modules follow their inputs.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from wagi.ops import FusedLeakyReLU, fused_leaky_relu, upfirdn2d

DEFAULT_BLUR_KERNEL: Tuple[int, ...] = (1, 3, 3, 1)  # binomial low-pass of StyleGAN2's resampling
PIXELNORM_EPS = 1e-8
DEMOD_EPS = 1e-8
RESAMPLE_FACTOR = 2  # every resampling step in StyleGAN2 / SWAGAN doubles or halves the size


def make_kernel(k: Sequence[float]) -> torch.Tensor:
    """2-D FIR kernel from a 1-D one (outer product with itself) or a 2-D one, normalised to sum 1."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    if k.ndim != 2:
        raise ValueError(f"blur kernel must be 1-D or 2-D, got shape {tuple(k.shape)}")
    return k / k.sum()


class PixelNorm(nn.Module):
    """Normalise each vector to unit RMS over dim 1: ``x * rsqrt(mean(x**2, 1) + 1e-8)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + PIXELNORM_EPS)


class Upsample(nn.Module):
    """Upsample ``(N, C, H, W)`` to ``(N, C, fH, fW)``: zero insertion + FIR low-pass (buffer ``kernel``).

    The kernel is scaled by ``factor**2`` to keep the mean after zero insertion; the padding centres
    the filter so that output pixel centres sit halfway between input ones (StyleGAN2 alignment).
    """

    def __init__(self, kernel: Sequence[float] = DEFAULT_BLUR_KERNEL, factor: int = RESAMPLE_FACTOR):
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel) * (factor ** 2)
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, down=1, pad=self.pad)


class Downsample(nn.Module):
    """FIR low-pass then keep every ``factor``-th sample: ``(N, C, H, W)`` to ``(N, C, H/f, W/f)``."""

    def __init__(self, kernel: Sequence[float] = DEFAULT_BLUR_KERNEL, factor: int = RESAMPLE_FACTOR):
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel)
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=1, down=self.factor, pad=self.pad)


class Blur(nn.Module):
    """FIR filter with explicit padding ``pad = (before, after)`` on both axes (buffer ``kernel``).

    ``upsample_factor > 1`` scales the kernel by ``factor**2``: used after a stride-2 transposed
    convolution, whose output is zero-inserted like an upsampled signal.
    """

    def __init__(self, kernel: Sequence[float], pad: Tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * (upsample_factor ** 2)
        self.register_buffer("kernel", k)
        self.pad = tuple(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate: ``conv(x, weight / sqrt(in * k * k)) + bias``.

    Keys: ``weight`` ``(out, in, k, k)``, ``bias`` ``(out,)`` (optional).
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, {k}, stride={self.stride}, padding={self.padding}"


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate and a learning-rate multiplier.

    ``y = x @ (weight * lr_mul / sqrt(in)).T + bias * lr_mul``; with ``activation='fused_lrelu'`` the
    bias goes through :func:`fused_leaky_relu` (leaky ReLU 0.2, gain sqrt 2). Keys: ``weight``
    ``(out, in)`` stored as ``randn / lr_mul``, ``bias`` ``(out,)`` initialised to ``bias_init``.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: Optional[str] = None):
        super().__init__()
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"EqualLinear activation must be None or 'fused_lrelu', got {activation!r}")
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias=bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution.

    ``s = modulation(w)`` ``(N, in)`` (EqualLinear, bias initialised to 1); per sample
    ``W'[o, i] = W[o, i] * s[i] / sqrt(in * k * k)``; with ``demodulate`` each output filter is
    rescaled by ``rsqrt(sum_{i, kh, kw} W'^2 + 1e-8)``.

    * plain: ``(N, in, H, W)`` to ``(N, out, H, W)`` (same padding);
    * ``upsample``: stride-2 transposed conv (``2H + k - 2``) then Blur to ``(N, out, 2H, 2W)``;
    * ``downsample``: Blur then stride-2 conv to ``(N, out, H/2, W/2)``.

    Two equivalent evaluations (same keys, same result up to float rounding):

    * ``fused=True`` (default, rosinality's): one grouped convolution with ``groups = N`` and a
      per-sample weight; with ``N == 1`` it is an ordinary convolution;
    * ``fused=False``: scale the input channels by ``s``, convolve with the shared weight, multiply
      the output channels by the demodulation coefficients. Cheaper for large batches.

    Keys: ``weight`` ``(1, out, in, k, k)``, ``modulation.weight`` ``(in, style_dim)``,
    ``modulation.bias`` ``(in,)``, ``blur.kernel`` when resampling.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, downsample: bool = False,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL, fused: bool = True):
        super().__init__()
        if upsample and downsample:
            raise ValueError("ModulatedConv2d cannot both upsample and downsample")
        self.kernel_size = kernel_size
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.upsample = upsample
        self.downsample = downsample
        self.demodulate = demodulate
        self.fused = fused

        factor = RESAMPLE_FACTOR
        if upsample:
            # The transposed conv grows the map by (k - 1) beyond 2H; the blur pads so that its
            # output is exactly 2H and the up-sampling stays centred.
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        if downsample:
            # Pad for both the blur and the following unpadded k x k stride-2 conv.
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))

        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, demodulate={self.demodulate}, "
                f"upsample={self.upsample}, downsample={self.downsample}, fused={self.fused}")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, in_channel, height, width = x.shape
        if in_channel != self.in_channel:
            raise ValueError(f"ModulatedConv2d expects {self.in_channel} input channels, got {in_channel}")
        if style.dim() != 2 or style.shape[0] != batch:
            raise ValueError(f"style must be (N={batch}, style_dim), got {tuple(style.shape)}")
        s = self.modulation(style)  # (N, in)
        if self.fused:
            return self._forward_grouped(x, s)
        return self._forward_scaled_input(x, s)

    def _forward_grouped(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        batch, in_channel, height, width = x.shape
        k, out_channel = self.kernel_size, self.out_channel
        weight = self.scale * self.weight * s.view(batch, 1, in_channel, 1, 1)  # (N, out, in, k, k)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + DEMOD_EPS)
            weight = weight * demod.view(batch, out_channel, 1, 1, 1)

        if self.upsample:
            x = x.reshape(1, batch * in_channel, height, width)
            # conv_transpose2d wants (in, out / groups, k, k) per group.
            weight = weight.transpose(1, 2).reshape(batch * in_channel, out_channel, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = out.reshape(batch, out_channel, out.shape[-2], out.shape[-1])
            return self.blur(out)

        weight = weight.reshape(batch * out_channel, in_channel, k, k)
        if self.downsample:
            x = self.blur(x)
            x = x.reshape(1, batch * in_channel, x.shape[-2], x.shape[-1])
            out = F.conv2d(x, weight, padding=0, stride=2, groups=batch)
        else:
            x = x.reshape(1, batch * in_channel, height, width)
            out = F.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.reshape(batch, out_channel, out.shape[-2], out.shape[-1])

    def _forward_scaled_input(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        batch, in_channel = x.shape[:2]
        weight = self.scale * self.weight.squeeze(0)  # (out, in, k, k)
        dcoefs = None
        if self.demodulate:
            w = weight.unsqueeze(0) * s.view(batch, 1, in_channel, 1, 1)
            dcoefs = torch.rsqrt(w.pow(2).sum([2, 3, 4]) + DEMOD_EPS)  # (N, out)
        x = x * s.view(batch, in_channel, 1, 1)
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), padding=0, stride=2))
        elif self.downsample:
            out = F.conv2d(self.blur(x), weight, padding=0, stride=2)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if dcoefs is not None:
            out = out * dcoefs.view(batch, -1, 1, 1)
        return out


class NoiseInjection(nn.Module):
    """``x + weight * noise`` with a learned scalar ``weight`` (init 0).

    ``noise`` is ``(N or 1, 1, H, W)``; ``None`` draws fresh standard normal noise per sample.
    """

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        if noise is None:
            batch, _, height, width = x.shape
            noise = x.new_empty(batch, 1, height, width).normal_()
        elif noise.dim() != 4 or noise.shape[1] != 1 or noise.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"noise must be (N or 1, 1, {x.shape[-2]}, {x.shape[-1]}), got {tuple(noise.shape)}")
        # In x's dtype: under autocast x is bf16 / fp16 and the fp32 weight * noise would promote the whole
        # feature map back to fp32 (a round trip per layer); in fp32 the cast is a no-op.
        return x + (self.weight * noise).to(x.dtype)


class ConstantInput(nn.Module):
    """Learned constant ``input`` ``(1, C, size, size)`` repeated over the batch of ``ref``."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, ref: torch.Tensor) -> torch.Tensor:
        return self.input.repeat(ref.shape[0], 1, 1, 1)


class StyledConv(nn.Module):
    """Modulated conv, noise injection, bias + leaky ReLU (keys ``conv.*``, ``noise.weight``, ``activate.bias``)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL, demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel, demodulate=demodulate)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ConvLayer(nn.Sequential):
    """[Blur] + EqualConv2d + [bias + leaky ReLU], an ``nn.Sequential`` (keys ``0.*``, ``1.*``, ``2.*``).

    With ``downsample`` the layers are ``0`` Blur, ``1`` stride-2 conv, ``2`` FusedLeakyReLU;
    otherwise ``0`` conv (same padding), ``1`` FusedLeakyReLU. The bias lives in the activation
    when there is one, in the conv otherwise.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL, bias: bool = True, activate: bool = True):
        layers = []
        if downsample:
            factor = RESAMPLE_FACTOR
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, padding=padding, stride=stride,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel, bias=bias))
        super().__init__(*layers)
