"""InterFaceGAN (Shen et al. 2020): linear attribute boundaries in W / W+.

A boundary is the unit normal ``n`` of a hyperplane that separates codes with an attribute from codes
without it; editing moves a code along it, ``w+ ← w+ + s · n``.

File format (genforce/interfacegan): a ``.npy`` array ``(1, D)``, unit norm. The e4e / ReStyle / HFGI
family ships ``.pt`` tensors ``(1, D)`` or per-entry ``(1, L, D)`` (``pose.pt``: unit norm per entry).
:func:`load_boundary` reads both, :func:`save_boundary` writes ``.npy``.

Boundaries are properties of one generator's W space. Those published for StyleGAN2-FFHQ (18 W+
entries at 1024², 14 at 256²) mean nothing in the W space of a separately trained SWAGAN (12 entries
at 256², 16 at 1024²); :func:`fit_boundary` (``scripts/train_boundary.py``) fits one for the project's
own generator from labelled codes. A foreign ``(1, 512)`` boundary has a valid shape and cannot be
recognised as foreign by shape alone.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from wagi.fileio import PathLike

from ..checkpoint import load_checkpoint
from ..fileio import atomic_write
from .directions import LayerRange, as_rows, restrict_layers

Tensor = torch.Tensor

# W+ entries of rosinality's / NVlabs' StyleGAN2 at a resolution: 2 log2(size) - 2.
STYLEGAN2_N_LATENT = {18: 1024, 16: 512, 14: 256, 12: 128}
BOUNDARY_KEYS = ("boundary", "direction")  # accepted keys when a .pt file holds a dict
DEFAULT_CHOSEN_RATIO = 0.02  # InterFaceGAN keeps the top / bottom 2 % of codes by score
DEFAULT_SPLIT_RATIO = 0.7
SVM_MAX_ITER = 20000  # liblinear's default (1000) stops early on 512-D codes
LOGISTIC_MAX_ITER = 2000
METHODS = ("svm", "logistic")
SPAN_TOLERANCE = 1e-8  # relative residual below which a primal counts as lying in the conditions' span


class BoundaryError(ValueError):
    """A boundary file that cannot be used with this generator (one line naming the problem)."""


# ----------------------------------------------------------------------------------------- loading
def _read_array(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except Exception as err:  # numpy raises ValueError / OSError / EOFError on bad files
            raise BoundaryError(f"{path}: not a readable .npy array ({type(err).__name__}: {err})") from None
    if suffix in (".pt", ".pth"):
        try:
            obj = load_checkpoint(path)  # weights_only, and the integrity hash of files we wrote
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BoundaryError(f"{path}: not a readable tensor file ({type(err).__name__}: {first})") from None
        if isinstance(obj, dict):
            found = [k for k in BOUNDARY_KEYS if k in obj]
            if len(found) != 1:
                raise BoundaryError(f"{path}: a dict boundary file needs exactly one of the keys "
                                    f"{', '.join(BOUNDARY_KEYS)}; found keys {sorted(map(str, obj))[:8]}")
            obj = obj[found[0]]
        if isinstance(obj, np.ndarray):
            return obj
        if not isinstance(obj, torch.Tensor):
            raise BoundaryError(f"{path}: holds a {type(obj).__name__}, not a tensor")
        return obj.detach().cpu().numpy()
    raise BoundaryError(f"{path}: unsupported boundary file type {suffix!r}; use .npy (or .pt / .pth)")


def _foreign_hint(n_entries: int, n_latent: int) -> str:
    what = f"{n_entries} W+ entries"
    if n_entries in STYLEGAN2_N_LATENT:
        res = STYLEGAN2_N_LATENT[n_entries]
        what += f" (the layout of a StyleGAN2 at {res}²)"
    return (f"{what} but this SWAGAN has n_latent={n_latent}: directions published for StyleGAN2 (InterFaceGAN, "
            "e4e, HFGI) live in another generator's W space and do not transfer to a separately trained SWAGAN; "
            "fit one for this generator with scripts/train_boundary.py")


def load_boundary(path: PathLike, n_latent: int, style_dim: int,
                  layer_range: Optional[LayerRange] = None) -> Tensor:
    """Read an InterFaceGAN boundary and check it against the generator.

    Args:
        path: ``.npy`` (genforce) or ``.pt`` / ``.pth`` (a tensor, or a dict with ``boundary`` or
            ``direction``). Shapes ``(D,)``, ``(1, D)``, ``(n_latent, D)`` or ``(1, n_latent, D)``.
        n_latent, style_dim: of the generator that will be edited.
        layer_range: ``(start, end)``: keep the direction only on W+ entries ``[start, end)``.
    Returns:
        float32 ``(1, D)`` or ``(n_latent, D)`` (always ``(n_latent, D)`` with a layer range). The norm is
        kept as stored (strength units are the file's); a zero or non-finite boundary is an error.
    Raises:
        FileNotFoundError, or :class:`BoundaryError` (wrong dimension, wrong number of W+ entries with
        an explanation of why StyleGAN2 directions do not transfer, unreadable file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"boundary file not found: {path}")
    arr = _read_array(path)
    shape = tuple(arr.shape)
    if not np.issubdtype(arr.dtype, np.floating):
        raise BoundaryError(f"{path}: boundary must hold floating-point values, got dtype {arr.dtype}")
    b = as_rows(torch.from_numpy(np.ascontiguousarray(arr)).float())
    if b.dim() != 2:
        raise BoundaryError(f"{path}: boundary must have shape (1, {style_dim}) or ({n_latent}, {style_dim}), "
                            f"got {shape}")
    if b.shape[1] != style_dim:
        raise BoundaryError(f"{path}: boundary has dimension {b.shape[1]} but this generator's W has "
                            f"style_dim={style_dim} (shape {shape}); boundaries of another generator do not "
                            "transfer: fit one with scripts/train_boundary.py")
    if b.shape[0] not in (1, n_latent):
        raise BoundaryError(f"{path}: boundary has {_foreign_hint(b.shape[0], n_latent)} (shape {shape})")
    if not torch.isfinite(b).all():
        raise BoundaryError(f"{path}: boundary holds NaN or infinite values")
    if float(b.norm()) == 0.0:
        raise BoundaryError(f"{path}: boundary is all zeros")
    try:
        return restrict_layers(b, n_latent, layer_range)
    except ValueError as err:
        raise BoundaryError(f"{path}: {err}") from None


def save_boundary(path: PathLike, direction: Tensor, overwrite: bool = False) -> Path:
    """Write ``direction`` ``(1, D)`` or ``(L, D)`` as a float32 ``.npy`` file, atomically.

    Refuses to replace an existing file unless ``overwrite``.
    """
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise ValueError(f"{path}: boundaries are written as .npy files")
    arr = torch.as_tensor(direction).detach().cpu().float().numpy()
    return atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False), overwrite=overwrite)


# ----------------------------------------------------------------------------------------- fitting
def _as_numpy(x: Union[Tensor, np.ndarray, Sequence], what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise ValueError(f"{what} must be numeric")
    return arr


def binary_or_scores(labels: np.ndarray) -> Tuple[bool, np.ndarray]:
    """``(is_binary, values)``: bool / int / float arrays holding only 0 and 1 are binary labels;
    any other real values are continuous scores (InterFaceGAN's attribute scores). NaN = invalid."""
    if labels.dtype == bool:
        return True, labels.astype(np.float64)
    values = labels.astype(np.float64)
    finite = values[np.isfinite(values)]
    return bool(np.isin(finite, (0.0, 1.0)).all()), values


def _choose_samples(values: np.ndarray, binary: bool, chosen_ratio: float
                    ) -> Tuple[np.ndarray, np.ndarray, Optional[int]]:
    """Indices of positives and negatives. Scores: the ``chosen_num`` highest / lowest (InterFaceGAN:
    ``chosen_ratio`` < 1 is a fraction of the valid codes, >= 1 a count)."""
    valid = np.flatnonzero(np.isfinite(values))
    if binary:
        return valid[values[valid] == 1.0], valid[values[valid] == 0.0], None
    if chosen_ratio <= 0:
        raise ValueError(f"chosen_ratio must be > 0, got {chosen_ratio}")
    chosen = int(len(valid) * chosen_ratio) if chosen_ratio < 1 else int(chosen_ratio)
    if 2 * chosen > len(valid):
        raise ValueError(f"chosen_ratio={chosen_ratio} asks for {chosen} positives and {chosen} negatives "
                         f"but only {len(valid)} codes have a valid score")
    order = valid[np.argsort(values[valid], kind="stable")]
    return order[len(order) - chosen:][::-1], order[:chosen], chosen


def _split(idx: np.ndarray, split_ratio: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    idx = idx[rng.permutation(len(idx))]
    n_train = len(idx) if split_ratio >= 1 else max(1, int(len(idx) * split_ratio))
    return idx[:n_train], idx[n_train:]


def _classifier(method: str, C: float, seed: int):
    if method == "svm":
        from sklearn.svm import LinearSVC

        # LinearSVC (liblinear) rather than SVC(kernel='linear') (libsvm): the same linear max-margin
        # normal up to the loss variant, and it scales to all 10^4 labelled codes, not only 2 % of them.
        return LinearSVC(C=C, max_iter=SVM_MAX_ITER, random_state=seed)
    if method == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=LOGISTIC_MAX_ITER, random_state=seed)
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def _fit_one(x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, method: str, C: float,
             seed: int) -> Tuple[np.ndarray, Dict[str, Any]]:
    from sklearn.exceptions import ConvergenceWarning

    # Centring is a translation: the hyperplane's normal is unchanged, but the solvers, which regularise the
    # intercept, no longer have to pay for W's mean (far from the origin in trained generators).
    x = x - x[train].mean(0)
    clf = _classifier(method, C, seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(x[train], y[train])
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    normal = np.asarray(clf.coef_, dtype=np.float64).reshape(-1)
    norm = np.linalg.norm(normal)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("the classifier found no separating direction (zero or non-finite normal)")
    stats = {"train_acc": float(clf.score(x[train], y[train])),
             "val_acc": float(clf.score(x[val], y[val])) if len(val) else None,
             "converged": converged}
    return normal / norm, stats


def fit_boundary(latents: Union[Tensor, np.ndarray], labels: Union[Tensor, np.ndarray, Sequence],
                 method: str = "svm", chosen_ratio: float = DEFAULT_CHOSEN_RATIO,
                 split_ratio: float = DEFAULT_SPLIT_RATIO, seed: int = 0, C: float = 1.0
                 ) -> Tuple[Tensor, Dict[str, Any]]:
    """Fit an InterFaceGAN boundary: the unit normal of a linear classifier on the codes.

    Args:
        latents: ``(N, D)`` W codes → one boundary ``(1, D)``; or ``(N, L, D)`` W+ codes → one boundary
            per entry ``(L, D)``, each row unit norm (e4e's per-layer convention). For one W direction
            from W+ codes, pass ``latents.mean(1)`` (the W code closest to each W+ code in L2).
        labels: ``(N,)`` bool / {0, 1} labels (all codes used), or real scores: the ``chosen_ratio``
            highest-scoring codes are positives and the lowest negatives (InterFaceGAN). NaN = no label.
        method: ``'svm'`` (linear SVM, scikit-learn ``LinearSVC``) or ``'logistic'``
            (``LogisticRegression``). Codes are centred but not rescaled, so the normal lives in W's
            own coordinates.
        split_ratio: fraction of each class used for training; the rest is the validation set.
        seed: shuffles the split (and seeds the solver).
        C: inverse regularisation strength.
    Returns:
        ``(direction, report)``: float32 unit-norm direction (positives on its positive side); report
        ``{method, n_pos, n_neg, n_train, n_val, train_acc, val_acc, converged, chosen_num}`` (per-entry
        fits add ``train_acc_per_layer`` / ``val_acc_per_layer`` and report the means).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not 0 < split_ratio <= 1:
        raise ValueError(f"split_ratio must be in (0, 1], got {split_ratio}")
    x = _as_numpy(latents, "latents").astype(np.float64)
    y_raw = _as_numpy(labels, "labels").reshape(-1)
    if x.ndim not in (2, 3):
        raise ValueError(f"latents must be (N, D) or (N, L, D), got shape {x.shape}")
    if x.shape[0] != y_raw.shape[0]:
        raise ValueError(f"got {x.shape[0]} latents but {y_raw.shape[0]} labels")
    if not np.isfinite(x).all():
        raise ValueError("latents hold NaN or infinite values")
    binary, values = binary_or_scores(y_raw)
    pos, neg, chosen = _choose_samples(values, binary, chosen_ratio)
    if len(pos) < 2 or len(neg) < 2:
        raise ValueError(f"need at least 2 positive and 2 negative codes, got {len(pos)} and {len(neg)}")
    rng = np.random.default_rng(seed)
    pos_train, pos_val = _split(pos, split_ratio, rng)
    neg_train, neg_val = _split(neg, split_ratio, rng)
    train = np.concatenate([pos_train, neg_train])
    val = np.concatenate([pos_val, neg_val])
    y = np.zeros(x.shape[0], dtype=np.int64)
    y[pos] = 1

    report: Dict[str, Any] = {"method": method, "n_pos": int(len(pos)), "n_neg": int(len(neg)),
                              "n_train": int(len(train)), "n_val": int(len(val)), "chosen_num": chosen,
                              "binary_labels": binary}
    if x.ndim == 2:
        normal, stats = _fit_one(x, y, train, val, method, C, seed)
        report.update(stats)
        return torch.from_numpy(normal).float().unsqueeze(0), report
    normals, per_layer = [], []
    for layer in range(x.shape[1]):
        normal, stats = _fit_one(x[:, layer], y, train, val, method, C, seed)
        normals.append(normal)
        per_layer.append(stats)
    report["train_acc_per_layer"] = [s["train_acc"] for s in per_layer]
    report["val_acc_per_layer"] = [s["val_acc"] for s in per_layer]
    report["train_acc"] = float(np.mean(report["train_acc_per_layer"]))
    report["val_acc"] = float(np.mean(report["val_acc_per_layer"])) if len(val) else None
    report["converged"] = all(s["converged"] for s in per_layer)
    return torch.from_numpy(np.stack(normals)).float(), report


# ------------------------------------------------------------------------------ conditional editing
def project_boundary(primal: Tensor, *conditions: Tensor) -> Tensor:
    """Conditional manipulation (InterFaceGAN sec. 2.3): the component of ``primal`` orthogonal to every
    condition boundary, unit norm, same shape as ``primal``.

    Moving along the result changes the primal attribute while keeping the codes' signed distances to
    the condition hyperplanes fixed. Boundaries of shape ``(L, D)`` are treated as one flattened vector.
    """
    primal = torch.as_tensor(primal)
    flat = primal.double().reshape(-1)
    cols = []
    for i, c in enumerate(conditions):
        c = torch.as_tensor(c).double().reshape(-1)
        if c.shape != flat.shape:
            raise ValueError(f"condition {i} has {c.numel()} values but the primal boundary has {flat.numel()}")
        cols.append(c)
    residual = flat
    if cols:
        basis = torch.stack(cols, dim=1)  # (n, k)
        coef = torch.linalg.lstsq(basis, flat.unsqueeze(1)).solution
        residual = flat - (basis @ coef).squeeze(1)
    norm = residual.norm()
    if norm <= SPAN_TOLERANCE * flat.norm():
        raise ValueError("the primal boundary lies in the span of the conditions: nothing is left to edit")
    return (residual / norm).reshape(primal.shape).to(primal.dtype)
