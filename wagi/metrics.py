"""Evaluation metrics of WaGI, per image, and the Fréchet distance between feature distributions.

Per-image metrics take ``x`` (reconstruction) and ``y`` (ground truth), both ``(N, C, H, W)`` in
[-1, 1] with equal shapes, and return ``(N,)`` float64 values (computed in float64: the sums over
millions of pixels and the variances ``E[x^2] - E[x]^2`` of SSIM lose digits in float32):

==================  ===================================================================================
``mse``             mean((x - y)^2) over C, H, W
``psnr``            10 log10(peak^2 / mse), peak-to-peak range 2 of [-1, 1] images (= PSNR on [0, 1])
``ssim``            SSIM of Wang et al. (2004) on [0, 1] images: 11x11 Gaussian window, sigma 1.5,
                    K1 = 0.01, K2 = 0.03, no padding ('valid'), mean over positions and channels
``subband_l2``      MSE of the Haar coefficients per band and level (``LL``, ``LH1``, ``HL1``, ``HH1``,
                    ``LH2``...; :func:`wagi.wavelets.subband_mse`) and each band's share of the total
                    squared error (``share_LL``...; the shares sum to 1, Parseval)
==================  ===================================================================================

:data:`METRICS` registers them by name (``fn(x, y, levels) -> {column: (N,)}``); :class:`PerceptualMetrics`
adds LPIPS and ID similarity (``wagi.losses``) when their weights exist and says why otherwise.

SSIM is written here (a dozen lines of ``conv2d``) rather than taken from torchmetrics or scikit-image:
no extra dependency for one formula, float64 throughout, and tested against a direct computation.

The folder comparison of ``scripts/eval_subbands.py`` lives in :mod:`wagi.evaluation` (matching and
computing) and :mod:`wagi.reports` (``results.md``/``.csv``/``.json`` and the figures).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from wagi.fileio import PathLike
from wagi.wavelets import HIGH_BANDS, subband_mse

PIXEL_RANGE = 2.0  # peak-to-peak value range of images in [-1, 1]
SSIM_WINDOW = 11  # Gaussian window side of Wang et al. (2004)
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03  # stabilising constants of Wang et al. (2004), for a data range of 1
SHARE_PREFIX = "share_"
DEFAULT_METRICS: Tuple[str, ...] = ("subbands", "mse", "psnr", "ssim")

# --------------------------------------------------------------------------------------------
# Per-image metrics
# --------------------------------------------------------------------------------------------
def _check_pair(x: torch.Tensor, y: torch.Tensor, who: str) -> None:
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"{who} needs two (N, C, H, W) tensors of equal shape, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error ``(N,)``."""
    _check_pair(x, y, "mse")
    return (x.double() - y.double()).pow(2).mean(dim=(1, 2, 3))


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = PIXEL_RANGE) -> torch.Tensor:
    """Per-image PSNR in dB ``(N,)``; ``inf`` for identical images."""
    return 10.0 * torch.log10(data_range ** 2 / mse(x, y))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float64,
                    device=None) -> torch.Tensor:
    """Normalised 2-D Gaussian window ``(size, size)`` (sums to 1)."""
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    g = torch.exp(-(t ** 2) / (2.0 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Per-image SSIM ``(N,)`` of images in [-1, 1] (mapped to [0, 1]); H and W must be >= ``window``."""
    _check_pair(x, y, "ssim")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"ssim needs images of at least {window}x{window} px, got {tuple(x.shape[-2:])}")
    a = (x.double() + 1.0) / 2.0
    b = (y.double() + 1.0) / 2.0
    c = a.shape[1]
    w = gaussian_window(window, sigma, a.dtype, a.device).expand(c, 1, window, window)

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a ** 2
    var_b = local_mean(b * b) - mu_b ** 2
    cov = local_mean(a * b) - mu_a * mu_b
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2  # (K * L)^2 with data range L = 1
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def band_keys(levels: int) -> List[str]:
    """Sub-band names of a ``levels``-level decomposition: ``LL`` then ``LH1, HL1, HH1, LH2, ...``."""
    return ["LL"] + [f"{b}{j}" for j in range(1, levels + 1) for b in HIGH_BANDS]


def band_fraction(key: str, levels: int) -> float:
    """Fraction of all coefficients that band ``key`` holds: ``4^-j`` at level j, ``4^-levels`` for LL."""
    j = levels if key == "LL" else int(key[2:])
    return 4.0 ** -j


def band_shares(band_mse: Mapping[str, Any], levels: int) -> Dict[str, Any]:
    """Each band's share of the total squared error, from band MSEs (floats or ``(N,)`` tensors).

    A band's sum of squares is its MSE times its coefficient count; the total is the pixel sum of
    squares (orthonormal transform). Zero total error gives NaN shares (undefined, not 0)."""
    keys = band_keys(levels)
    sse = {k: band_mse[k] * band_fraction(k, levels) for k in keys}
    total = sum(sse[k] for k in keys)
    if isinstance(total, torch.Tensor):
        return {k: torch.where(total > 0, sse[k] / total, torch.full_like(total, float("nan"))) for k in keys}
    return {k: (sse[k] / total if total > 0 else float("nan")) for k in keys}


def subband_l2(x: torch.Tensor, y: torch.Tensor, levels: int = 1) -> Dict[str, torch.Tensor]:
    """Per-image Haar sub-band MSE (keys of :func:`band_keys`) and shares (``share_<key>``), each ``(N,)``."""
    _check_pair(x, y, "subband_l2")
    bands = subband_mse(x.double(), y.double(), levels, reduce_batch=False)
    shares = band_shares(bands, levels)
    return {**bands, **{SHARE_PREFIX + k: v for k, v in shares.items()}}


MetricFn = Callable[..., Dict[str, torch.Tensor]]
METRICS: Dict[str, MetricFn] = {}


def register_metric(name: str) -> Callable[[MetricFn], MetricFn]:
    """Register ``fn(x, y, levels) -> {column: (N,) tensor}`` under ``name`` in :data:`METRICS`."""
    def wrap(fn: MetricFn) -> MetricFn:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = fn
        return fn
    return wrap


@register_metric("subbands")
def _metric_subbands(x, y, levels: int = 1):
    return subband_l2(x, y, levels)


@register_metric("mse")
def _metric_mse(x, y, levels: int = 1):
    return {"MSE": mse(x, y)}


@register_metric("psnr")
def _metric_psnr(x, y, levels: int = 1):
    return {"PSNR": psnr(x, y)}


@register_metric("ssim")
def _metric_ssim(x, y, levels: int = 1):
    return {"SSIM": ssim(x, y)}


def compute_metrics(x: torch.Tensor, y: torch.Tensor, names: Sequence[str] = DEFAULT_METRICS,
                    levels: int = 1) -> Dict[str, torch.Tensor]:
    """All columns of the metrics ``names`` (keys of :data:`METRICS`) for a batch: ``{column: (N,)}``."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; registered: {', '.join(METRICS)}")
    out: Dict[str, torch.Tensor] = {}
    for n in names:
        out.update(METRICS[n](x, y, levels=levels))
    return out


# --------------------------------------------------------------------------------------------
# LPIPS and ID similarity (need pretrained weights)
# --------------------------------------------------------------------------------------------
class PerceptualMetrics(nn.Module):
    """Per-image LPIPS and ID similarity, each only when its network is available.

    ``lpips``: a module ``(x, y) -> scalar`` (:class:`wagi.losses.LPIPSLoss`); ``identity``: an
    :class:`wagi.losses.IDLoss`. ``skipped`` maps a left-out column to the reason. Call with
    ``(x, y)`` to get ``{"LPIPS": (N,), "ID": (N,)}`` (ID = cosine similarity of the embeddings)."""

    def __init__(self, lpips: Optional[nn.Module] = None, identity: Optional[nn.Module] = None,
                 skipped: Optional[Dict[str, str]] = None):
        super().__init__()
        self.lpips = lpips
        self.identity = identity
        self.skipped: Dict[str, str] = dict(skipped or {})

    @classmethod
    def from_weights(cls, lpips_weights: Optional[PathLike] = None, id_weights: Optional[PathLike] = None,
                     lpips_net: str = "alex", default_id_weights: Optional[PathLike] = None) -> PerceptualMetrics:
        """Build what the weights allow. A path given explicitly must work (its error propagates);
        without one, LPIPS looks in the torch hub cache and ID at ``default_id_weights``, and a missing
        file only skips that metric (``skipped`` says why)."""
        from wagi.losses import ID_WEIGHTS_FILE, IDLoss, LPIPSLoss, lpips_trunk_dir, lpips_trunk_file

        # The losses' own messages advise on the training config (loss.lambda_*); an evaluation only says what is
        # missing and where it was looked for.
        skipped: Dict[str, str] = {}
        lp = ident = None
        try:
            lp = LPIPSLoss(lpips_net, lpips_weights, resize_to=None)
        except (FileNotFoundError, ImportError) as err:
            if lpips_weights is not None:
                raise
            skipped["LPIPS"] = (f"torchvision's ImageNet weights '{lpips_trunk_file(lpips_net)}' are not in "
                                f"'{lpips_trunk_dir()}'" if isinstance(err, FileNotFoundError) else str(err))
        path = id_weights if id_weights is not None else default_id_weights
        if path is not None and id_weights is None and not os.path.isfile(os.fspath(path)):
            path = None
        try:
            ident = IDLoss(path)
        except FileNotFoundError:
            if id_weights is not None:
                raise
            where = f" at '{os.fspath(default_id_weights)}'" if default_id_weights is not None else ""
            skipped["ID"] = f"the IR-SE50 ArcFace weights '{ID_WEIGHTS_FILE}' were not found{where}"
        return cls(lp, ident, skipped)

    @property
    def columns(self) -> List[str]:
        return [n for n, m in (("LPIPS", self.lpips), ("ID", self.identity)) if m is not None]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        if self.lpips is not None:
            # LPIPSLoss averages over the batch: one call per image gives the per-image values.
            out["LPIPS"] = torch.stack([self.lpips(x[i:i + 1], y[i:i + 1]).reshape(()) for i in range(x.shape[0])])
        if self.identity is not None:
            _, sim = self.identity(x, y, return_similarity=True)
            out["ID"] = sim
        return {k: v.detach().double() for k, v in out.items()}



# --------------------------------------------------------------------------------------------
# Fréchet distance between feature distributions (FD-judge: features of wagi.models.judge)
# --------------------------------------------------------------------------------------------
FD_EPS = 1e-6  # added to both covariance diagonals when their product has no finite square root
FD_IMAG_TOL = 1e-3  # largest imaginary part of sqrtm's diagonal accepted as round-off


def feature_statistics(features: Union[torch.Tensor, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, ``N - 1``) of ``(N, D)`` features, in float64."""
    f = features.detach().to("cpu", torch.float64).numpy() if isinstance(features, torch.Tensor) \
        else np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_statistics needs (N, D) features with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr(sqrtm(sigma1 @ sigma2))`` for covariance (symmetric PSD) matrices.

    With SciPy: ``scipy.linalg.sqrtm`` as in the reference FID code (Heusel et al. 2017; pytorch-fid),
    retried with ``FD_EPS`` on both diagonals when the result is not finite (near-singular covariances);
    imaginary round-off is dropped, a real imaginary part (> ``FD_IMAG_TOL``) raises ``ValueError``.
    Without SciPy: ``tr(sqrt(A))`` of the symmetric ``A = sqrt(s1) s2 sqrt(s1)``, which has the same
    eigenvalues as ``s1 s2``, by two symmetric eigendecompositions (negative round-off eigenvalues -> 0).
    """
    try:
        from scipy import linalg
    except ImportError:
        linalg = None
    if linalg is not None:
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if isinstance(covmean, tuple):  # older SciPy with disp=False semantics
            covmean = covmean[0]
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * FD_EPS
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=FD_IMAG_TOL):
                raise ValueError(f"frechet_distance: sqrtm has an imaginary component "
                                 f"{np.max(np.abs(covmean.imag)):.3g}; the covariances are not valid")
            covmean = covmean.real
        return float(np.trace(covmean))
    w1, v1 = np.linalg.eigh(sigma1)
    sqrt1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    w = np.linalg.eigvalsh(sqrt1 @ sigma2 @ sqrt1)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2))`` (the FID formula; with judge features
    it is "FD-judge"). Inputs: arrays or tensors, ``(D,)`` and ``(D, D)``; computed in float64."""
    def arr(a):
        return a.detach().to("cpu", torch.float64).numpy() if isinstance(a, torch.Tensor) \
            else np.asarray(a, dtype=np.float64)
    mu1, mu2, sigma1, sigma2 = np.atleast_1d(arr(mu1)), np.atleast_1d(arr(mu2)), np.atleast_2d(arr(sigma1)), \
        np.atleast_2d(arr(sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"frechet_distance: shapes mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, "
                         f"sigma2 {sigma2.shape} do not fit one dimension")
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * _trace_sqrt_product(sigma1, sigma2))
    return max(fd, 0.0)  # >= 0 exactly; a negative value is round-off (e.g. FD of a set with itself)
