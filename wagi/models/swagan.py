"""SWAGAN generator and discriminator (Gal et al. 2021), compatible with rosinality's ``swagan.py``.

The state_dict keys, buffers included, are those of rosinality/stylegan2-pytorch at commit bef283a,
so its ``g_ema`` / ``d`` load with ``strict=True`` and give the same images for the same weights,
latents and noise (161 generator keys at 256, 213 at 1024; 92 discriminator keys at 256). With
``Generator(..., to_rgb_kernel=3)`` the same keys hold the official TensorFlow SWAGAN's 3x3 ToWavelet
convs (converted by :mod:`wagi.swagan_tf`).

SWAGAN synthesises **Haar wavelet coefficients**: at every feature resolution ``r`` (4 ... size/2)
a ToRGB branch produces a 12-channel map ``(N, 12, r, r)`` = ``[LL | LH | HL | HH]`` x RGB, the
one-level Haar transform of an image of size ``2r``. The skip chain upsamples the running sum in
the wavelet domain (inverse Haar, FIR upsample, Haar) and adds the next branch; a final inverse
Haar gives the ``(N, 3, size, size)`` image. The Haar transform itself is :mod:`wagi.wavelets`;
the modules here only register rosinality's 2x2 kernel buffers for key compatibility.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from wagi import wavelets
from wagi.models.layers import (
    DEFAULT_BLUR_KERNEL,
    ConstantInput,
    ConvLayer,
    Downsample,
    EqualLinear,
    ModulatedConv2d,
    PixelNorm,
    StyledConv,
    Upsample,
)

IMAGE_CHANNELS = 3
WAVELET_CHANNELS = 4 * IMAGE_CHANNELS  # [LL | LH | HL | HH] per colour
HIGH_CHANNELS = slice(IMAGE_CHANNELS, WAVELET_CHANNELS)  # LH, HL, HH: what the wavelet fusion may change
INPUT_SIZE = 4  # resolution of the learned constant input
STDDEV_GROUP = 4  # minibatch standard deviation group size of the discriminator
STDDEV_EPS = 1e-8

Tensor = torch.Tensor
Styles = Union[Tensor, Sequence[Tensor]]


def default_channels(channel_multiplier: int = 2, channel_max: Optional[int] = None) -> Dict[int, int]:
    """rosinality's channel table ``{resolution: channels}`` (4 ... 1024), optionally capped at ``channel_max``."""
    table = {
        4: 512, 8: 512, 16: 512, 32: 512,
        64: 256 * channel_multiplier, 128: 128 * channel_multiplier, 256: 64 * channel_multiplier,
        512: 32 * channel_multiplier, 1024: 16 * channel_multiplier,
    }
    if channel_max is not None:
        if channel_max < 1:
            raise ValueError(f"channel_max must be positive, got {channel_max}")
        table = {r: min(c, channel_max) for r, c in table.items()}
    return table


def _channel_table(channels: Optional[Mapping], channel_multiplier: int, channel_max: Optional[int],
                   needed: Sequence[int], who: str) -> Dict[int, int]:
    if channels is None:
        return default_channels(channel_multiplier, channel_max)
    table = {int(r): int(c) for r, c in channels.items()}
    missing = [r for r in needed if r not in table]
    if missing:
        raise ValueError(f"{who} channels table misses resolutions {missing} (needs {list(needed)})")
    bad = {r: c for r, c in table.items() if c < 1}
    if bad:
        raise ValueError(f"{who} channels must be positive, got {bad}")
    if channel_max is not None:
        table = {r: min(c, channel_max) for r, c in table.items()}
    return table


def _check_size(size: int, who: str, minimum: int) -> int:
    size = int(size)
    if size < minimum or size & (size - 1):
        raise ValueError(f"{who} size must be a power of two >= {minimum}, got {size}")
    return size


def haar_kernels() -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """rosinality's 2x2 Haar kernels ``ll, lh, hl, hh`` (entries +-0.5), built as outer products
    (first factor along height) of ``l = [1, 1]/sqrt 2`` and ``h = [-1, 1]/sqrt 2`` in float32."""
    low = torch.ones(1, 2) / math.sqrt(2)
    h = torch.ones(1, 2) / math.sqrt(2)
    h[0, 0] = -h[0, 0]
    return low.T * low, h.T * low, low.T * h, h.T * h


class HaarTransform(nn.Module):
    """One-level Haar DWT ``(N, C, H, W)`` to ``(N, 4C, H/2, W/2)`` ``[LL | LH | HL | HH]``.

    Computed by :func:`wagi.wavelets.dwt`; the buffers ``ll, lh, hl, hh`` only mirror rosinality's
    state_dict (its analysis kernels) and are not read.
    """

    def __init__(self, in_channels: int = IMAGE_CHANNELS):
        super().__init__()
        ll, lh, hl, hh = haar_kernels()
        self.register_buffer("ll", ll)
        self.register_buffer("lh", lh)
        self.register_buffer("hl", hl)
        self.register_buffer("hh", hh)

    def forward(self, x: Tensor) -> Tensor:
        return wavelets.dwt(x)


class InverseHaarTransform(nn.Module):
    """Inverse Haar ``(N, 4C, h, w)`` to ``(N, C, 2h, 2w)`` by :func:`wagi.wavelets.idwt`.

    The buffers mirror rosinality's synthesis kernels (``ll``, ``-lh``, ``-hl``, ``hh``) and are not read.
    """

    def __init__(self, in_channels: int = IMAGE_CHANNELS):
        super().__init__()
        ll, lh, hl, hh = haar_kernels()
        self.register_buffer("ll", ll)
        self.register_buffer("lh", -lh)
        self.register_buffer("hl", -hl)
        self.register_buffer("hh", hh)

    def forward(self, x: Tensor) -> Tensor:
        return wavelets.idwt(x)


class ToRGB(nn.Module):
    """SWAGAN "ToWavelets": features ``(N, C, r, r)`` to a 12-channel wavelet map ``(N, 12, r, r)``.

    ``branch`` = k x k modulated conv (no demodulation, same padding) + ``bias`` ``(1, 12, 1, 1)``;
    ``kernel_size`` k is 1 in rosinality's SWAGAN and 3 in the official TensorFlow one. With ``upsample``
    the previous skip ``(N, 12, r/2, r/2)`` is carried to resolution r in the wavelet domain:
    inverse Haar (RGB at r), FIR upsample (RGB at 2r), Haar (12 channels at r); ``forward`` returns
    ``branch + upsampled skip``. Keys: ``bias``, [``iwt.*``, ``upsample.kernel``, ``dwt.*``], ``conv.*``.
    """

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL, kernel_size: int = 1):
        super().__init__()
        if upsample:
            self.iwt = InverseHaarTransform(IMAGE_CHANNELS)
            self.upsample = Upsample(blur_kernel)
            self.dwt = HaarTransform(IMAGE_CHANNELS)
        else:
            self.upsample = None
        self.conv = ModulatedConv2d(in_channel, WAVELET_CHANNELS, kernel_size, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, WAVELET_CHANNELS, 1, 1))

    def branch(self, x: Tensor, style: Tensor) -> Tensor:
        """The level's own wavelet coefficients ``conv(x, style) + bias``, ``(N, 12, r, r)``."""
        return self.conv(x, style) + self.bias

    def upsample_skip(self, skip: Tensor) -> Tensor:
        """Carry a skip ``(N, 12, r/2, r/2)`` to ``(N, 12, r, r)``: Haar(Upsample(inverse Haar(skip)))."""
        if self.upsample is None:
            raise RuntimeError("this ToRGB has no upsampling path (it is the first level)")
        return self.dwt(self.upsample(self.iwt(skip)))

    def forward(self, x: Tensor, style: Tensor, skip: Optional[Tensor] = None) -> Tensor:
        out = self.branch(x, style)
        if skip is not None:
            out = out + self.upsample_skip(skip)
        return out


class Generator(nn.Module):
    """SWAGAN generator: mapping network + wavelet-domain synthesis network.

    Args:
        size: output resolution (power of two >= 8); features run from 4 to ``size/2``.
        style_dim: dimension of Z and W (512 in rosinality's ``train.py``).
        n_mlp: number of mapping layers (8).
        channel_multiplier: scales the channel table at resolutions >= 64 (rosinality's table).
        blur_kernel: 1-D FIR kernel of the resampling filters.
        lr_mlp: learning-rate multiplier of the mapping network.
        channels: optional ``{feature resolution: channels}`` overriding the table (keys 4 ... size/2),
            e.g. for small demo generators; keys may be ints or strings.
        channel_max: optional cap applied to the table (default or given).
        to_rgb_kernel: spatial size of the ToRGB ("ToWavelet") modulated convs: 1 in rosinality's
            SWAGAN (the default), 3 in the official TensorFlow SWAGAN (weights ``(1, 12, C, 3, 3)``,
            same key names). Odd, so that the convs keep the map size.

    Attributes: ``size, style_dim, log_size = log2(size) - 1, num_layers = 2 (log_size - 2) + 1``
    (noise inputs), ``n_latent = 2 log_size - 2`` (12 at 256, 16 at 1024: two fewer than StyleGAN2),
    ``channels``, modules ``style, input, conv1, to_rgb1, convs, to_rgbs, noises, iwt``.

    W+ index to layers (``@r`` = feature resolution; SWAGAN-256 uses indices 0-11)::

        index  layers                          index  layers
        0      conv1@4                         6      convs.5@32
        1      to_rgb1@4, convs.0@8            7      to_rgbs.2@32, convs.6@64
        2      convs.1@8                       8      convs.7@64
        3      to_rgbs.0@8, convs.2@16         9      to_rgbs.3@64, convs.8@128
        4      convs.3@16                      10     convs.9@128
        5      to_rgbs.1@16, convs.4@32        11     to_rgbs.4@128 (+ convs.10@256 at 1024)

    At 1024: 12 convs.11@256, 13 to_rgbs.5@256 + convs.12@512, 14 convs.13@512, 15 to_rgbs.6@512.
    In general block k (features ``2^(k+3)``) uses index ``2k+1`` for its upsampling conv (shared
    with the previous ToRGB), ``2k+2`` for its second conv and ``2k+3`` for its ToRGB.

    The synthesis is split in two so that a second pass that only changes the wavelet skip (the
    wavelet fusion) can reuse the first: :meth:`synthesize` runs the convolutions and returns each
    level's ToRGB branch, :meth:`compose` runs the cheap skip chain. ``forward`` = mapping /
    truncation / mixing + ``synthesize`` + ``compose``.
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL, lr_mlp: float = 0.01,
                 channels: Optional[Mapping] = None, channel_max: Optional[int] = None, to_rgb_kernel: int = 1):
        super().__init__()
        self.size = _check_size(size, "Generator", minimum=2 * INPUT_SIZE)
        if int(to_rgb_kernel) != to_rgb_kernel or to_rgb_kernel < 1 or to_rgb_kernel % 2 == 0:
            raise ValueError(f"to_rgb_kernel must be a positive odd integer, got {to_rgb_kernel!r}")
        to_rgb_kernel = int(to_rgb_kernel)
        self.style_dim = int(style_dim)
        self.log_size = int(math.log2(self.size)) - 1  # features stop at size/2: the last IWT doubles
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        feature_res = [2 ** i for i in range(2, self.log_size + 1)]
        self.channels = _channel_table(channels, channel_multiplier, channel_max, feature_res, "Generator")
        self.config = {
            "size": self.size, "style_dim": self.style_dim, "n_mlp": int(n_mlp),
            "channel_multiplier": int(channel_multiplier), "blur_kernel": [float(k) for k in blur_kernel],
            "lr_mlp": float(lr_mlp),
            "channels": None if channels is None and channel_max is None
            else {r: self.channels[r] for r in feature_res},
            "to_rgb_kernel": to_rgb_kernel,
        }

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)])

        c4 = self.channels[INPUT_SIZE]
        self.input = ConstantInput(c4, size=INPUT_SIZE)
        self.conv1 = StyledConv(c4, c4, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False, kernel_size=to_rgb_kernel)

        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty; kept because rosinality's module has it
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = 2 ** ((layer_idx + 5) // 2)  # 4, 8, 8, 16, 16, ...
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, res, res))

        in_channel = c4
        for res in feature_res[1:]:
            out_channel = self.channels[res]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, blur_kernel=blur_kernel, kernel_size=to_rgb_kernel))
            in_channel = out_channel
        self.iwt = InverseHaarTransform(IMAGE_CHANNELS)

    # ------------------------------------------------------------------ utilities
    @property
    def feature_resolutions(self) -> List[int]:
        """Feature (and wavelet skip) resolutions 4, 8, ..., size/2, one per ToRGB level."""
        return [2 ** i for i in range(2, self.log_size + 1)]

    def set_fused_modconv(self, fused: bool) -> Generator:
        """Choose the grouped (``True``, rosinality's) or input-scaling evaluation of every modulated conv."""
        for m in self.modules():
            if isinstance(m, ModulatedConv2d):
                m.fused = bool(fused)
        return self

    def make_noise(self) -> List[Tensor]:
        """Fresh noise maps ``(1, 1, r, r)`` for every noise input, on the device / dtype of ``input.input``."""
        ref = self.input.input
        return [torch.randn(1, 1, r, r, device=ref.device, dtype=ref.dtype) for r in self._noise_resolutions()]

    def _noise_resolutions(self) -> List[int]:
        return [2 ** ((i + 5) // 2) for i in range(self.num_layers)]

    @torch.no_grad()
    def mean_latent(self, n_latent: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Mean of ``n_latent`` mapped samples, ``(1, style_dim)``; ``generator`` seeds the draw (CPU)."""
        ref = self.input.input
        z = torch.randn(n_latent, self.style_dim, generator=generator, dtype=ref.dtype)
        return self.style(z.to(ref.device)).mean(0, keepdim=True)

    def get_latent(self, z: Tensor) -> Tensor:
        """Map Z ``(N, style_dim)`` to W ``(N, style_dim)``."""
        return self.style(z)

    # ------------------------------------------------------------------ latents
    def styles_to_latent(self, styles: Styles, inject_index: Optional[int] = None, truncation: float = 1,
                         truncation_latent: Optional[Tensor] = None, input_is_latent: bool = False) -> Tensor:
        """Mapping, truncation and style mixing of :meth:`forward`; returns W+ ``(N, n_latent, style_dim)``."""
        if isinstance(styles, Tensor):
            styles = [styles]
        styles = list(styles)
        if not 1 <= len(styles) <= 2:
            raise ValueError(f"styles must be a list of 1 or 2 tensors, got {len(styles)}")
        for s in styles:
            if not isinstance(s, Tensor):
                raise TypeError(f"styles must hold tensors, got {type(s).__name__}")
            if s.shape[-1] != self.style_dim:
                raise ValueError(f"styles must end with style_dim={self.style_dim}, got {tuple(s.shape)}")
        if not input_is_latent:
            if any(s.dim() != 2 for s in styles):
                raise ValueError("Z styles must be (N, style_dim); pass W+ codes with input_is_latent=True")
            styles = [self.style(s) for s in styles]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. mean_latent(4096))")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]

        if len(styles) == 1:
            s = styles[0]
            if s.dim() == 2:
                return s.unsqueeze(1).repeat(1, self.n_latent, 1)
            if s.dim() == 3 and s.shape[1] == self.n_latent:
                return s
            raise ValueError(f"a W+ style must be (N, n_latent={self.n_latent}, {self.style_dim}), "
                             f"got {tuple(s.shape)}")
        if any(s.dim() != 2 for s in styles):
            raise ValueError("style mixing needs two (N, style_dim) styles")
        if styles[0].shape[0] != styles[1].shape[0]:
            raise ValueError(f"mixed styles need the same batch, got {styles[0].shape[0]} and {styles[1].shape[0]}")
        if inject_index is None:
            inject_index = int(torch.randint(1, self.n_latent, ()).item())
        if not 1 <= inject_index <= self.n_latent - 1:
            raise ValueError(f"inject_index must be in [1, {self.n_latent - 1}], got {inject_index}")
        first = styles[0].unsqueeze(1).repeat(1, inject_index, 1)
        second = styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)
        return torch.cat([first, second], 1)

    def _resolve_noise(self, noise: Optional[Sequence[Optional[Tensor]]], randomize_noise: bool
                       ) -> List[Optional[Tensor]]:
        if noise is None:
            if randomize_noise:
                return [None] * self.num_layers
            return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        noise = list(noise)
        if len(noise) != self.num_layers:
            raise ValueError(f"noise must be a list of {self.num_layers} maps (or None), got {len(noise)}")
        for i, (n, r) in enumerate(zip(noise, self._noise_resolutions())):
            if n is not None and (n.dim() != 4 or tuple(n.shape[1:]) != (1, r, r)):
                raise ValueError(f"noise[{i}] must be (N or 1, 1, {r}, {r}), got {tuple(n.shape)}")
        return noise

    # ------------------------------------------------------------------ synthesis
    def synthesize(self, latent: Tensor, noise: Optional[Sequence[Optional[Tensor]]] = None,
                   randomize_noise: bool = True,
                   feature_conditions: Optional[Mapping[int, Tuple[Tensor, Tensor]]] = None) -> List[Tensor]:
        """Run the convolutions for W+ ``latent`` ``(N, n_latent, style_dim)``.

        Returns the per-level ToRGB branches (modulated conv + bias, before any skip is added):
        ``[(N, 12, 4, 4), (N, 12, 8, 8), ..., (N, 12, size/2, size/2)]``. None of them depends on
        the skip chain, so :meth:`compose` can be re-run with other wavelet corrections for free.

        ``feature_conditions`` (HFGI-style): ``{r: (scale, shift)}``, each ``(N or 1, C_r, r, r)``,
        r in 8 ... size/2; after the upsampling StyledConv of block r and before its second conv the
        features become ``F * (1 + scale) + shift``.
        """
        if latent.dim() != 3 or latent.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"latent must be (N, n_latent={self.n_latent}, style_dim={self.style_dim}), "
                             f"got {tuple(latent.shape)}")
        noise = self._resolve_noise(noise, randomize_noise)
        conditions = self._check_feature_conditions(feature_conditions, latent.shape[0])

        out = self.conv1(self.input(latent), latent[:, 0], noise=noise[0])
        branches = [self.to_rgb1.branch(out, latent[:, 1])]
        i = 1
        for k, to_rgb in enumerate(self.to_rgbs):
            res = 2 ** (k + 3)
            out = self.convs[2 * k](out, latent[:, i], noise=noise[2 * k + 1])
            if res in conditions:
                scale, shift = conditions[res]
                out = out * (1 + scale) + shift
            out = self.convs[2 * k + 1](out, latent[:, i + 1], noise=noise[2 * k + 2])
            branches.append(to_rgb.branch(out, latent[:, i + 2]))
            i += 2
        return branches

    def compose(self, branches: Sequence[Tensor],
                wavelet_corrections: Optional[Mapping[int, Tensor]] = None) -> Tensor:
        """Skip chain and final inverse Haar: ToRGB branches to the image ``(N, 3, size, size)``.

        ``skip = branches[0]``; for each next level ``skip = branch + Haar(Upsample(IHaar(skip)))``.
        ``wavelet_corrections`` ``{r: (N or 1, 9, r, r)}`` (r in 4 ... size/2) are added to the
        high-frequency channels 3:12 (LH, HL, HH) of the skip right after level r; LL is never touched.
        """
        if len(branches) != len(self.to_rgbs) + 1:
            raise ValueError(f"compose needs {len(self.to_rgbs) + 1} branches, got {len(branches)}")
        corrections = self._check_wavelet_corrections(wavelet_corrections, branches[0].shape[0])
        skip = self._correct(branches[0], corrections.get(INPUT_SIZE))
        for k, to_rgb in enumerate(self.to_rgbs):
            skip = branches[k + 1] + to_rgb.upsample_skip(skip)
            skip = self._correct(skip, corrections.get(2 ** (k + 3)))
        return self.iwt(skip)

    def correction_image(self, wavelet_corrections: Mapping[int, Tensor]) -> Tensor:
        """The image change ``(N, 3, size, size)`` that ``wavelet_corrections`` (as for :meth:`compose`) make.

        The skip chain and the final inverse Haar are linear, so ``compose(b, C) − compose(b)`` is the same
        for every set of branches ``b``: the chain run on the corrections alone, from the coarsest corrected
        level (the levels below it carry zeros). Equal to ``compose(b, C) − compose(b)`` up to round-off.
        """
        if not wavelet_corrections:
            raise ValueError("correction_image needs at least one correction")
        batch = max(int(c.shape[0]) for c in wavelet_corrections.values() if isinstance(c, Tensor))
        corrections = self._check_wavelet_corrections(wavelet_corrections, batch)
        skip: Optional[Tensor] = None
        for i, r in enumerate(self.feature_resolutions):
            if skip is not None:
                skip = self.to_rgbs[i - 1].upsample_skip(skip)
            c = corrections.get(r)
            if c is None:
                continue
            coeffs = torch.cat([c.new_zeros(c.shape[0], IMAGE_CHANNELS, r, r), c], dim=1)
            skip = coeffs if skip is None else skip + coeffs
        return self.iwt(skip)

    @staticmethod
    def _correct(skip: Tensor, correction: Optional[Tensor]) -> Tensor:
        if correction is None:
            return skip
        return torch.cat([skip[:, :IMAGE_CHANNELS], skip[:, HIGH_CHANNELS] + correction], dim=1)

    def _check_wavelet_corrections(self, corrections: Optional[Mapping[int, Tensor]], batch: int
                                   ) -> Dict[int, Tensor]:
        if not corrections:
            return {}
        allowed = self.feature_resolutions
        out = {}
        for r, c in corrections.items():
            if r not in allowed:
                raise ValueError(f"wavelet_corrections: unknown resolution {r!r}, allowed {allowed}")
            expected = (WAVELET_CHANNELS - IMAGE_CHANNELS, r, r)
            if not isinstance(c, Tensor) or c.dim() != 4 or tuple(c.shape[1:]) != expected \
                    or c.shape[0] not in (1, batch):
                shape = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
                raise ValueError(f"wavelet_corrections[{r}] must be (N={batch} or 1, 9, {r}, {r}), got {shape}")
            out[int(r)] = c
        return out

    def _check_feature_conditions(self, conditions: Optional[Mapping[int, Tuple[Tensor, Tensor]]], batch: int
                                  ) -> Dict[int, Tuple[Tensor, Tensor]]:
        if not conditions:
            return {}
        allowed = self.feature_resolutions[1:]
        out = {}
        for r, pair in conditions.items():
            if r not in allowed:
                raise ValueError(f"feature_conditions: unknown resolution {r!r}, allowed {allowed}")
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"feature_conditions[{r}] must be a (scale, shift) pair")
            expected = (self.channels[r], r, r)
            for name, t in zip(("scale", "shift"), pair):
                if not isinstance(t, Tensor) or t.dim() != 4 or tuple(t.shape[1:]) != expected \
                        or t.shape[0] not in (1, batch):
                    shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                    raise ValueError(f"feature_conditions[{r}] {name} must be (N={batch} or 1, {expected[0]}, "
                                     f"{r}, {r}), got {shape}")
            out[int(r)] = (pair[0], pair[1])
        return out

    def forward(self, styles: Styles, return_latents: bool = False, inject_index: Optional[int] = None,
                truncation: float = 1, truncation_latent: Optional[Tensor] = None, input_is_latent: bool = False,
                noise: Optional[Sequence[Optional[Tensor]]] = None, randomize_noise: bool = True,
                wavelet_corrections: Optional[Mapping[int, Tensor]] = None,
                feature_conditions: Optional[Mapping[int, Tuple[Tensor, Tensor]]] = None
                ) -> Tuple[Tensor, Optional[Tensor]]:
        """Generate images ``(N, 3, size, size)``; returns ``(image, W+ latent or None)``.

        ``styles``: a list of one or two tensors: Z ``(N, style_dim)`` (mapped by ``style``) or, with
        ``input_is_latent``, W ``(N, style_dim)`` (broadcast to all layers) or W+ ``(N, n_latent,
        style_dim)``. Two styles are mixed at ``inject_index`` (random in [1, n_latent - 1] when None).
        ``truncation < 1`` moves each style towards ``truncation_latent``. ``noise``: a list of
        ``num_layers`` maps ``(N or 1, 1, r, r)`` (entries may be None = fresh); without it
        ``randomize_noise`` chooses fresh noise (True) or the registered ``noises.noise_i`` (False,
        deterministic). ``wavelet_corrections``: see :meth:`compose`; ``feature_conditions``: see
        :meth:`synthesize`. Without the two hooks the result is rosinality's.
        """
        latent = self.styles_to_latent(styles, inject_index=inject_index, truncation=truncation,
                                       truncation_latent=truncation_latent, input_is_latent=input_is_latent)
        branches = self.synthesize(latent, noise=noise, randomize_noise=randomize_noise,
                                   feature_conditions=feature_conditions)
        image = self.compose(branches, wavelet_corrections)
        return image, (latent if return_latents else None)


class ConvBlock(nn.Module):
    """Discriminator block: 3x3 conv, then 3x3 conv with blur + stride 2 (keys ``conv1.*``, ``conv2.*``)."""

    def __init__(self, in_channel: int, out_channel: int, blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class FromRGB(nn.Module):
    """Discriminator input branch at one level.

    ``forward(wavelets, skip)``: with ``downsample`` the 12-channel wavelet input ``(N, 12, 2r, 2r)``
    is first carried to ``(N, 12, r, r)`` (inverse Haar, FIR downsample, Haar); a 3x3 ConvLayer
    12 -> C gives features added to ``skip``. Returns ``(wavelets at this level, features)``.
    Keys: [``iwt.*``, ``downsample.kernel``, ``dwt.*``], ``conv.0.weight`` ``(C, 12, 3, 3)``, ``conv.1.bias``.
    """

    def __init__(self, out_channel: int, downsample: bool = True, blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL):
        super().__init__()
        if downsample:
            self.iwt = InverseHaarTransform(IMAGE_CHANNELS)
            self.downsample = Downsample(blur_kernel)
            self.dwt = HaarTransform(IMAGE_CHANNELS)
        else:
            self.downsample = None
        self.conv = ConvLayer(WAVELET_CHANNELS, out_channel, 3)

    def forward(self, x: Tensor, skip: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if self.downsample is not None:
            x = self.dwt(self.downsample(self.iwt(x)))
        out = self.conv(x)
        if skip is not None:
            out = out + skip
        return x, out


class Discriminator(nn.Module):
    """SWAGAN discriminator on the wavelet pyramid of the image; ``(N, 3, size, size)`` to logits ``(N, 1)``.

    Keys as rosinality at bef283a (FromRGB 3x3 conv): ``dwt.*``, ``from_rgbs.{0..log_size-2}``,
    ``convs.{0..log_size-3}``, ``final_conv``, ``final_linear``. As in rosinality the first FromRGB
    uses ``channels[size]`` for its ``size/2`` features. Minibatch standard deviation over groups of
    ``min(N, 4)`` samples: N must be divisible by the group size.

    ``channels`` overrides the table (keys 4 ... size); ``channel_max`` caps it.
    """

    def __init__(self, size: int, channel_multiplier: int = 2, blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
                 channels: Optional[Mapping] = None, channel_max: Optional[int] = None):
        super().__init__()
        self.size = _check_size(size, "Discriminator", minimum=4 * INPUT_SIZE)
        log_size = int(math.log2(self.size)) - 1
        needed = [2 ** i for i in range(2, log_size + 2)]
        self.channels = _channel_table(channels, channel_multiplier, channel_max, needed, "Discriminator")
        self.config = {
            "size": self.size, "channel_multiplier": int(channel_multiplier),
            "blur_kernel": [float(k) for k in blur_kernel],
            "channels": None if channels is None and channel_max is None else {r: self.channels[r] for r in needed},
        }
        ch = self.channels

        self.dwt = HaarTransform(IMAGE_CHANNELS)
        self.from_rgbs = nn.ModuleList()
        self.convs = nn.ModuleList()
        in_channel = ch[self.size]
        for i in range(log_size, 2, -1):
            out_channel = ch[2 ** (i - 1)]
            self.from_rgbs.append(FromRGB(in_channel, downsample=i != log_size, blur_kernel=blur_kernel))
            self.convs.append(ConvBlock(in_channel, out_channel, blur_kernel))
            in_channel = out_channel
        self.from_rgbs.append(FromRGB(ch[4], blur_kernel=blur_kernel))

        self.stddev_group = STDDEV_GROUP
        self.stddev_feat = 1
        self.final_conv = ConvLayer(in_channel + 1, ch[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu"),
            EqualLinear(ch[4], 1),
        )

    def forward(self, image: Tensor) -> Tensor:
        if image.dim() != 4 or tuple(image.shape[1:]) != (IMAGE_CHANNELS, self.size, self.size):
            raise ValueError(f"Discriminator expects (N, 3, {self.size}, {self.size}), got {tuple(image.shape)}")
        x = self.dwt(image)
        out = None
        for from_rgb, conv in zip(self.from_rgbs, self.convs):
            x, out = from_rgb(x, out)
            out = conv(out)
        _, out = self.from_rgbs[-1](x, out)

        batch, channel, height, width = out.shape
        group = min(batch, self.stddev_group)
        if batch % group:
            raise ValueError(f"Discriminator batch {batch} must be divisible by the stddev group size {group}")
        stddev = out.view(group, -1, self.stddev_feat, channel // self.stddev_feat, height, width)
        stddev = torch.sqrt(stddev.var(0, unbiased=False) + STDDEV_EPS)
        stddev = stddev.mean([2, 3, 4], keepdim=True).squeeze(2)
        stddev = stddev.repeat(group, 1, height, width)
        out = torch.cat([out, stddev], 1)
        out = self.final_conv(out)
        return self.final_linear(out.reshape(batch, -1))
