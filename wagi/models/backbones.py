"""Convolutional backbones of the inversion encoders, their weight loaders, and the ArcFace network.

Every encoder backbone maps an image ``(N, input_nc, S, S)`` to three feature maps ("taps") that
the style heads of :mod:`wagi.models.encoders` read, whatever the backbone::

    c1: (N, C1, S/4,  S/4)      end of the second stage
    c2: (N, C2, S/8,  S/8)      end of the third stage
    c3: (N, C3, S/16, S/16)     end of the fourth (last) stage

returned as a :class:`BackboneFeatures` named tuple; ``backbone.out_channels == (C1, C2, C3)``.

- IR-SE50: ``IRSEBackbone(input_nc, 50)``, (C1, C2, C3) = (128, 256, 512), pSp names
  ``input_layer.{0,1,2}``, ``body.{0..23}``;
- ResNet-34: ``ResNet34Backbone(input_nc)``, (128, 256, 512), ReStyle names ``conv1``, ``bn1``, ``relu``,
  ``body.{0..15}``;
- small (demo): ``SmallBackbone(input_nc)``, (32, 64, 128) by default, IR-SE50's pattern with fewer, narrower units.

IR-SE (the ArcFace trunk of TreB1eN/InsightFace_Pytorch, used by pSp, e4e, ReStyle and HFGI): a stride-1
3x3 stem (``input_layer``: conv, BN, PReLU) and four stages of depth 64/128/256/512 with (3, 4, 14, 3) units
for 50 layers; the first unit of every stage has stride 2, so the stages end at S/2, S/4, S/8, S/16. A unit
is ``res_layer(x) + shortcut_layer(x)`` with ``res_layer`` = BN, 3x3 conv, PReLU, 3x3 conv (stride s), BN
(, squeeze-excitation ``fc1``/``fc2`` in mode ``ir_se``) and ``shortcut_layer`` = a stride-s subsampling
(``MaxPool2d(1, s)``, no parameters) when the depth is unchanged, else a stride-s 1x1 conv + BN.

:class:`IRSEBackboneArcFace` is the full ArcFace recogniser (IR-SE50 + ``output_layer``) whose keys are
exactly those of ``model_ir_se50.pth``; the ID loss uses it.

Weight files load through :func:`load_irse50_weights` and :func:`load_resnet34_weights`, which never skip a
key silently: they return (and log) a :class:`WeightLoadReport` listing what was loaded, adapted, ignored by
design, missing and unexpected, and raise on any mismatch unless ``strict=False``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from wagi.fileio import PathLike
from wagi.registry import Registry

logger = logging.getLogger(__name__)


# (units per stage) of the IR / IR-SE networks, keyed by depth; stage widths are IR_DEPTHS.
IR_STAGE_UNITS: Dict[int, Tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
IR_DEPTHS: Tuple[int, int, int, int] = (64, 128, 256, 512)
IR_MODES: Tuple[str, ...] = ("ir", "ir_se")
SE_REDUCTION = 16  # channel reduction of the squeeze-excitation bottleneck in IR-SE units

SMALL_CHANNELS: Tuple[int, int, int, int] = (16, 32, 64, 128)
SMALL_UNITS: Tuple[int, int, int, int] = (1, 1, 1, 1)

RESNET34_STAGE_UNITS: Tuple[int, int, int, int] = (3, 4, 6, 3)  # BasicBlocks in torchvision layer1..layer4
RESNET_STEM_CHANNELS = 64

TAP_REDUCTIONS: Tuple[int, int, int] = (4, 8, 16)  # c1, c2, c3 are 1/4, 1/8, 1/16 of the input size

ARCFACE_EMBEDDING_DIM = 512
ARCFACE_INPUT_SIZES: Tuple[int, ...] = (112, 224)  # ArcFace output_layer's Linear is sized for these
ARCFACE_DROP_RATIO = 0.6  # as the pSp ID loss builds it; inactive in eval mode

IRSE50_FILE = "model_ir_se50.pth"
IRSE50_SOURCE = (
    "it is the ArcFace IR-SE50 (TreB1eN/InsightFace_Pytorch) that pSp/e4e/ReStyle/HFGI initialise their encoders "
    "from; download 'IR-SE50 Model' from the pixel2style2pixel README (Pretrained Models / auxiliary models) and "
    "pass its path"
)
RESNET34_SOURCE = (
    "expected torchvision's ImageNet ResNet-34 state_dict (resnet34-b627a593.pth, "
    "torchvision.models.ResNet34_Weights.IMAGENET1K_V1; torchvision caches it under $TORCH_HOME/hub/checkpoints "
    "after its first download); pass its path"
)


class BackboneFeatures(NamedTuple):
    """The three taps every backbone returns (see the module docstring for their shapes)."""

    c1: torch.Tensor
    c2: torch.Tensor
    c3: torch.Tensor


def _check_image(x: torch.Tensor, input_nc: int, who: str) -> None:
    if x.dim() != 4 or x.shape[1] != input_nc:
        raise ValueError(f"{who} expects an image (N, {input_nc}, H, W), got shape {tuple(x.shape)}")


# ------------------------------------------------------------------------------------------------
# IR / IR-SE units and networks


class SEModule(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` with bias-free 1x1 convs.

    ``(N, C, H, W) -> (N, C, H, W)``; ``fc1.weight`` ``[C/r, C, 1, 1]``, ``fc2.weight`` ``[C, C/r, 1, 1]``.
    """

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class IRUnit(nn.Module):
    """One improved-residual unit (pSp's ``bottleneck_IR`` / ``bottleneck_IR_SE``).

    ``(N, in, H, W) -> (N, depth, ceil(H/stride), ceil(W/stride))``, computed as
    ``res_layer(x) + shortcut_layer(x)``; key names ``shortcut_layer.{0,1}`` (projection only) and
    ``res_layer.{0: BN, 1: conv3x3, 2: PReLU, 3: conv3x3 stride, 4: BN, 5: SE}``.
    """

    def __init__(self, in_channels: int, depth: int, stride: int, use_se: bool):
        super().__init__()
        if in_channels == depth:
            # a 1x1 max-pool is a parameter-free stride-s subsampling; kept as a module for the pSp layout
            self.shortcut_layer = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(depth),
            )
        layers: List[nn.Module] = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if use_se:
            layers.append(SEModule(depth))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
    """IR / IR-SE network with four stride-2 stages, returning the taps c1, c2, c3.

    Args:
        input_nc: image channels (3 for pSp/e4e, 6 for ReStyle's ``cat([x, x_hat])``).
        depths: widths of the four stages.
        units: units per stage; the first unit of each stage has stride 2.
        mode: ``'ir'`` or ``'ir_se'`` (adds squeeze-excitation to every unit).
        stem_channels: width of ``input_layer`` (default ``depths[0]``).

    ``forward(x)``: ``(N, input_nc, S, S)`` -> :class:`BackboneFeatures` with c1 ``(N, depths[1], S/4, S/4)``,
    c2 ``(N, depths[2], S/8, S/8)``, c3 ``(N, depths[3], S/16, S/16)``.
    """

    def __init__(
        self,
        input_nc: int = 3,
        depths: Sequence[int] = IR_DEPTHS,
        units: Sequence[int] = IR_STAGE_UNITS[50],
        mode: str = "ir_se",
        stem_channels: Optional[int] = None,
    ):
        super().__init__()
        if mode not in IR_MODES:
            raise ValueError(f"IR backbone mode must be one of {IR_MODES}, got {mode!r}")
        if len(depths) != 4 or len(units) != 4 or min(units) < 1:
            raise ValueError(f"IR backbone needs 4 stages with >= 1 unit each, got depths={depths}, units={units}")
        if input_nc < 1:
            raise ValueError(f"input_nc must be >= 1, got {input_nc}")
        stem = stem_channels or depths[0]
        self.input_nc = input_nc
        self.mode = mode
        self.input_layer = nn.Sequential(
            nn.Conv2d(input_nc, stem, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.PReLU(stem),
        )
        body: List[nn.Module] = []
        in_ch = stem
        for depth, n in zip(depths, units):
            for k in range(n):
                body.append(IRUnit(in_ch, depth, stride=2 if k == 0 else 1, use_se=mode == "ir_se"))
                in_ch = depth
        self.body = nn.Sequential(*body)
        stage_ends = [sum(units[: s + 1]) - 1 for s in range(4)]
        self.tap_indices: Tuple[int, int, int] = (stage_ends[1], stage_ends[2], stage_ends[3])
        self.out_channels: Tuple[int, int, int] = (depths[1], depths[2], depths[3])

    def features(self, x: torch.Tensor) -> BackboneFeatures:
        _check_image(x, self.input_nc, type(self).__name__)
        x = self.input_layer(x)
        taps = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.tap_indices:
                taps.append(x)
        return BackboneFeatures(*taps)

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        return self.features(x)


class IRSEBackbone(IRBackbone):
    """The pSp-family encoder trunk: ``IRSEBackbone(input_nc, 50, 'ir_se')`` is IR-SE50 with the keys
    ``input_layer.*`` / ``body.{0..23}.*`` (385 state_dict entries) of ``model_ir_se50.pth``.

    Taps at 256x256 input: c1 = body[6] ``[128, 64, 64]``, c2 = body[20] ``[256, 32, 32]``,
    c3 = body[23] ``[512, 16, 16]``.
    """

    def __init__(self, input_nc: int = 3, num_layers: int = 50, mode: str = "ir_se"):
        if num_layers not in IR_STAGE_UNITS:
            raise ValueError(f"num_layers must be one of {sorted(IR_STAGE_UNITS)}, got {num_layers}")
        super().__init__(input_nc, IR_DEPTHS, IR_STAGE_UNITS[num_layers], mode)
        self.num_layers = num_layers


class SmallBackbone(IRBackbone):
    """A narrow IR network for the demo domain and CPU tests: same topology and taps as IR-SE50
    (stride-1 stem, four stride-2 stages), default widths (16, 32, 64, 128) with one unit per stage,
    so c1/c2/c3 have (32, 64, 128) channels. Built for 64-128 px inputs; about 0.3 M parameters.
    """

    def __init__(
        self,
        input_nc: int = 3,
        channels: Sequence[int] = SMALL_CHANNELS,
        units: Sequence[int] = SMALL_UNITS,
        mode: str = "ir",
    ):
        super().__init__(input_nc, tuple(channels), tuple(units), mode)


class IRSEBackboneArcFace(IRBackbone):
    """ArcFace face recogniser (IR-SE50 + embedding head) with exactly the keys of ``model_ir_se50.pth``.

    ``output_layer`` = BN2d(512) -> Dropout -> Flatten -> Linear(512 * g * g -> 512) -> BN1d(512) with
    g = input_size / 16 (7 for 112). 397 state_dict entries, 43.8 M parameters at input_size 112.

    ``forward(x)``: ``(N, 3, input_size, input_size)`` in [-1, 1] -> ``(N, 512)`` L2-normalised embedding.
    For the ID loss the caller crops/pools the face to ``input_size`` first and keeps the module in eval
    mode (its BatchNorm statistics are those of the face-recognition training set).
    Use :meth:`from_pretrained` to build it from ``model_ir_se50.pth`` (strict load, eval, frozen).
    """

    def __init__(
        self,
        input_size: int = 112,
        num_layers: int = 50,
        mode: str = "ir_se",
        drop_ratio: float = ARCFACE_DROP_RATIO,
        affine: bool = True,
    ):
        if input_size not in ARCFACE_INPUT_SIZES:
            raise ValueError(f"ArcFace input_size must be one of {ARCFACE_INPUT_SIZES}, got {input_size}")
        if num_layers not in IR_STAGE_UNITS:
            raise ValueError(f"num_layers must be one of {sorted(IR_STAGE_UNITS)}, got {num_layers}")
        super().__init__(3, IR_DEPTHS, IR_STAGE_UNITS[num_layers], mode)
        self.input_size = input_size
        grid = input_size // TAP_REDUCTIONS[-1]
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(IR_DEPTHS[-1]),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(IR_DEPTHS[-1] * grid * grid, ARCFACE_EMBEDDING_DIM),
            nn.BatchNorm1d(ARCFACE_EMBEDDING_DIM, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, 3, "IRSEBackboneArcFace")
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(
                f"IRSEBackboneArcFace was built for {self.input_size}x{self.input_size} faces, got "
                f"{x.shape[-2]}x{x.shape[-1]}; crop and pool the face to {self.input_size} first"
            )
        x = self.body(self.input_layer(x))
        return F.normalize(self.output_layer(x), dim=1)

    @classmethod
    def from_pretrained(cls, path: PathLike, input_size: int = 112) -> IRSEBackboneArcFace:
        """Build from ``model_ir_se50.pth`` (all 397 keys, strict), in eval mode with frozen parameters."""
        model = cls(input_size=input_size)
        load_irse50_weights(model, path, strict=True)
        model.eval().requires_grad_(False)
        return model


# ------------------------------------------------------------------------------------------------
# ResNet-34


class ResNet34Backbone(nn.Module):
    """torchvision ResNet-34 trunk (layer1..layer4) behind a new stem, as ReStyle's ResNet encoders.

    Stem: ``conv1`` 7x7 stride 2 (``input_nc`` -> 64, no bias), ``bn1``, ``relu`` = PReLU(64); no max-pool,
    so layer1 runs at S/2 and layer2/3/4 end at S/4, S/8, S/16. ``body.{0..15}`` are the 16 BasicBlocks of
    layer1 (3), layer2 (4), layer3 (6), layer4 (3) in order (torchvision key ``layerL.j.*`` = ``body.k.*``).

    ``forward(x)``: ``(N, input_nc, S, S)`` -> :class:`BackboneFeatures` with c1 ``(N, 128, S/4, S/4)``
    (end of layer2, body[6]), c2 ``(N, 256, S/8, S/8)`` (body[12]), c3 ``(N, 512, S/16, S/16)`` (body[15]).
    Randomly initialised (torchvision's init); load ImageNet weights with :func:`load_resnet34_weights`.
    """

    def __init__(self, input_nc: int = 3):
        super().__init__()
        if input_nc < 1:
            raise ValueError(f"input_nc must be >= 1, got {input_nc}")
        self.input_nc = input_nc
        self.conv1 = nn.Conv2d(input_nc, RESNET_STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(RESNET_STEM_CHANNELS)
        self.relu = nn.PReLU(RESNET_STEM_CHANNELS)
        trunk = torchvision.models.resnet34(weights=None)
        self.body = nn.Sequential(*trunk.layer1, *trunk.layer2, *trunk.layer3, *trunk.layer4)
        ends = [sum(RESNET34_STAGE_UNITS[: s + 1]) - 1 for s in range(4)]
        self.tap_indices: Tuple[int, int, int] = (ends[1], ends[2], ends[3])
        self.out_channels: Tuple[int, int, int] = (128, 256, 512)

    def features(self, x: torch.Tensor) -> BackboneFeatures:
        _check_image(x, self.input_nc, "ResNet34Backbone")
        x = self.relu(self.bn1(self.conv1(x)))
        taps = []
        for i, block in enumerate(self.body):
            x = block(x)
            if i in self.tap_indices:
                taps.append(x)
        return BackboneFeatures(*taps)

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        return self.features(x)


def resnet34_key_map(torchvision_key: str) -> Optional[str]:
    """Name in :class:`ResNet34Backbone` of a torchvision ResNet-34 state_dict key.

    ``layerL.j.rest`` -> ``body.{offset_L + j}.rest``; ``conv1.*`` and ``bn1.*`` keep their names; returns None
    for keys the backbone deliberately does not use (the ImageNet classifier ``fc.*``).
    """
    if torchvision_key.startswith("fc."):
        return None
    if torchvision_key.startswith("layer"):
        stage_str, unit_str, rest = torchvision_key[len("layer"):].split(".", 2)
        stage, unit = int(stage_str) - 1, int(unit_str)
        return f"body.{sum(RESNET34_STAGE_UNITS[:stage]) + unit}.{rest}"
    return torchvision_key


# ------------------------------------------------------------------------------------------------
# weight loading


@dataclass
class WeightLoadReport:
    """What a weight file gave a module. Keys are module-relative unless said otherwise.

    loaded:     module keys copied unchanged from the file.
    adapted:    module keys filled with a documented change (first conv widened to ``input_nc`` channels:
                channels 0..2 get the file's RGB filters, the others keep the module's own random init).
    ignored:    FILE keys not used on purpose (ArcFace ``output_layer.*`` for an encoder trunk, the
                torchvision classifier ``fc.*``).
    kept_init:  module keys that have no counterpart in that kind of file by design (ResNet stem PReLU).
    missing:    module keys the file should have provided but does not.
    unexpected: FILE keys that match no module key.
    mismatched: ``"key: file shape vs module shape"`` for keys present on both sides with other shapes.
    """

    path: str
    loaded: List[str] = field(default_factory=list)
    adapted: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    kept_init: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        def few(keys: List[str]) -> str:
            shown = ", ".join(keys[:6])
            return shown + (f", ... (+{len(keys) - 6})" if len(keys) > 6 else "")

        lines = [f"weights {self.path}: loaded {len(self.loaded)}, adapted {len(self.adapted)}, "
                 f"ignored on purpose {len(self.ignored)}, kept init {len(self.kept_init)}, "
                 f"missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
                 f"shape mismatches {len(self.mismatched)}"]
        for name in ("adapted", "ignored", "kept_init", "missing", "unexpected", "mismatched"):
            keys = getattr(self, name)
            if keys:
                lines.append(f"  {name}: {few(keys)}")
        return "\n".join(lines)


def _read_state_dict(path: PathLike, what: str, source: str) -> Dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found at '{path}': {source}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for a pickle with code; RuntimeError and others for a broken file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ValueError(f"'{path}' is not a plain state_dict of tensors ({what} expected): "
                         f"{type(err).__name__}: {first}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"'{path}' does not hold a state_dict (a mapping of names to tensors); {source}")
    return dict(state)


def _find_submodule(module: nn.Module, cls: Type[nn.Module], loader: str) -> nn.Module:
    if isinstance(module, cls):
        return module
    inner = getattr(module, "backbone", None)
    if isinstance(inner, cls):
        return inner
    raise TypeError(f"{loader} needs a {cls.__name__} or an encoder whose .backbone is one, "
                    f"got {type(module).__name__}")


def _load_mapped(
    target: nn.Module,
    file_state: Mapping[str, torch.Tensor],
    key_map: Callable[[str], Optional[str]],
    first_conv: str,
    kept_init: Sequence[str],
    path: PathLike,
    strict: bool,
    expected_example: str,
) -> WeightLoadReport:
    module_state = target.state_dict()
    new_state = dict(module_state)
    report = WeightLoadReport(path=str(path))
    filled = set()
    for file_key, tensor in file_state.items():
        key = key_map(file_key)
        if key is None:
            report.ignored.append(file_key)
            continue
        if key not in module_state:
            report.unexpected.append(file_key)
            continue
        current = module_state[key]
        if current.shape == tensor.shape:
            new_state[key] = tensor
            report.loaded.append(key)
        elif (key == first_conv and tensor.dim() == 4 and current.shape[0] == tensor.shape[0]
              and current.shape[2:] == tensor.shape[2:] and current.shape[1] > tensor.shape[1]):
            # extra input channels (ReStyle's x_hat) keep the module's own random init; RGB gets the filters
            widened = current.detach().clone()
            widened[:, : tensor.shape[1]] = tensor.to(widened.dtype)
            new_state[key] = widened
            report.adapted.append(key)
        else:
            report.mismatched.append(f"{key}: file {tuple(tensor.shape)} vs module {tuple(current.shape)}")
            continue
        filled.add(key)
    report.kept_init = [k for k in kept_init if k in module_state and k not in filled]
    report.missing = [k for k in module_state if k not in filled and k not in report.kept_init]

    if not filled:
        raise ValueError(
            f"'{path}' matches none of the {len(module_state)} keys of {type(target).__name__} "
            f"(expected names like '{expected_example}'); is it the right file?"
        )
    if not report.ok:
        if strict:
            raise ValueError(f"weight file does not fit {type(target).__name__}:\n{report.summary()}")
        logger.warning("%s (non-strict load: missing keys keep their init)", report.summary())
    else:
        logger.info("%s", report.summary())
    target.load_state_dict(new_state, strict=True)
    return report


def load_irse50_weights(module: nn.Module, path: PathLike, strict: bool = True) -> WeightLoadReport:
    """Load ``model_ir_se50.pth`` (ArcFace ``Backbone(112, 50, 'ir_se')``, 397 keys) into an IR backbone.

    Args:
        module: an :class:`IRBackbone` (e.g. ``IRSEBackbone``), an encoder whose ``.backbone`` is one, or an
            :class:`IRSEBackboneArcFace` (which takes all 397 keys).
        path: the weight file.
        strict: raise ``ValueError`` on any missing / unexpected / wrongly shaped key (default). With False the
            load proceeds, the problems are logged as a warning and listed in the report.
    Returns:
        the :class:`WeightLoadReport` (also logged). For an encoder trunk the 12 ``output_layer.*`` keys (the
        ArcFace embedding head) are ignored on purpose and listed in ``report.ignored``; with ``input_nc`` > 3
        ``input_layer.0.weight`` is adapted: channels 0..2 get the RGB filters, channels 3.. keep the module's
        random init (ReStyle instead draws them from randn with std 1, a much larger scale than trained filters).
    Raises:
        FileNotFoundError naming the path and where the file comes from; ValueError for a file that matches
        nothing or (strict) does not fit.
    """
    target = _find_submodule(module, IRBackbone, "load_irse50_weights")
    state = _read_state_dict(path, f"IR-SE50 ({IRSE50_FILE})", IRSE50_SOURCE)
    has_head = isinstance(target, IRSEBackboneArcFace)

    def key_map(key: str) -> Optional[str]:
        return None if key.startswith("output_layer.") and not has_head else key

    return _load_mapped(target, state, key_map, "input_layer.0.weight", (), path, strict, "body.0.res_layer.1.weight")


def load_resnet34_weights(module: nn.Module, path: PathLike, strict: bool = True) -> WeightLoadReport:
    """Load a torchvision ResNet-34 state_dict into a :class:`ResNet34Backbone` (or an encoder using one).

    Every key is mapped by :func:`resnet34_key_map` (``layerL.j`` -> ``body.k``) and must fit: all trunk keys of
    the backbone are required (strict by default). ``conv1``/``bn1`` fill the new stem (with ``input_nc`` > 3 the
    RGB filters go to channels 0..2, the rest keep their random init); ``fc.*`` is ignored on purpose; the stem
    PReLU ``relu.weight`` has no torchvision counterpart and keeps its init (``report.kept_init``).
    Unlike ReStyle's loader, which builds the mapped dict and then returns the unmapped one, the mapped names are
    what gets loaded. Returns the (logged) :class:`WeightLoadReport`; raises as :func:`load_irse50_weights`.
    """
    target = _find_submodule(module, ResNet34Backbone, "load_resnet34_weights")
    state = _read_state_dict(path, "ResNet-34", RESNET34_SOURCE)
    return _load_mapped(target, state, resnet34_key_map, "conv1.weight", ("relu.weight",), path, strict,
                        "layer1.0.conv1.weight")


# ------------------------------------------------------------------------------------------------
# factory

# builder(input_nc, **options) -> module with .input_nc, .out_channels (C1, C2, C3) and forward -> BackboneFeatures;
# info: options (the keyword options it takes), narrow_heads (heads default to c3's width, not style_dim) and
# config_options (fn(encoder config section) -> options taken from the config; encoder.weights is added by
# wagi.builders when the backbone takes 'weights').
BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone", "encoder.backbone")


def register_backbone(name: str, options: Sequence[str] = (), narrow_heads: bool = False,
                      config_options: Optional[Callable[[Any], Dict[str, Any]]] = None):
    """Register ``fn(input_nc, **options) -> backbone`` under ``encoder.backbone`` ``name`` (see :data:`BACKBONES`)."""
    return BACKBONES.register(name, options=tuple(options), narrow_heads=bool(narrow_heads),
                              config_options=config_options or (lambda ec: {}))


@register_backbone("ir_se50", options=("num_layers", "mode", "weights"))
def _ir_se50(input_nc: int, weights: Optional[PathLike] = None, **options) -> nn.Module:
    backbone = IRSEBackbone(input_nc, **options)
    if weights is not None:
        load_irse50_weights(backbone, weights)
    return backbone


@register_backbone("resnet34", options=("weights",))
def _resnet34(input_nc: int, weights: Optional[PathLike] = None) -> nn.Module:
    backbone = ResNet34Backbone(input_nc)
    if weights is not None:
        load_resnet34_weights(backbone, weights)
    return backbone


@register_backbone("small", options=("channels", "units", "mode"), narrow_heads=True,
                   config_options=lambda ec: {"channels": tuple(ec.width * m for m in (1, 2, 4, 8))})
def _small(input_nc: int, **options) -> nn.Module:
    return SmallBackbone(input_nc, **options)


def build_backbone(name: str, input_nc: int = 3, **options) -> nn.Module:
    """Build a backbone by name: ``'ir_se50'`` (options ``num_layers=50``, ``mode='ir_se'``, ``weights=None``:
    path of ``model_ir_se50.pth``), ``'resnet34'`` (``weights=None``: torchvision ResNet-34 state_dict),
    ``'small'`` (``channels=(16, 32, 64, 128)``, ``units=(1, 1, 1, 1)``, ``mode='ir'``) or a registered one.
    Without ``weights`` the backbone is randomly initialised.
    """
    build = BACKBONES[name]
    takes = BACKBONES.info(name)["options"]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise ValueError(f"backbone {name!r} does not take option(s) {unknown}; it takes {list(takes)}")
    return build(input_nc, **options)
