"""Loss terms of WaGI inversion training and the criterion that combines them.

Every image term takes ``x_hat`` (the reconstruction) and ``x`` (the target), both ``(N, C, H, W)`` in
[-1, 1] with equal shapes, and returns a scalar averaged over the batch. Latent terms take ``w``, the
W+ code ``(N, n_latent, D)``.

=================  ==========================================================================
term               value
=================  ==========================================================================
``L2Loss``         mean((x_hat - x)^2)                             (pSp's ``MSELoss``)
``WaveletLoss``    sum_levels sum_bands w * mean((W_b x_hat - W_b x)^2), orthonormal Haar
``LPIPSLoss``      batch mean of LPIPS (``lpips`` package, AlexNet/VGG/SqueezeNet trunk)
``IDLoss``         mean(1 - cos(f(x_hat), f(x))), f = IR-SE50 ArcFace on the face crop
``WNormLoss``      batch mean of ||w - latent_avg||_2 over (n_latent, D)            (pSp)
``DeltaRegularizer`` sum_i batch mean of ||w_i - w_0||_2                           (e4e)
``LatticeLoss``    mean_p Var(fold_p |x_hat - x|) / mean(...)^2: the error's block lattice
=================  ==========================================================================

:data:`LOSS_TERMS` registers each term by name with the inputs its ``forward`` takes (from
:data:`LOSS_INPUTS`) and the config key of its weight (``lambda_key``); a new term is one class here with
``@register_loss_term(...)`` (``docs/extending.md``).
:class:`InversionCriterion` builds the terms whose weight (lambda) is positive, so a configuration
that does not use LPIPS or the ID loss never needs their pretrained weights, and returns the
weighted total with a dict of float logs. A non-finite term raises :class:`NonFiniteLossError`
naming the term.

The frozen networks (LPIPS trunk, ArcFace backbone) stay in eval mode whatever ``.train()`` is
called on a parent, never receive gradients, and follow the device and dtype of their inputs.
"""
from __future__ import annotations

import inspect
import math
import os
import warnings
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from wagi.fileio import PathLike
from wagi.registry import Registry
from wagi.tensors import resize
from wagi.wavelets import BANDS, HIGH_BANDS, dwt_multilevel

# Keys of the YAML config (``wagi.config.LossConfig``) named in error messages.
LPIPS_WEIGHTS_KEY = "loss.lpips_weights"
ID_WEIGHTS_KEY = "loss.id_weights"
LPIPS_LAMBDA_KEY = "loss.lpips"
ID_LAMBDA_KEY = "loss.id"

# What InversionCriterion.forward can hand a term: reconstruction and target images (N, C, H, W), the W+
# code (N, n_latent, D), latent_avg (D,) or (n_latent, D), and e4e's number of active deltas (int or None).
LOSS_INPUTS: Tuple[str, ...] = ("x_hat", "x", "w_plus", "latent_avg", "n_active")
_REQUIRED_INPUTS = ("x_hat", "x", "w_plus")  # the others may be None
EXTRA_LAMBDAS_KEY = "loss.terms"  # the weights of registered terms that have no config key of their own

# term class (an nn.Module); info: inputs (names from LOSS_INPUTS, in forward's order), lambda_key (the dotted
# config key of its weight) and config_options (fn(loss config section) -> keyword options of the class).
LOSS_TERMS: Registry[type] = Registry("loss term", "loss")


def register_loss_term(name: str, inputs: Sequence[str] = ("x_hat", "x"), lambda_key: Optional[str] = None,
                       config_options: Optional[Callable[[Any], Dict[str, Any]]] = None):
    """Register a loss class under ``name``. ``inputs``: what its ``forward`` takes, in order (from
    :data:`LOSS_INPUTS`); ``lambda_key``: the config key of its weight (default ``loss.terms.<name>``, an entry
    of the mapping ``loss.terms``); ``config_options``: ``fn(loss config section) -> {option: value}`` for the
    class's constructor. A class may define ``forward_logged(*inputs, detail) -> (value, {log name: tensor})``
    to log side values (per-band errors, similarities)."""
    bad = [i for i in inputs if i not in LOSS_INPUTS]
    if bad or not inputs:
        raise ValueError(f"loss term {name!r}: inputs {list(inputs)} must be names from {list(LOSS_INPUTS)}")
    return LOSS_TERMS.register(name, inputs=tuple(inputs), lambda_key=lambda_key or f"{EXTRA_LAMBDAS_KEY}.{name}",
                               config_options=config_options or (lambda lc: {}))


def lambda_key(term: str) -> str:
    """The config key of the weight of the registered loss term ``term`` (e.g. ``'loss.delta_reg'``)."""
    return LOSS_TERMS.info(term)["lambda_key"]

ID_WEIGHTS_FILE = "model_ir_se50.pth"
ID_WEIGHTS_SUGGESTED_PATH = "pretrained/model_ir_se50.pth"
ID_FACE_SIZE = 256  # ID_CROP is given in the pixel grid of a 256x256 image
ID_CROP = (35, 223, 32, 220)  # rows, cols of the face region of a 256² FFHQ-aligned image
ID_INPUT_SIZE = 112  # input size of the IR-SE50 ArcFace head (its Linear expects 512 x 7 x 7)

DEFAULT_BAND_WEIGHTS: Dict[str, float] = {"LH": 1.0, "HL": 1.0, "HH": 1.0}
REDUCTIONS = ("mean", "sum")



class NonFiniteLossError(FloatingPointError):
    """A loss term evaluated to NaN or +-inf. ``term`` names it; the trainer adds ``step``."""

    def __init__(self, term: str, value: float, step: Optional[int] = None):
        self.term = term
        self.value = value
        self.step = step
        where = f" at step {step}" if step is not None else ""
        super().__init__(f"loss term '{term}' is not finite ({value}){where}")


# --------------------------------------------------------------------------------------------------
# helpers


def _check_pair(x_hat: torch.Tensor, x: torch.Tensor, who: str) -> None:
    if x_hat.dim() != 4:
        raise ValueError(f"{who} expects (N, C, H, W) images, got shape {tuple(x_hat.shape)}")
    if x_hat.shape != x.shape:
        raise ValueError(f"{who} needs x_hat and x of equal shape, got {tuple(x_hat.shape)} and {tuple(x.shape)}")


def _common_dtype(x_hat: torch.Tensor, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.promote_types(x_hat.dtype, x.dtype)
    return x_hat.to(dtype), x.to(dtype)


def _follow(module: nn.Module, like: torch.Tensor) -> None:
    """Move a frozen network to the device and dtype of ``like`` if it is not there yet."""
    p = next(module.parameters(), None)
    if p is not None and (p.device != like.device or p.dtype != like.dtype):
        module.to(device=like.device, dtype=like.dtype)


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _check_size_arg(value: Optional[int], name: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


# --------------------------------------------------------------------------------------------------
# pixel and wavelet losses


@register_loss_term("l2", lambda_key="loss.l2")
class L2Loss(nn.Module):
    """Pixel MSE ``mean((x_hat - x)^2)`` over all elements: the ``torch.nn.MSELoss`` of pSp / ReStyle.

    ``resize_to`` resizes both images to ``resize_to²`` first (see :func:`wagi.tensors.resize`).
    """

    def __init__(self, resize_to: Optional[int] = None):
        super().__init__()
        _check_size_arg(resize_to, "L2Loss resize_to")
        self.resize_to = resize_to

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        _check_pair(x_hat, x, "L2Loss")
        return F.mse_loss(resize(x_hat, self.resize_to), resize(x, self.resize_to))


def _wavelet_options(lc) -> Dict[str, Any]:
    return {"levels": lc.wavelet_cfg.levels, "band_weights": dict(lc.wavelet_cfg.band_weights),
            "include_ll": "LL" in lc.wavelet_cfg.band_weights}


@register_loss_term("wavelet", lambda_key="loss.wavelet", config_options=_wavelet_options)
class WaveletLoss(nn.Module):
    r"""Weighted squared error of Haar sub-bands: the wavelet loss of WaGI.

    ``L_wav = sum_{j=1..levels} level_weights[j-1] *
    sum_{b in band_weights} band_weights[b] * R((W_b^j x_hat - W_b^j x)^2)``

    where ``W_b^j`` is sub-band ``b`` (LH, HL, HH) of level ``j`` (1 = finest) of
    :func:`wagi.wavelets.dwt_multilevel`, and ``R`` is the mean over all ``N*C*h*w`` coefficients of
    the band (``reduction='mean'``) or their sum (``'sum'``). With ``include_ll=True`` the coarsest LL
    band is added too, with weight ``band_weights.get('LL', 1) * level_weights[-1]``. Input
    ``(N, C, H, W)`` with H, W divisible by ``2**levels`` (after ``resize_to``); output a scalar.

    Relation to pixel MSE. The Haar DWT is orthonormal, so for the error ``e = x_hat - x``
    ``||e||^2 = ||e_LL||^2 + ||e_LH||^2 + ||e_HL||^2 + ||e_HH||^2`` (Parseval): with ``'sum'``
    reduction pixel L2 is the equally weighted sum of the four band terms. With ``'mean'`` reduction
    each band of level 1 has a quarter of the pixels, so

        ``MSE_pixel = 1/4 * (MSE_LL + MSE_LH + MSE_HL + MSE_HH)``

    and a band of level ``j`` carries weight ``4**-j``. Hence
    ``L2 + lambda * L_wav`` (1 level, default weights) weights each high-frequency band by
    ``1/4 + lambda`` and LL by ``1/4``: ``lambda = 1`` makes the HF bands 5x their plain-L2 weight.
    """

    def __init__(
        self,
        levels: int = 1,
        band_weights: Optional[Mapping[str, float]] = None,
        level_weights: Optional[Sequence[float]] = None,
        include_ll: bool = False,
        reduction: str = "mean",
        resize_to: Optional[int] = None,
    ):
        super().__init__()
        if not isinstance(levels, int) or isinstance(levels, bool) or levels < 1:
            raise ValueError(f"WaveletLoss levels must be an int >= 1, got {levels!r}")
        band_weights = dict(DEFAULT_BAND_WEIGHTS if band_weights is None else band_weights)
        unknown = [b for b in band_weights if b not in BANDS]
        if unknown:
            raise ValueError(f"WaveletLoss band_weights has unknown bands {unknown}; valid: {list(BANDS)}")
        if "LL" in band_weights and not include_ll:
            raise ValueError("WaveletLoss band_weights has 'LL' but include_ll=False; set include_ll=True to use it")
        if include_ll:
            band_weights.setdefault("LL", 1.0)
        for b, v in band_weights.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"WaveletLoss band weight '{b}' must be a finite number >= 0, got {v!r}")
        if not any(v > 0 for v in band_weights.values()):
            raise ValueError(f"WaveletLoss has no band with a positive weight: {band_weights}")
        if level_weights is None:
            level_weights = [1.0] * levels
        level_weights = [float(v) for v in level_weights]
        if len(level_weights) != levels:
            raise ValueError(f"WaveletLoss level_weights needs {levels} entries (finest first), "
                             f"got {len(level_weights)}")
        if any(not math.isfinite(v) or v < 0 for v in level_weights):
            raise ValueError(f"WaveletLoss level_weights must be finite and >= 0, got {level_weights}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"WaveletLoss reduction must be one of {REDUCTIONS}, got {reduction!r}")
        _check_size_arg(resize_to, "WaveletLoss resize_to")
        if resize_to is not None and resize_to % (2 ** levels):
            raise ValueError(f"WaveletLoss resize_to={resize_to} is not divisible by 2**levels = {2 ** levels}")
        self.levels = levels
        self.band_weights = band_weights
        self.level_weights = level_weights
        self.include_ll = include_ll
        self.reduction = reduction
        self.resize_to = resize_to

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, band_weights={self.band_weights}, level_weights={self.level_weights}, "
                f"include_ll={self.include_ll}, reduction={self.reduction!r}, resize_to={self.resize_to}")

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        sq = t.pow(2)
        return sq.mean() if self.reduction == "mean" else sq.sum()

    def _error(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        _check_pair(x_hat, x, "WaveletLoss")
        x_hat, x = resize(x_hat, self.resize_to), resize(x, self.resize_to)
        h, w = x.shape[-2:]
        m = 2 ** self.levels
        if h % m or w % m:
            raise ValueError(
                f"WaveletLoss(levels={self.levels}) needs H and W divisible by {m}, got {h}x{w}; "
                "lower the levels or set resize_to"
            )
        return x_hat - x

    def _band_terms(self, e: torch.Tensor) -> Dict[str, torch.Tensor]:
        # The DWT is linear, so DWT(x_hat) - DWT(x) == DWT(x_hat - x): one transform instead of two.
        ll, highs = dwt_multilevel(e, self.levels)
        terms: Dict[str, torch.Tensor] = {}
        for j, hi in enumerate(highs, start=1):
            for name, band in zip(HIGH_BANDS, hi.chunk(3, dim=1)):
                terms[f"{name}{j}"] = self._reduce(band)
        terms["LL"] = self._reduce(ll)
        return terms

    def _combine(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for j in range(1, self.levels + 1):
            lw = self.level_weights[j - 1]
            for name in HIGH_BANDS:
                bw = self.band_weights.get(name, 0.0)
                if bw and lw:
                    v = (bw * lw) * terms[f"{name}{j}"]
                    total = v if total is None else total + v
        if self.include_ll:
            v = (self.band_weights["LL"] * self.level_weights[-1]) * terms["LL"]
            total = v if total is None else total + v
        if total is None:  # every positive band weight met a zero level weight
            total = terms["LL"] * 0.0
        return total

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._combine(self._band_terms(self._error(x_hat, x)))

    def per_band(self, x_hat: torch.Tensor, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Unweighted reduced squared error of every band, for logging.

        Keys ``'LH1', 'HL1', 'HH1', ..., 'LH<levels>', ..., 'LL'`` (level 1 finest; ``'LL'`` the
        coarsest), values scalar tensors: the same naming as :func:`wagi.wavelets.subband_mse`.
        """
        return self._band_terms(self._error(x_hat, x))

    def forward_with_bands(self, x_hat: torch.Tensor, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """``(forward(x_hat, x), per_band(x_hat, x))`` from a single transform."""
        terms = self._band_terms(self._error(x_hat, x))
        return self._combine(terms), terms

    def forward_logged(self, x_hat: torch.Tensor, x: torch.Tensor, detail: bool = False):
        """The loss and, with ``detail``, the unweighted band terms as ``'wavelet/<band>'``."""
        if not detail:
            return self(x_hat, x), {}
        v, bands = self.forward_with_bands(x_hat, x)
        return v, {f"wavelet/{b}": bv for b, bv in bands.items()}


# --------------------------------------------------------------------------------------------------
# LPIPS


def _tv_weights(net: str):
    from torchvision import models as tv

    return {
        "alex": tv.AlexNet_Weights.IMAGENET1K_V1,
        "vgg": tv.VGG16_Weights.IMAGENET1K_V1,
        "squeeze": tv.SqueezeNet1_1_Weights.IMAGENET1K_V1,
    }[net]


LPIPS_NETS = ("alex", "vgg", "squeeze")


def lpips_trunk_file(net: str) -> str:
    """File name of the torchvision ImageNet weights the LPIPS trunk ``net`` uses (as in the hub cache)."""
    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net must be one of {LPIPS_NETS}, got {net!r}")
    return os.path.basename(_tv_weights(net).url)


def lpips_trunk_dir() -> str:
    """``$TORCH_HOME/hub/checkpoints``: where torchvision caches downloaded weights."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def resolve_lpips_trunk_path(net: str, weights_path: Optional[PathLike] = None) -> str:
    """Path of the trunk weights: ``weights_path`` if given, else the torch hub cache file.

    Raises ``FileNotFoundError`` naming the file, the directory and the config key when it is missing.
    """
    fname = lpips_trunk_file(net)
    if weights_path is not None:
        path = os.fspath(weights_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"LPIPS ({net}) trunk weights not found at {LPIPS_WEIGHTS_KEY}='{path}': it should be torchvision's "
                f"'{fname}' ({_tv_weights(net).url})"
            )
        return path
    directory = lpips_trunk_dir()
    path = os.path.join(directory, fname)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"LPIPS ({net}) needs torchvision's ImageNet weights '{fname}' in '{directory}' (from "
            f"{_tv_weights(net).url}); put the file there or set {LPIPS_WEIGHTS_KEY} to its path "
            f"(or set {LPIPS_LAMBDA_KEY} to 0)"
        )
    return path


def _trunk_state_dict(trunk: nn.Module, tv_state: Mapping[str, torch.Tensor], path: str) -> Dict[str, torch.Tensor]:
    """Map a torchvision ``features.<i>.<p>`` state_dict onto lpips' ``slice<k>.<i>.<p>`` trunk.

    lpips splits ``torchvision.<net>().features`` into slices but keeps each layer's index ``i`` as
    its name inside the slice, so ``slice<k>.<i>.<p>`` is ``features.<i>.<p>``. The classifier keys
    of the file are not part of the trunk and are ignored; any unused ``features.*`` key means the
    file belongs to another architecture and is an error.
    """
    mapped: Dict[str, torch.Tensor] = {}
    missing = []
    for key in trunk.state_dict():
        _, rest = key.split(".", 1)  # drop "slice<k>"
        src = f"features.{rest}"
        if src not in tv_state:
            missing.append(src)
        else:
            mapped[key] = tv_state[src]
    used = {f"features.{k.split('.', 1)[1]}" for k in mapped}
    unused = sorted(k for k in tv_state if k.startswith("features.") and k not in used)
    if missing or unused:
        raise ValueError(
            f"'{path}' does not match the LPIPS trunk: missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unused[:4]}{'...' if len(unused) > 4 else ''}"
        )
    return mapped


@register_loss_term("lpips", lambda_key=LPIPS_LAMBDA_KEY,
                    config_options=lambda lc: {"net": lc.lpips_net, "weights_path": lc.lpips_weights})
class LPIPSLoss(nn.Module):
    """LPIPS distance (``lpips`` package, v0.1) averaged over the batch.

    Input ``x_hat``, ``x``: ``(N, 3, H, W)`` in [-1, 1]; both are resized to ``resize_to²`` first
    (``None`` keeps the size). Output: scalar, the mean over the batch of the per-image LPIPS.

    The linear calibration layers ship inside the ``lpips`` package. The trunk (torchvision AlexNet,
    VGG16 or SqueezeNet1.1 ImageNet weights) is never downloaded: it is read from ``weights_path``
    or from the torch hub cache ``$TORCH_HOME/hub/checkpoints/<file>`` (file names from
    :func:`lpips_trunk_file`, e.g. ``alexnet-owt-7be5be79.pth``); when neither exists the
    constructor raises ``FileNotFoundError`` before building anything.
    """

    def __init__(self, net: str = "alex", weights_path: Optional[PathLike] = None, resize_to: Optional[int] = 256):
        super().__init__()
        _check_size_arg(resize_to, "LPIPSLoss resize_to")
        path = resolve_lpips_trunk_path(net, weights_path)
        try:
            tv_state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a pickle with code, a truncated or foreign file: never unpickled fully here
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ValueError(f"'{path}' is not a readable plain state_dict of LPIPS trunk weights "
                             f"({type(err).__name__}: {first})") from None
        if not isinstance(tv_state, Mapping):
            raise ValueError(f"'{path}' is not a state_dict (got {type(tv_state).__name__})")

        import lpips

        with warnings.catch_warnings():
            # lpips 0.1.4 still passes torchvision's deprecated `pretrained=` flag; pnet_rand=True means
            # weights=None here, and the trunk is loaded below.
            warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*deprecated", category=UserWarning)
            model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
        model.net.load_state_dict(_trunk_state_dict(model.net, tv_state, path), strict=True)
        self.model = _freeze(model)
        self.net_name = net
        self.weights_path = path
        self.resize_to = resize_to

    def train(self, mode: bool = True) -> LPIPSLoss:
        super().train(mode)
        self.model.eval()  # a frozen metric: dropout in lpips' linear layers must stay off
        return self

    def extra_repr(self) -> str:
        return f"net={self.net_name!r}, weights_path={self.weights_path!r}, resize_to={self.resize_to}"

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        _check_pair(x_hat, x, "LPIPSLoss")
        if x_hat.shape[1] != 3:
            raise ValueError(f"LPIPSLoss expects RGB images (N, 3, H, W), got {tuple(x_hat.shape)}")
        x_hat, x = _common_dtype(x_hat, x)
        _follow(self.model, x_hat)
        x_hat, x = resize(x_hat, self.resize_to), resize(x, self.resize_to)
        return self.model(x_hat, x).mean()


# --------------------------------------------------------------------------------------------------
# identity loss


def _missing_id_weights(path: Optional[PathLike]) -> FileNotFoundError:
    where = f"not found at '{os.fspath(path)}'" if path is not None else "no path given"
    return FileNotFoundError(
        f"the ID loss needs the IR-SE50 ArcFace weights '{ID_WEIGHTS_FILE}' (pSp's pretrained_models file), {where}; "
        f"put it e.g. at {ID_WEIGHTS_SUGGESTED_PATH} and set {ID_WEIGHTS_KEY} to its path "
        f"(or set {ID_LAMBDA_KEY} to 0)"
    )


def build_id_backbone(weights_path: Optional[PathLike]) -> nn.Module:
    """The IR-SE50 ArcFace network of ``wagi.models.backbones`` loaded strictly from ``model_ir_se50.pth``.

    The file is checked before the (large) network is built or its module imported.
    """
    if weights_path is None or not os.path.isfile(os.fspath(weights_path)):
        raise _missing_id_weights(weights_path)
    from wagi.models.backbones import IRSEBackboneArcFace

    return IRSEBackboneArcFace.from_pretrained(weights_path, input_size=ID_INPUT_SIZE)


@register_loss_term("id", lambda_key=ID_LAMBDA_KEY, config_options=lambda lc: {"weights_path": lc.id_weights})
class IDLoss(nn.Module):
    """Identity loss ``mean_n(1 - cos(f(x_hat_n), f(x_n)))`` with a frozen ArcFace embedding ``f``.

    ``f``: pool the image to ``ID_FACE_SIZE²`` (256) if it has another size, crop ``ID_CROP`` (the face
    region of an FFHQ-aligned 256² image), average-pool to ``ID_INPUT_SIZE²`` (112), run the backbone
    and L2-normalise its ``(N, 512)`` output. Input ``(N, 3, H, W)`` in [-1, 1], any N >= 1; output a
    scalar, or ``(loss, similarity)`` with the per-sample cosine similarity ``(N,)`` when
    ``return_similarity=True``. The target embedding ``f(x)`` is a constant (no gradient).

    ``backbone`` injects any module mapping ``(N, 3, 112, 112)`` to ``(N, D)``; otherwise the IR-SE50
    backbone is loaded from ``weights_path`` (``model_ir_se50.pth``) by :func:`build_id_backbone`.
    """

    def __init__(self, weights_path: Optional[PathLike] = None, backbone: Optional[nn.Module] = None):
        super().__init__()
        if backbone is None:
            backbone = build_id_backbone(weights_path)
        self.backbone = _freeze(backbone)
        self.weights_path = None if weights_path is None else os.fspath(weights_path)

    def train(self, mode: bool = True) -> IDLoss:
        super().train(mode)
        self.backbone.eval()  # BatchNorm statistics and dropout of the frozen ArcFace must not change
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embedding ``(N, D)`` of images ``(N, 3, H, W)``."""
        x = resize(x, ID_FACE_SIZE)
        top, bottom, left, right = ID_CROP
        x = F.adaptive_avg_pool2d(x[:, :, top:bottom, left:right], (ID_INPUT_SIZE, ID_INPUT_SIZE))
        feats = self.backbone(x)
        if feats.dim() != 2:
            raise ValueError(f"the ID backbone must return (N, D) embeddings, got shape {tuple(feats.shape)}")
        return F.normalize(feats, dim=1)

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, return_similarity: bool = False):
        _check_pair(x_hat, x, "IDLoss")
        x_hat, x = _common_dtype(x_hat, x)
        _follow(self.backbone, x_hat)
        with torch.no_grad():
            target = self.embed(x)
        sim = (self.embed(x_hat) * target).sum(dim=1)
        loss = (1.0 - sim).mean()
        return (loss, sim) if return_similarity else loss

    def forward_logged(self, x_hat: torch.Tensor, x: torch.Tensor, detail: bool = False):
        """The loss and the batch-mean cosine similarity as ``'id_similarity'``."""
        loss, sim = self(x_hat, x, return_similarity=True)
        return loss, {"id_similarity": sim.mean()}


# --------------------------------------------------------------------------------------------------
# lattice (periodic block pattern of the error)


DEFAULT_LATTICE_PERIODS = (4, 8, 16)  # the block sizes of Haar corrections at the three coarser fused levels
LATTICE_EPS = 1e-6  # floor of the folded mean (in [-1, 1] image units) that normalises the variance


@register_loss_term("lattice", lambda_key="loss.lattice",
                    config_options=lambda lc: {"periods": tuple(lc.lattice_periods)})
class LatticeLoss(nn.Module):
    r"""The periodic component of the reconstruction error, the block lattice coarse Haar corrections stamp.

    For each period ``p`` the absolute error, averaged over the colour channels, is folded modulo ``p`` pixels
    (``f_p = fold(|x_hat − x|, p)``, :func:`wagi.editing.fidelity.fold`: the mean over every pixel with the same
    ``(y mod p, x mod p)``, ``(N, p, p)``), and

        ``L = mean_p mean_n Var_ij(f_p[n]) / sg(mean_ij f_p[n])²``

    the squared coefficient of variation of the folded map (``sg``: no gradient through the normaliser, so the
    loss cannot be lowered by making the error larger everywhere; the normaliser is floored at
    ``LATTICE_EPS``). An error without structure at period ``p`` folds to a flat map (0); a two-level block
    pattern of period ``p`` gives a quarter of the squared peak-to-peak amplitude that
    :func:`~wagi.editing.fidelity.lattice_amplitude` measures. Input ``(N, C, H, W)`` with H, W >= every
    period (each is cropped to a multiple of it); output a scalar. ``forward_logged`` logs ``lattice/p<p>``.
    """

    def __init__(self, periods: Sequence[int] = DEFAULT_LATTICE_PERIODS):
        super().__init__()
        periods = tuple(int(p) for p in periods)
        if not periods or any(p < 2 for p in periods):
            raise ValueError(f"LatticeLoss periods must be integers >= 2, got {list(periods)}")
        self.periods = periods

    def extra_repr(self) -> str:
        return f"periods={list(self.periods)}"

    def per_period(self, x_hat: torch.Tensor, x: torch.Tensor) -> Dict[int, torch.Tensor]:
        """``{p: scalar}``: the term of each period (the loss is their mean)."""
        _check_pair(x_hat, x, "LatticeLoss")
        from wagi.editing.fidelity import fold  # at call: the wagi.editing package loads all of editing

        err = x_hat - x
        out = {}
        for p in self.periods:
            f = fold(err, p).flatten(1)  # (N, p*p)
            mean = f.mean(1).detach().clamp_min(LATTICE_EPS)
            out[p] = (f.var(1, unbiased=False) / mean.pow(2)).mean()
        return out

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(list(self.per_period(x_hat, x).values())).mean()

    def forward_logged(self, x_hat: torch.Tensor, x: torch.Tensor, detail: bool = False):
        """The loss and, with ``detail``, the term of each period as ``'lattice/p<p>'``."""
        terms = self.per_period(x_hat, x)
        loss = torch.stack(list(terms.values())).mean()
        return loss, ({f"lattice/p{p}": v for p, v in terms.items()} if detail else {})


# --------------------------------------------------------------------------------------------------
# latent regularisers


def _check_w(w: torch.Tensor, who: str) -> None:
    if w.dim() != 3:
        raise ValueError(f"{who} expects W+ codes (N, n_latent, D), got shape {tuple(w.shape)}")


@register_loss_term("w_norm", inputs=("w_plus", "latent_avg"), lambda_key="loss.w_norm")
class WNormLoss(nn.Module):
    """pSp's W-norm: ``mean_n ||w_n - latent_avg||_2`` with the norm over ``(n_latent, D)``.

    ``w``: ``(N, n_latent, D)``; ``latent_avg``: ``(D,)``, ``(n_latent, D)`` or ``(1, n_latent, D)``.
    With ``start_from_latent_avg=False`` the norm of ``w`` itself is taken. Output: scalar.
    """

    def __init__(self, start_from_latent_avg: bool = True):
        super().__init__()
        self.start_from_latent_avg = start_from_latent_avg

    def forward(self, w: torch.Tensor, latent_avg: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check_w(w, "WNormLoss")
        if self.start_from_latent_avg:
            if latent_avg is None:
                raise ValueError("WNormLoss(start_from_latent_avg=True) needs latent_avg")
            if latent_avg.shape[-1] != w.shape[-1] or latent_avg.dim() > 3:
                raise ValueError(f"WNormLoss latent_avg of shape {tuple(latent_avg.shape)} "
                                 f"does not fit w {tuple(w.shape)}")
            w = w - latent_avg
        return torch.linalg.vector_norm(w, ord=2, dim=(1, 2)).mean()


@register_loss_term("delta", inputs=("w_plus", "n_active"), lambda_key="loss.delta_reg")
class DeltaRegularizer(nn.Module):
    """e4e's delta regulariser: ``sum_{i=1..k} mean_n ||w_{n,i} - w_{n,0}||_2`` (norm over D).

    ``w``: ``(N, n_latent, D)``; ``k = n_latent - 1`` unless ``n_active`` (e4e's progressive stage:
    how many deltas are trained so far) is given. Output: scalar.
    """

    def forward(self, w: torch.Tensor, n_active: Optional[int] = None) -> torch.Tensor:
        _check_w(w, "DeltaRegularizer")
        k = w.shape[1] - 1 if n_active is None else n_active
        if not 0 <= k <= w.shape[1] - 1:
            raise ValueError(f"DeltaRegularizer n_active must be in [0, {w.shape[1] - 1}], got {n_active}")
        deltas = w[:, 1:k + 1] - w[:, :1]
        return torch.linalg.vector_norm(deltas, ord=2, dim=2).mean(dim=0).sum()


# --------------------------------------------------------------------------------------------------
# criterion


_CRITERION_KEYS = ("lambdas", "log_subbands", "check_finite")


def _options(name: str, cls, opts: Optional[Mapping]) -> dict:
    """Validate ``opts`` against ``cls``'s keyword arguments; one line naming a bad key."""
    opts = dict(opts or {})
    allowed = [p for p in inspect.signature(cls).parameters]
    unknown = [k for k in opts if k not in allowed]
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in the {name} loss options; valid: {allowed}")
    return opts


class InversionCriterion(nn.Module):
    """Weighted sum of the inversion loss terms.

    ``total = sum_t lambdas[t] * L_t + sum_e lambda_e * L_e`` over the built terms ``t`` of :data:`LOSS_TERMS`
    (``'l2', 'wavelet', 'lpips', 'id', 'w_norm', 'delta'`` and any registered one) and the trainer's
    ``extra_terms``. Only terms with ``lambdas[t] > 0`` are built (a missing lambda is 0), so LPIPS / ArcFace
    weights are needed only when their lambda is positive.

    Args:
        lambdas: ``{term: weight >= 0}``.
        log_subbands: also log the unweighted per-band wavelet terms (``'wavelet/LH1'``, ...).
        check_finite: raise :class:`NonFiniteLossError` from ``forward`` when a term is NaN/inf.
        **options: ``{term: {keyword options of its class}}``, e.g. ``wavelet={'levels': 2}``,
            ``lpips={'net': 'vgg'}``, ``id={'weights_path': ...}`` (or ``backbone`` to inject a module).

    ``forward`` returns ``(total, logs)``: ``total`` a scalar tensor with gradient, ``logs`` a dict of
    floats: ``<term>`` (unweighted), ``<term>_weighted``, ``'total'``, and the side values of terms with
    ``forward_logged`` (``'id_similarity'``, the mean cosine, when the ID term is built).
    """

    def __init__(self, lambdas: Mapping[str, float], log_subbands: bool = False, check_finite: bool = True,
                 **options: Optional[Mapping]):
        super().__init__()
        lambdas = dict(lambdas)
        unknown = [k for k in lambdas if k not in LOSS_TERMS]
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown} in lambdas; valid: {list(LOSS_TERMS)}")
        unknown = [k for k in options if k not in LOSS_TERMS]
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown} given options; valid: {list(LOSS_TERMS)}")
        for k, v in lambdas.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"the weight of loss term '{k}' ({lambda_key(k)}) must be a finite number >= 0, "
                                 f"got {v!r}")
        self.lambdas = {t: float(lambdas.get(t, 0.0)) for t in LOSS_TERMS}
        if not any(self.lambdas.values()):
            keys = ", ".join(lambda_key(t) for t in LOSS_TERMS)
            raise ValueError(f"no loss term has a positive weight ({keys}): nothing to optimise")
        self.log_subbands = log_subbands
        self.check_finite_values = check_finite
        self.inputs = {t: LOSS_TERMS.info(t)["inputs"] for t in LOSS_TERMS}
        # Options are validated even for unused terms, so a typo never waits for the day a lambda turns on.
        opts = {t: _options(t, LOSS_TERMS[t], options.get(t)) for t in LOSS_TERMS}
        self.terms = nn.ModuleDict({t: LOSS_TERMS[t](**opts[t]) for t in LOSS_TERMS if self.lambdas[t] > 0})

    @classmethod
    def from_config(cls, cfg: Mapping) -> InversionCriterion:
        """Build from a plain dict: ``{'lambdas': {...}, 'wavelet': {...}, 'lpips': {...}, 'id': {...}, ...}``."""
        valid = list(_CRITERION_KEYS) + list(LOSS_TERMS)
        unknown = [k for k in cfg if k not in valid]
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in loss config; valid: {valid}")
        if "lambdas" not in cfg:
            raise ValueError("loss config needs 'lambdas' ({term: weight})")
        return cls(**dict(cfg))

    @property
    def active_terms(self) -> Tuple[str, ...]:
        return tuple(self.terms.keys())

    @staticmethod
    def check_finite(values: Mapping[str, Union[float, torch.Tensor]]) -> None:
        """Raise :class:`NonFiniteLossError` for the first NaN/inf value, naming its term."""
        for name, v in values.items():
            v = float(v)
            if not math.isfinite(v):
                raise NonFiniteLossError(name, v)

    def forward(
        self,
        x_hat: torch.Tensor,
        x: torch.Tensor,
        w_plus: Optional[torch.Tensor] = None,
        latent_avg: Optional[torch.Tensor] = None,
        extra_terms: Optional[Mapping[str, Tuple[float, torch.Tensor]]] = None,
        n_active: Optional[int] = None,
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """``extra_terms``: ``{name: (lambda, scalar tensor)}`` added to the total (e.g. an aligner L1);
        ``n_active``: e4e's number of active deltas (the ``delta`` term; None: all)."""
        given = {"x_hat": x_hat, "x": x, "w_plus": w_plus, "latent_avg": latent_avg, "n_active": n_active}
        values: Dict[str, torch.Tensor] = {}
        weights: Dict[str, float] = {}
        side: Dict[str, torch.Tensor] = {}
        for t, module in self.terms.items():
            missing = [i for i in self.inputs[t] if i in _REQUIRED_INPUTS and given[i] is None]
            if missing:
                raise ValueError(f"loss term '{t}' has a positive lambda but forward got no {', '.join(missing)}")
            args = [given[i] for i in self.inputs[t]]
            if hasattr(module, "forward_logged"):
                v, extra = module.forward_logged(*args, detail=self.log_subbands)
                side.update({k: sv.detach() for k, sv in extra.items()})
            else:
                v = module(*args)
            values[t], weights[t] = v, self.lambdas[t]
        for name, item in (extra_terms or {}).items():
            if name in values or name == "total":
                raise ValueError(f"extra loss term '{name}' clashes with a built-in term")
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise ValueError(f"extra loss term '{name}' must be (lambda, tensor), got {type(item).__name__}")
            lam, v = item
            if torch.is_tensor(v) and v.numel() != 1:
                raise ValueError(f"extra loss term '{name}' must be a scalar, got shape {tuple(v.shape)}")
            values[name], weights[name] = v, float(lam)

        total = None
        for name, v in values.items():
            wv = weights[name] * v
            total = wv if total is None else total + wv

        # One device-to-host transfer for every logged number.
        names = list(values) + ["total"] + list(side)
        log_dtype = torch.promote_types(total.dtype, torch.float32)
        stacked = torch.stack([torch.as_tensor(v).detach().reshape(()).to(total.device, log_dtype)
                               for v in list(values.values()) + [total] + list(side.values())])
        floats = dict(zip(names, stacked.tolist()))
        if self.check_finite_values:
            self.check_finite({n: floats[n] for n in list(values) + ["total"]})
        logs: Dict[str, float] = {}
        for name in values:
            logs[name] = floats[name]
            logs[f"{name}_weighted"] = weights[name] * floats[name]
        logs["total"] = floats["total"]
        for name in side:
            logs[name] = floats[name]
        return total, logs
