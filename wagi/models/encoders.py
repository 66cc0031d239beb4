"""Inversion encoders of the pSp family: image -> W+ offsets from ``latent_avg``.

Every encoder maps an image ``(N, input_nc, S, S)`` (S = ``image_size``, the size it was built for) to
``(N, n_latent, style_dim)`` DELTAS; the caller forms ``w_plus = latent_avg + E(x)`` (ReStyle: adds them to
the previous step's latent, see :meth:`wagi.models.wagi.WaGI.encode`). ``n_latent`` is the generator's ``G.n_latent``
(SWAGAN: 12 at 256, 16 at 1024; StyleGAN2 would be 14 / 18), never ``2 * log2(size) - 2``.

- ``psp``: :class:`GradualStyleEncoder`, one map2style block per entry; coarse / middle / fine entries read
  c3 / p2 / p1 of an FPN over the backbone taps (pSp);
- ``e4e``: :class:`Encoder4Editing`, one base code from c3 broadcast to all entries plus per-entry deltas from
  c3 / p2 / p1, progressive stages (e4e; HFGI's encoder);
- ``restyle``: :class:`BackboneEncoder`, all entries from c3, no FPN, 6-channel input (ReStyle-pSp);
- ``restyle_e4e``: :class:`Encoder4Editing` without FPN (all from c3), 6-channel input (ReStyle-e4e).

The heads are registered in :data:`ENCODER_HEADS` (``encoder.kind``) with two properties the model and the
trainer read: ``iterative`` (ReStyle's refinement loop on ``cat([x, x_hat])``, ``encoder.n_iters`` steps)
and ``progressive`` (e4e's growing number of active deltas, driven by ``encoder.progressive_every``).
A new head is one builder function here with ``@register_head(name, iterative=..., progressive=...)``
(``docs/extending.md``).

Backbones (:mod:`wagi.models.backbones`): ``ir_se50``, ``resnet34``, ``small``; all expose the taps
c1 (S/4), c2 (S/8), c3 (S/16), so the heads here do not depend on the backbone. Head sizes follow the input
size: a map2style block on an ``s x s`` map has ``log2(s)`` stride-2 convs (4 on c3 at S = 256, 2 at S = 64).

State_dict names: ``backbone.*`` (pSp's ``input_layer`` / ``body`` or ReStyle's ``conv1`` / ``bn1`` / ``relu`` /
``body`` under that prefix), and pSp's head names ``styles.{i}.convs.{0,2,..}``, ``styles.{i}.linear``,
``latlayer1``, ``latlayer2``.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from wagi.models.backbones import BACKBONES, TAP_REDUCTIONS, BackboneFeatures, build_backbone
from wagi.models.layers import EqualLinear
from wagi.registry import Registry

# builder(trunk, n_latent=, image_size=, style_dim=, head_channels=) -> module; info: iterative, progressive
ENCODER_HEADS: Registry[Callable[..., nn.Module]] = Registry("encoder kind", "encoder.kind")
RESTYLE_INPUT_NC = 6  # cat([x, current reconstruction]) along channels
HEAD_LRELU_SLOPE = 0.01  # pSp's map2style blocks use nn.LeakyReLU() with its default slope

# Coarse / middle / fine styles as in StyleGAN (Karras et al. 2019, sec. 3.1): entries that drive 4-8 px
# features (pose, shape), 16-32 px (features, expression), >= 64 px (colour, micro-structure).
COARSE_MAX_RESOLUTION = 8
MIDDLE_MAX_RESOLUTION = 32
FIRST_FEATURE_RESOLUTION = 4  # the constant input of StyleGAN2 / SWAGAN


# ------------------------------------------------------------------------------------------------
# the coarse / middle / fine split


def latent_resolutions(n_latent: int) -> List[int]:
    """Feature resolution of the convolutions that each W+ entry modulates.

    In rosinality's StyleGAN2 and SWAGAN, entry 0 drives ``conv1`` at 4 px; for k >= 1 entry ``2k - 1`` drives the
    upsampling conv that produces ``2^(k+2)`` px features (and the previous ToRGB / ToWavelets) and entry ``2k``
    the second conv at that resolution; the last entry drives only the final ToRGB / ToWavelets, on the features
    of the last convs. Hence ``res(i) = 4 * 2^ceil(min(i, n_latent - 2) / 2)``. SWAGAN-256 (12 entries):
    ``[4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 128]``.
    """
    if not isinstance(n_latent, int) or n_latent < 2:
        raise ValueError(f"n_latent must be an int >= 2 (take it from G.n_latent), got {n_latent!r}")
    return [FIRST_FEATURE_RESOLUTION * 2 ** math.ceil(min(i, n_latent - 2) / 2) for i in range(n_latent)]


def style_split(n_latent: int) -> Tuple[int, int]:
    """``(coarse_end, middle_end)``: entries ``[0, coarse_end)`` are coarse, ``[coarse_end, middle_end)`` middle,
    ``[middle_end, n_latent)`` fine, by the feature resolution each entry drives (:func:`latent_resolutions`):
    coarse <= 8 px, middle 16-32 px, fine >= 64 px.

    SWAGAN: 12 -> (3, 7) i.e. 3/4/5 entries; 16 -> (3, 7) i.e. 3/4/9. For StyleGAN2 the same rule gives pSp's
    hard-coded ``coarse_ind = 3, middle_ind = 7`` (18 -> 3/4/11, 14 -> 3/4/7). Generators below 128 px have no
    fine entries (SWAGAN-64, 8 entries: 3/5/0).
    """
    res = latent_resolutions(n_latent)
    coarse_end = sum(r <= COARSE_MAX_RESOLUTION for r in res)
    middle_end = sum(r <= MIDDLE_MAX_RESOLUTION for r in res)
    return coarse_end, middle_end


def _check_sizes(n_latent: int, image_size: int) -> None:
    style_split(n_latent)
    _log2_exact(image_size, "image_size")
    if image_size // TAP_REDUCTIONS[-1] < 2:
        raise ValueError(f"image_size must be >= {2 * TAP_REDUCTIONS[-1]} (c3 at least 2x2), got {image_size}")


def _log2_exact(value: int, what: str) -> int:
    k = int(round(math.log2(value))) if value > 0 else -1
    if k < 0 or 2 ** k != value:
        raise ValueError(f"{what} must be a power of two, got {value}")
    return k


# ------------------------------------------------------------------------------------------------
# heads


class GradualStyleBlock(nn.Module):
    """pSp's map2style block: ``log2(spatial)`` stride-2 3x3 convs (+ LeakyReLU 0.01) down to 1x1, then EqualLinear.

    ``(N, in_channels, spatial, spatial) -> (N, style_dim)``. Keys ``convs.{0,2,4,..}.{weight,bias}``,
    ``linear.{weight,bias}``; with ``hidden_channels == style_dim == 512`` exactly pSp's block.
    """

    def __init__(self, in_channels: int, hidden_channels: int, spatial: int, style_dim: int):
        super().__init__()
        n_down = _log2_exact(spatial, "GradualStyleBlock spatial size")
        if n_down < 1:
            raise ValueError(f"GradualStyleBlock needs a feature map of at least 2x2, got {spatial}x{spatial}")
        layers: List[nn.Module] = []
        ch = in_channels
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, hidden_channels, kernel_size=3, stride=2, padding=1),
                       nn.LeakyReLU(HEAD_LRELU_SLOPE)]
            ch = hidden_channels
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(hidden_channels, style_dim)
        self.spatial = spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


def _upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class _StyleEncoder(nn.Module):
    """Shared validation and bookkeeping: a backbone, ``n_latent`` entries, an input size."""

    def __init__(self, backbone: nn.Module, n_latent: int, image_size: int, style_dim: int,
                 head_channels: Optional[int]):
        super().__init__()
        _check_sizes(n_latent, image_size)
        self.coarse_end, self.middle_end = style_split(n_latent)
        self.backbone = backbone
        self.input_nc: int = backbone.input_nc
        self.n_latent = n_latent
        self.image_size = image_size
        self.style_dim = style_dim
        self.head_channels = head_channels or style_dim
        self.tap_sizes: Tuple[int, int, int] = tuple(image_size // r for r in TAP_REDUCTIONS)  # type: ignore
        self.tap_channels: Tuple[int, int, int] = tuple(backbone.out_channels)  # type: ignore

    def _features(self, x: torch.Tensor) -> BackboneFeatures:
        expected = (self.input_nc, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{type(self).__name__} expects (N, {self.input_nc}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(x.shape)}; resize the image to the encoder's size")
        return self.backbone(x)

    def _source(self, i: int, use_fpn: bool) -> int:
        """Which map entry i reads: 0 = c3, 1 = p2, 2 = p1."""
        if not use_fpn or i < self.coarse_end:
            return 0
        return 1 if i < self.middle_end else 2

    def _build_heads(self, use_fpn: bool) -> None:
        c1_ch, c2_ch, c3_ch = self.tap_channels
        _, s2, s3 = self.tap_sizes
        sizes = (s3, s2, self.tap_sizes[0])
        self.styles = nn.ModuleList(
            GradualStyleBlock(c3_ch, self.head_channels, sizes[self._source(i, use_fpn)], self.style_dim)
            for i in range(self.n_latent)
        )
        sources = {self._source(i, use_fpn) for i in range(self.n_latent)}
        # FPN laterals project to c3's width (pSp: 512); built only when some entry reads them
        if sources & {1, 2}:
            self.latlayer1 = nn.Conv2d(c2_ch, c3_ch, kernel_size=1)
        if 2 in sources:
            self.latlayer2 = nn.Conv2d(c1_ch, c3_ch, kernel_size=1)
        self._max_source = max(sources)

    def _maps(self, feats: BackboneFeatures) -> List[torch.Tensor]:
        maps = [feats.c3]
        if self._max_source >= 1:
            maps.append(_upsample_add(maps[0], self.latlayer1(feats.c2)))
        if self._max_source >= 2:
            maps.append(_upsample_add(maps[1], self.latlayer2(feats.c1)))
        return maps

    def extra_repr(self) -> str:
        return (f"n_latent={self.n_latent}, style_dim={self.style_dim}, image_size={self.image_size}, "
                f"input_nc={self.input_nc}, split=({self.coarse_end}, {self.middle_end})")


class GradualStyleEncoder(_StyleEncoder):
    """pSp encoder: FPN over the backbone taps, one :class:`GradualStyleBlock` per W+ entry.

    p2 = up(c3) + latlayer1(c2) (S/8), p1 = up(p2) + latlayer2(c1) (S/4), bilinear with align_corners; coarse
    entries read c3, middle p2, fine p1 (:func:`style_split`). ``forward``: ``(N, input_nc, S, S)`` ->
    ``(N, n_latent, style_dim)`` deltas. With IR-SE50, S = 256 and ``head_channels = style_dim = 512`` the
    parameters match pSp's ``GradualStyleEncoder`` (180.6 M for 12 entries).
    """

    def __init__(self, backbone: nn.Module, n_latent: int, image_size: int = 256, style_dim: int = 512,
                 head_channels: Optional[int] = None):
        super().__init__(backbone, n_latent, image_size, style_dim, head_channels)
        self._build_heads(use_fpn=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self._maps(self._features(x))
        return torch.stack([style(maps[self._source(i, True)]) for i, style in enumerate(self.styles)], dim=1)


class Encoder4Editing(_StyleEncoder):
    """e4e encoder: ``out[:, i] = w0 + delta_i`` with ``w0 = styles[0](c3)`` broadcast to every entry and
    ``delta_i = styles[i](map_i)`` for ``1 <= i <= progressive_stage`` (0 for later entries).

    ``use_fpn=True`` (e4e, the encoder of HFGI): delta maps are c3 / p2 / p1 by the coarse / middle / fine split;
    ``use_fpn=False`` (ReStyle-e4e): every head reads c3. ``progressive_stage`` (default ``n_latent - 1``: all
    deltas, e4e's "Inference") is raised during training by :meth:`set_progressive_stage`. The e4e delta
    regulariser reads the deltas as ``out[:, 1:] - out[:, :1]``.
    ``forward``: ``(N, input_nc, S, S)`` -> ``(N, n_latent, style_dim)`` (offsets from ``latent_avg``).
    """

    def __init__(self, backbone: nn.Module, n_latent: int, image_size: int = 256, style_dim: int = 512,
                 head_channels: Optional[int] = None, use_fpn: bool = True,
                 progressive_stage: Optional[int] = None):
        super().__init__(backbone, n_latent, image_size, style_dim, head_channels)
        self.use_fpn = use_fpn
        self._build_heads(use_fpn)
        self.progressive_stage = n_latent - 1
        if progressive_stage is not None:
            self.set_progressive_stage(progressive_stage)

    def set_progressive_stage(self, stage: int) -> None:
        """Number of active deltas: 0 = W only (all entries equal w0), ``n_latent - 1`` = all."""
        if not 0 <= int(stage) <= self.n_latent - 1:
            raise ValueError(f"progressive_stage must be in [0, {self.n_latent - 1}], got {stage}")
        self.progressive_stage = int(stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self._maps(self._features(x))
        w0 = self.styles[0](maps[0])
        deltas = [torch.zeros_like(w0)]
        for i in range(1, self.n_latent):
            if i <= self.progressive_stage:
                deltas.append(self.styles[i](maps[self._source(i, self.use_fpn)]))
            else:
                deltas.append(torch.zeros_like(w0))
        return w0.unsqueeze(1) + torch.stack(deltas, dim=1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", use_fpn={self.use_fpn}, progressive_stage={self.progressive_stage}"


class BackboneEncoder(_StyleEncoder):
    """ReStyle's encoder: every W+ entry from its own :class:`GradualStyleBlock` on c3, no FPN.

    Built with ``input_nc = 6`` for ReStyle (input ``cat([x, x_hat])``). ``forward``: ``(N, input_nc, S, S)`` ->
    ``(N, n_latent, style_dim)`` deltas (from ``latent_avg`` at step 0, from the previous latent after).
    """

    def __init__(self, backbone: nn.Module, n_latent: int, image_size: int = 256, style_dim: int = 512,
                 head_channels: Optional[int] = None):
        super().__init__(backbone, n_latent, image_size, style_dim, head_channels)
        self._build_heads(use_fpn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c3 = self._features(x).c3
        return torch.stack([style(c3) for style in self.styles], dim=1)


# ------------------------------------------------------------------------------------------------
# registry and factory


def register_head(name: str, iterative: bool = False, progressive: bool = False):
    """Register a head builder ``fn(trunk, n_latent=, image_size=, style_dim=, head_channels=) -> nn.Module``
    under ``encoder.kind`` ``name``. ``iterative``: a ReStyle-style head (6-channel input ``cat([x, x_hat])``,
    ``encoder.n_iters`` refinement steps); ``progressive``: the module has ``set_progressive_stage(k)`` and
    ``progressive_stage`` (e4e's schedule, see ``encoder.progressive_every``)."""
    return ENCODER_HEADS.register(name, iterative=bool(iterative), progressive=bool(progressive))


def head_input_nc(kind: str) -> int:
    """Image channels the head ``kind`` reads: 6 for iterative heads (``cat([x, x_hat])``), else 3."""
    return RESTYLE_INPUT_NC if ENCODER_HEADS.info(kind)["iterative"] else 3


@register_head("psp")
def _psp(trunk: nn.Module, **common) -> nn.Module:
    return GradualStyleEncoder(trunk, **common)


@register_head("e4e", progressive=True)
def _e4e(trunk: nn.Module, **common) -> nn.Module:
    return Encoder4Editing(trunk, use_fpn=True, **common)


@register_head("restyle", iterative=True)
def _restyle(trunk: nn.Module, **common) -> nn.Module:
    return BackboneEncoder(trunk, **common)


@register_head("restyle_e4e", iterative=True, progressive=True)
def _restyle_e4e(trunk: nn.Module, **common) -> nn.Module:
    return Encoder4Editing(trunk, use_fpn=False, **common)


def build_encoder(
    kind: str,
    backbone: str,
    n_latent: int,
    input_nc: Optional[int] = None,
    image_size: int = 256,
    style_dim: int = 512,
    head_channels: Optional[int] = None,
    **backbone_kwargs,
) -> nn.Module:
    """Build an inversion encoder ``(N, input_nc, image_size, image_size) -> (N, n_latent, style_dim)`` deltas.

    Args:
        kind: a key of :data:`ENCODER_HEADS`: ``'psp'``, ``'e4e'``, ``'restyle'``, ``'restyle_e4e'`` (see the
            module docstring) or a registered one.
        backbone: a key of :data:`wagi.models.backbones.BACKBONES`: ``'ir_se50'``, ``'resnet34'``, ``'small'``.
        n_latent: ``G.n_latent`` of the generator (12 for SWAGAN-256, 16 for SWAGAN-1024).
        input_nc: image channels; None = 6 for the iterative (ReStyle) kinds (``cat([x, x_hat])``), 3 otherwise.
        image_size: input size S the heads are sized for (256 in the paper setting, 64-128 for the demo);
            a power of two >= 32.
        style_dim: W dimension.
        head_channels: width of the map2style convs; None = ``style_dim`` (pSp's 512), or c3's width for a
            backbone registered with ``narrow_heads`` (``small``: 128 by default, which keeps the demo light).
        backbone_kwargs: options of :func:`wagi.models.backbones.build_backbone`, e.g. ``weights=path`` (IR-SE50
            ``model_ir_se50.pth`` / torchvision ResNet-34 state_dict, loaded strictly with a logged report),
            ``num_layers``, ``mode``, ``channels``, ``units``.
    """
    head = ENCODER_HEADS[kind]
    narrow = BACKBONES.info(backbone)["narrow_heads"]
    _check_sizes(n_latent, image_size)  # before any heavy backbone construction or weight loading
    if input_nc is None:
        input_nc = head_input_nc(kind)
    trunk = build_backbone(backbone, input_nc, **backbone_kwargs)
    if head_channels is None:
        head_channels = trunk.out_channels[-1] if narrow else style_dim
    return head(trunk, n_latent=n_latent, image_size=image_size, style_dim=style_dim, head_channels=head_channels)


_PSP_TRUNK_PREFIXES: Tuple[str, ...] = ("input_layer.", "body.", "conv1.", "bn1.", "relu.")


def psp_encoder_keys_to_wagi(state_dict) -> dict:
    """Rename the keys of a pSp / e4e / ReStyle encoder state_dict (``encoder.`` prefix already removed) to this
    module's layout: trunk keys (``input_layer``, ``body``, ``conv1``, ``bn1``, ``relu``) gain ``backbone.``;
    head keys (``styles.*``, ``latlayer*``) are unchanged. Load the result strictly; its ``styles`` count must
    equal ``n_latent``.
    """
    return {("backbone." + k if k.startswith(_PSP_TRUNK_PREFIXES) else k): v for k, v in state_dict.items()}
