"""The per-sub-band comparison of reconstruction folders (``scripts/eval_subbands.py``).

:func:`match_items` pairs ground-truth and method files by relative path without extension
(``a/b.jpg`` <-> ``a/b.png``) and lists every file without a partner; :func:`evaluate_folders` computes
every metric of :mod:`wagi.metrics` for every pair (all batches, the last one too) and returns an
:class:`Evaluation`, which :mod:`wagi.reports` turns into files.
"""
from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from wagi.fileio import PathLike
from wagi.imageio import ImageItem, ImageLoadError, InputNotFoundError, LoadReport, find_images, load_image
from wagi.metrics import SHARE_PREFIX, SSIM_WINDOW, PerceptualMetrics, band_keys, band_shares, compute_metrics

logger = logging.getLogger(__name__)


DEFAULT_EVAL_SIZE = 256  # the protocol of the compared works: everything at 256 x 256
LISTED_NAMES = 10  # file names listed per mismatch kind in messages and in results.md (JSON has all)


# --------------------------------------------------------------------------------------------
# Matching folders
# --------------------------------------------------------------------------------------------
def pair_key(rel: str) -> str:
    """Matching key of a file: its relative path without extension (``a/b.jpg`` -> ``a/b``)."""
    return os.path.splitext(rel)[0]


@dataclass
class Matching:
    """Pairs ``(key, gt item, method item)`` and the files without a partner: ``missing`` (GT keys the
    method lacks), ``extra`` (method files without GT), ``ambiguous`` (method keys held by several
    files, e.g. ``a.jpg`` and ``a.png``: not compared)."""

    pairs: List[Tuple[str, ImageItem, ImageItem]] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    extra: List[str] = field(default_factory=list)
    ambiguous: List[str] = field(default_factory=list)


def index_by_key(items: Sequence[ImageItem]) -> Tuple[Dict[str, ImageItem], List[str]]:
    """``({key: item}, ambiguous rels)``: keys held by more than one file are left out and listed."""
    groups: Dict[str, List[ImageItem]] = {}
    for it in items:
        groups.setdefault(pair_key(it.rel), []).append(it)
    unique = {k: v[0] for k, v in groups.items() if len(v) == 1}
    ambiguous = sorted(it.rel for v in groups.values() if len(v) > 1 for it in v)
    return unique, ambiguous


def match_items(gt: Mapping[str, ImageItem], method_items: Sequence[ImageItem]) -> Matching:
    """Pair the GT index (from :func:`index_by_key`) with a method's files by key."""
    found, ambiguous = index_by_key(method_items)
    amb_keys = {pair_key(r) for r in ambiguous}
    m = Matching(ambiguous=ambiguous)
    for key in sorted(gt):
        if key in found:
            m.pairs.append((key, gt[key], found[key]))
        elif key not in amb_keys:
            m.missing.append(gt[key].rel)
    m.extra = sorted(it.rel for k, it in found.items() if k not in gt)
    return m


def list_names(names: Sequence[str], limit: int = LISTED_NAMES) -> str:
    """The first ``limit`` names, comma-separated, and how many more there are."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


# --------------------------------------------------------------------------------------------
# Evaluating folders
# --------------------------------------------------------------------------------------------
def _finite_or_none(v: float) -> Optional[float]:
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


@dataclass
class MethodResult:
    """One method: per-image ``rows`` (``name``, ``gt_path``, ``method_path`` and every metric column),
    the :class:`Matching`, and ``failed``: ``(key, path, reason)`` of pairs whose files did not load."""

    name: str
    root: str
    matching: Matching
    rows: List[Dict[str, Any]] = field(default_factory=list)
    failed: List[Tuple[str, str, str]] = field(default_factory=list)

    def values(self, column: str) -> np.ndarray:
        return np.array([r[column] for r in self.rows], dtype=np.float64)

    def mean(self, column: str) -> float:
        return float(self.values(column).mean()) if self.rows else float("nan")

    def std(self, column: str) -> float:
        """Population std; NaN when a value is infinite (PSNR of an exact copy)."""
        values = self.values(column)
        if not self.rows or not np.isfinite(values).all():
            return float("nan")
        return float(values.std())

    def shares(self, levels: int) -> Dict[str, float]:
        """Shares of the total squared error of the *mean* band MSEs (a ratio of means: images with a
        larger error weigh more, as in a pooled comparison)."""
        return band_shares({k: self.mean(k) for k in band_keys(levels)}, levels)


@dataclass
class Evaluation:
    """Result of :func:`evaluate_folders`. ``columns``: metric columns in table order."""

    gt_root: str
    size: int
    levels: int
    policy: str
    methods: Dict[str, MethodResult]
    columns: List[str]
    skipped_metrics: Dict[str, str]
    gt_ambiguous: List[str]
    failures: List[Tuple[str, str]]
    settings: Dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Nothing failed to load, no GT image without a reconstruction, no ambiguous name."""
        return not self.failures and not self.gt_ambiguous and all(
            not m.failed and not m.matching.missing and not m.matching.ambiguous for m in self.methods.values())

    @property
    def band_columns(self) -> List[str]:
        return band_keys(self.levels)

    @property
    def image_columns(self) -> List[str]:
        return [c for c in self.columns if c not in self.band_columns and not c.startswith(SHARE_PREFIX)]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary (non-finite numbers become ``null``)."""
        methods = {}
        for name, m in self.methods.items():
            methods[name] = {
                "dir": m.root,
                "count": len(m.rows),
                "mean": {c: _finite_or_none(m.mean(c)) for c in self.columns},
                "std": {c: _finite_or_none(m.std(c)) for c in self.columns},
                "share_of_total_error": {k: _finite_or_none(v) for k, v in m.shares(self.levels).items()},
                "failed": [{"name": k, "path": p, "reason": r} for k, p, r in m.failed],
                "missing_in_method": m.matching.missing,
                "extra_in_method": m.matching.extra,
                "ambiguous_in_method": m.matching.ambiguous,
            }
        return {
            "settings": {"gt": self.gt_root, "size": self.size, "levels": self.levels, "policy": self.policy,
                         **self.settings},
            "columns": self.columns,
            "skipped_metrics": self.skipped_metrics,
            "gt_ambiguous": self.gt_ambiguous,
            "failures": [{"path": p, "reason": r} for p, r in self.failures],
            "methods": methods,
        }


def _find_method_items(root: PathLike) -> List[ImageItem]:
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise InputNotFoundError(f"{root}: method folder not found")
    try:
        return find_images(root)
    except InputNotFoundError:
        return []  # an empty method folder: every GT image is reported missing


def evaluate_folders(
    gt: Union[PathLike, Sequence[ImageItem]],
    methods: Mapping[str, PathLike],
    *,
    size: int = DEFAULT_EVAL_SIZE,
    levels: int = 1,
    policy: str = "center_crop",
    batch_size: int = 8,
    device: Union[str, torch.device] = "cpu",
    perceptual: Optional[PerceptualMetrics] = None,
    report: Optional[LoadReport] = None,
    progress: Optional[bool] = None,
    log: Optional[Callable[[str], None]] = None,
) -> Evaluation:
    """Compare every method folder with the ground-truth folder ``gt``, image by image.

    Both images of a pair are loaded by :func:`wagi.imageio.load_image` at ``size x size`` (``policy``
    for other shapes) in [-1, 1]; every metric of :data:`DEFAULT_METRICS` (with ``levels`` Haar levels)
    and of ``perceptual`` is computed per image. Mismatched names are listed (``log``, one line per kind
    and method) and kept in the result; an unreadable file gets one line (once, however many methods
    use it) and its pair is counted as failed. Raises :class:`InputNotFoundError` for a missing GT or
    method folder and ``ValueError`` for a ``size`` the ``levels``-level transform cannot split.
    """
    log = log or logger.warning
    if size % (2 ** levels) or size < 2 ** levels:
        raise ValueError(f"--size {size} must be divisible by 2^levels = {2 ** levels}")
    if size < SSIM_WINDOW:
        raise ValueError(f"--size must be at least {SSIM_WINDOW} (the SSIM window)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    report = report if report is not None else LoadReport(log=log)
    failures_start = len(report.failures)
    device = torch.device(device)
    if isinstance(gt, (str, os.PathLike)):
        gt_root = os.fspath(gt)
        if not os.path.isdir(gt_root):
            raise InputNotFoundError(f"{gt_root}: ground-truth folder not found")
        gt_items = find_images(gt_root)
    else:
        gt_items, gt_root = list(gt), "(items)"
    gt_index, gt_ambiguous = index_by_key(gt_items)
    if gt_ambiguous:
        log(f"ground truth: {len(gt_ambiguous)} file(s) share a name without extension and are not compared: "
            f"{list_names(gt_ambiguous)}")
    perceptual = perceptual if perceptual is not None else PerceptualMetrics()
    perceptual = perceptual.to(device)
    columns = band_keys(levels) + [SHARE_PREFIX + k for k in band_keys(levels)] + ["MSE", "PSNR", "SSIM"]
    columns += perceptual.columns

    known_bad: Dict[str, str] = {it.path: reason for it, reason in report.failures}

    def load(item: ImageItem) -> Optional[torch.Tensor]:
        if item.path in known_bad:  # reported once already: the pair fails again without a second line
            return None
        try:
            return load_image(item.path, size, policy)
        except ImageLoadError as err:
            report.add_failure(item, err)
            known_bad[item.path] = err.reason
            return None

    results: Dict[str, MethodResult] = {}
    for name, root in methods.items():
        matching = match_items(gt_index, _find_method_items(root))
        result = MethodResult(name, os.fspath(root), matching)
        results[name] = result
        for kind, names in (("have no reconstruction (missing in method)", matching.missing),
                            ("have no ground truth (extra in method)", matching.extra),
                            ("share a name without extension (ambiguous, not compared)", matching.ambiguous)):
            if names:
                log(f"method {name}: {len(names)} file(s) {kind}: {list_names(names)}")
        bar = tqdm(total=len(matching.pairs), unit="img", desc=f"eval {name}", file=sys.stderr,
                   disable=(not sys.stderr.isatty()) if progress is None else not progress)
        for start in range(0, len(matching.pairs), batch_size):
            chunk = matching.pairs[start:start + batch_size]
            xs, ys, kept = [], [], []
            for key, g_item, m_item in chunk:
                y_img = load(g_item)
                x_img = load(m_item) if y_img is not None else None
                if x_img is None:
                    bad = g_item if y_img is None else m_item
                    result.failed.append((key, bad.path, known_bad[bad.path]))
                    continue
                ys.append(y_img)
                xs.append(x_img)
                kept.append((key, g_item, m_item))
            if kept:
                x = torch.stack(xs).to(device)
                y = torch.stack(ys).to(device)
                with torch.inference_mode():
                    values = compute_metrics(x, y, levels=levels)
                    values.update(perceptual(x, y))
                values = {k: v.cpu().tolist() for k, v in values.items()}
                for i, (key, g_item, m_item) in enumerate(kept):
                    row: Dict[str, Any] = {"name": key, "gt_path": g_item.path, "method_path": m_item.path}
                    row.update({c: values[c][i] for c in columns})
                    result.rows.append(row)
            bar.update(len(chunk))
        bar.close()
    failures = [(it.path, reason) for it, reason in report.failures[failures_start:]]
    return Evaluation(gt_root, size, levels, policy, results, columns, dict(perceptual.skipped), gt_ambiguous,
                      failures)
