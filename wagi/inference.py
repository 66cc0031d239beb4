"""Batch inversion of image files with a WaGI model: the loop behind ``scripts/invert.py``.

    model = WaGI.load("pretrained/demo/wagi.pt").to(device).eval()
    items = find_images(["photos/"])
    summary = invert_folder(model, items, "outputs/invert", save_latents="pt", side_by_side=True)
    print(summary.line())

Each input image is loaded by :mod:`wagi.imageio` at the model's resolution ``S`` (resize policy
``center_crop``, ``resize`` or ``pad``), inverted in batches (``model.invert``: images
``(B, 3, S, S)`` in [-1, 1] -> reconstructions ``(B, 3, S, S)`` and ``w+`` ``(B, n_latent, D)``), and
written under ``out_dir`` with the input's relative path and name:

==============================  ==============================================================
``<rel stem>.png``              the reconstruction, ``S x S``
``latents/<rel stem>.pt|.npy``  ``w+`` of the image, float32 ``(n_latent, D)`` (``save_latents``)
``latents.pt``                  with ``latents_bundle``: ``{"names": [rel, ...], "w_plus": (N, n_latent, D)}``
``latents.npz``                 the same for ``.npy``: arrays ``names`` (unicode) and ``w_plus``
``side_by_side/<rel stem>.png`` input (as the model saw it) | reconstruction (``side_by_side``)
==============================  ==============================================================

These files are read back by :func:`wagi.editing.load_latents` (``edit.py --latents``).

Robustness: an unreadable file is reported in one line and the others are processed; an input is
never overwritten (even with ``overwrite``); an image whose outputs already exist is skipped with one
line unless ``overwrite``; two inputs that would write the same output (``a.jpg`` and ``a.png``) keep
the first name and the later one gets ``__2`` (one line says so). Every file is written atomically.
"""
from __future__ import annotations

import io
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from wagi.checkpoint import save_checkpoint
from wagi.fileio import PathLike, atomic_write, remove_stale_temps
from wagi.imageio import (
    POLICIES,
    ImageIOError,
    ImageItem,
    LoadReport,
    OutputExistsError,
    ProtectedPaths,
    as_item,
    iter_batches,
    mark_output_folder,
    save_image,
    save_strip,
)
from wagi.precision import check_precision, precision_context

logger = logging.getLogger(__name__)


PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_CKPT = PROJECT_ROOT / "pretrained" / "demo" / "wagi.pt"  # bundled demo model (docs/results.md)
EXAMPLES_DIR = PROJECT_ROOT / "examples"  # bundled example images
DEFAULT_OUTPUT = Path("outputs") / "invert"  # relative to the working directory, like any output

LATENT_FORMATS: Tuple[str, ...] = ("none", "pt", "npy")
LATENTS_DIR = "latents"
STRIPS_DIR = "side_by_side"
BUNDLE_STEM = "latents"
BUNDLE_EXT = {"pt": ".pt", "npy": ".npz"}  # .npy holds one array; the bundle also needs the names


def shown_path(path: PathLike) -> str:
    """``path`` relative to the project root when it lies inside it (shorter messages), else as given."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return os.fspath(path)


def resolve_checkpoint(path: Optional[PathLike], default: PathLike = DEMO_CKPT) -> Path:
    """The WaGI model file a script uses: ``path``, or ``default`` (the bundled demo model) when none is given.

    Raises ``FileNotFoundError`` with one line saying which file is missing and what to pass instead.
    """
    if path is None:
        if not Path(default).is_file():
            raise FileNotFoundError(f"no --ckpt given and the demo model {shown_path(default)} is missing (it ships "
                                    "with the repository: `git checkout pretrained/demo`); or pass --ckpt PATH")
        return Path(default)
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return Path(path)


# --------------------------------------------------------------------------------------------
# Latent files
# --------------------------------------------------------------------------------------------
def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def save_latent(w: torch.Tensor, path: PathLike, overwrite: bool = False) -> str:
    """Save one image's ``w+`` ``(n_latent, D)`` as float32 ``.pt`` (a plain tensor) or ``.npy``."""
    path = os.fspath(path)
    w = w.detach().to("cpu", torch.float32).contiguous()
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(f"{path}: output file exists; pass --overwrite to replace it")
    if path.endswith(".npy"):
        atomic_write(path, _npy_bytes(w.numpy()))
        return path
    if path.endswith(".pt"):
        return os.fspath(save_checkpoint(w, path))
    raise ValueError(f"{path}: latent files end with .pt or .npy")


def save_latent_bundle(names: Sequence[str], w_plus: torch.Tensor, path: PathLike, overwrite: bool = False) -> str:
    """Save ``w+`` of many images ``(N, n_latent, D)`` with their names (``.pt`` dict or ``.npz``)."""
    path = os.fspath(path)
    if len(names) != w_plus.shape[0]:
        raise ValueError(f"{len(names)} names for {w_plus.shape[0]} latents")
    w_plus = w_plus.detach().to("cpu", torch.float32).contiguous()
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(f"{path}: output file exists; pass --overwrite to replace it")
    if path.endswith(".npz"):
        buf = io.BytesIO()
        np.savez(buf, names=np.array(list(names), dtype=np.str_), w_plus=w_plus.numpy())
        atomic_write(path, buf.getvalue())
        return path
    if path.endswith(".pt"):
        return os.fspath(save_checkpoint({"names": list(names), "w_plus": w_plus}, path))
    raise ValueError(f"{path}: latent bundles end with .pt or .npz")


# --------------------------------------------------------------------------------------------
# Planning outputs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedOutputs:
    """Where one input's outputs go."""

    item: ImageItem
    recon: str
    latent: Optional[str]
    strip: Optional[str]

    @property
    def paths(self) -> List[str]:
        return [p for p in (self.recon, self.latent, self.strip) if p is not None]


def plan_outputs(item: ImageItem, out_dir: PathLike, save_latents: str = "none", latents_bundle: bool = False,
                 side_by_side: bool = False) -> PlannedOutputs:
    """The output files of ``item`` (see the module docstring for the layout)."""
    out_dir = os.fspath(out_dir)
    latent = None
    if save_latents != "none" and not latents_bundle:
        latent = item.output_path(os.path.join(out_dir, LATENTS_DIR), ext="." + save_latents)
    strip = item.output_path(os.path.join(out_dir, STRIPS_DIR), ext=".png") if side_by_side else None
    return PlannedOutputs(item, item.output_path(out_dir, ext=".png"), latent, strip)


def _with_suffix(item: ImageItem, k: int) -> ImageItem:
    stem, ext = os.path.splitext(item.rel)
    return ImageItem(item.path, f"{stem}__{k}{ext}")


def _unique_by_path(items: Iterable[ImageItem]) -> List[ImageItem]:
    """The first of each input path, in order (a file given twice is inverted once)."""
    seen, unique = set(), []
    for it in items:
        if it.path not in seen:
            seen.add(it.path)
            unique.append(it)
    return unique


def _key(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
@dataclass
class InvertSummary:
    """What :func:`invert_folder` did. ``done``: (input item, reconstruction path); ``failed``: (input
    path, reason); ``skipped``: (input item, the existing output that caused the skip)."""

    done: List[Tuple[ImageItem, str]] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)
    skipped: List[Tuple[ImageItem, str]] = field(default_factory=list)
    renamed: List[Tuple[ImageItem, str]] = field(default_factory=list)
    seconds: float = 0.0
    bundle: Optional[str] = None

    @property
    def ok(self) -> bool:
        """True when every input was inverted and written (nothing failed, nothing skipped)."""
        return not self.failed and not self.skipped

    @property
    def images_per_second(self) -> float:
        return len(self.done) / self.seconds if self.seconds > 0 else float("nan")

    def line(self) -> str:
        return (f"done {len(self.done)}, failed {len(self.failed)}, skipped (output exists) {len(self.skipped)} "
                f"in {self.seconds:.2f} s ({self.images_per_second:.2f} images/s)")


def invert_folder(
    model: torch.nn.Module,
    items: Iterable[Union[ImageItem, PathLike]],
    out_dir: PathLike,
    *,
    batch_size: int = 8,
    policy: str = "center_crop",
    fuse: bool = True,
    save_latents: str = "none",
    latents_bundle: bool = False,
    side_by_side: bool = False,
    overwrite: bool = False,
    progress: Optional[bool] = None,
    report: Optional[LoadReport] = None,
    log: Callable[[str], None] = logger.warning,
    precision: str = "fp32",
) -> InvertSummary:
    """Invert image files with ``model`` (a :class:`wagi.models.wagi.WaGI`, already on its device and in
    eval mode) and write the outputs under ``out_dir``; see the module docstring for the layout.

    Args:
        items: :class:`ImageItem` s (from :func:`wagi.imageio.find_images`) or paths (``rel`` = file name).
        batch_size: images per model call; the last batch may be smaller (never dropped).
        policy: how an image of another size or shape becomes ``S x S`` (:data:`wagi.imageio.POLICIES`).
        fuse: apply the model's wavelet fusion (``False``: the plain generator image ``G(w+)``).
        save_latents: ``'none'``, ``'pt'`` or ``'npy'``; ``latents_bundle`` writes one file for all images.
        side_by_side: also write input | reconstruction strips.
        overwrite: replace existing outputs (inputs are never replaced). Without it, an image with any
            existing output is skipped (one line) and a bundle that exists raises
            :class:`OutputExistsError` before any work.
        progress: tqdm bar (``None``: only when stderr is a terminal).
        precision: ``'fp32'`` (as the model is), ``'bf16'`` or ``'fp16'`` (each call under autocast;
            :mod:`wagi.precision`). Outputs are written from fp32 copies either way.
        report: collects failures (pass one shared with other steps so each bad file is named once).
        log: receives one line per failed, skipped or renamed file.
    Returns:
        :class:`InvertSummary`.
    """
    if save_latents not in LATENT_FORMATS:
        raise ValueError(f"save_latents must be one of {LATENT_FORMATS}, got {save_latents!r}")
    if policy not in POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; choose one of {', '.join(POLICIES)}")
    check_precision(precision)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = _unique_by_path(as_item(x) for x in items)
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputExistsError(f"{out_dir}: the output folder is a file")
    guard = ProtectedPaths(items)
    report = report if report is not None else LoadReport(log=log)
    summary = InvertSummary()
    mark_output_folder(out_dir)
    for path in remove_stale_temps(out_dir, recursive=True):  # writes of a killed run, unchanged for minutes
        log(f"{path}: removed, a temporary file of an interrupted earlier run")
    failures_start = len(report.failures)

    bundle_path = None
    if save_latents != "none" and latents_bundle:
        bundle_path = os.path.join(out_dir, BUNDLE_STEM + BUNDLE_EXT[save_latents])
        if guard.match(bundle_path):
            raise OutputExistsError(f"{bundle_path}: refusing to write the latent bundle onto an input file")
        if os.path.lexists(bundle_path) and not overwrite:
            raise OutputExistsError(f"{bundle_path}: latent bundle exists; pass --overwrite to replace it")

    # Plan every output first: collisions between inputs, inputs in the way, and existing outputs are
    # settled before any model call.
    taken = set() if bundle_path is None else {_key(bundle_path)}
    plans: Dict[str, PlannedOutputs] = {}
    renamed_from: Dict[str, str] = {}
    todo: List[ImageItem] = []
    for item in items:
        plan, k = plan_outputs(item, out_dir, save_latents, latents_bundle, side_by_side), 1
        while any(_key(p) in taken for p in plan.paths):
            k += 1
            plan = plan_outputs(_with_suffix(item, k), out_dir, save_latents, latents_bundle, side_by_side)
        if k > 1:
            renamed_from[item.path] = plan_outputs(item, out_dir).recon
        taken.update(_key(p) for p in plan.paths)
        hit = next((guard.match(p) for p in plan.paths if guard.match(p)), None)
        if hit is not None:
            report.add_failure(item, f"refusing to write an output onto the input image {hit}")
            continue
        existing = next((p for p in plan.paths if os.path.lexists(p)), None)
        if existing is not None and not overwrite:
            log(f"{item.path}: skipped, output exists: {existing} (pass --overwrite to replace it)")
            summary.skipped.append((item, existing))
            continue
        plans[item.path] = plan
        todo.append(item)

    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    names: List[str] = []
    latents: List[torch.Tensor] = []
    failures_before = len(report.failures)
    bar = tqdm(total=len(todo), unit="img", desc="invert", disable=(not sys.stderr.isatty()) if progress is None
               else not progress, file=sys.stderr, dynamic_ncols=True)
    start = time.perf_counter()
    seen = 0
    try:
        with torch.inference_mode():
            for batch, batch_items in iter_batches(todo, model.image_size, batch_size, policy, report=report):
                with precision_context(device, precision):
                    recon, w_plus, _ = model.invert(batch.to(device, dtype), fuse=fuse)
                recon, w_plus = recon.float().cpu(), w_plus.float().cpu()
                for i, item in enumerate(batch_items):
                    plan = plans[item.path]
                    try:
                        save_image(recon[i], plan.recon, overwrite=overwrite, inputs=guard)
                        if plan.latent is not None:
                            save_latent(w_plus[i], plan.latent, overwrite=overwrite)
                        if plan.strip is not None:
                            save_strip([batch[i], recon[i]], plan.strip, overwrite=overwrite, inputs=guard)
                    except (OSError, ImageIOError, ValueError) as err:
                        report.add_failure(item, f"cannot write output: {err}")
                        continue
                    summary.done.append((item, plan.recon))
                    if item.path in renamed_from:
                        # Said only once written, so an unreadable file is never named twice.
                        log(f"{item.path}: written as {plan.recon} ({renamed_from[item.path]} is the output "
                            "of another input with the same name)")
                        summary.renamed.append((item, plan.recon))
                    if bundle_path is not None:
                        names.append(_bundle_name(plan))
                        latents.append(w_plus[i])
                now = len(report.failures) - failures_before + len(summary.done)
                bar.update(now - seen)
                seen = now
        bar.update(len(todo) - seen)  # unreadable files after the last batch
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
        summary.failed = [(it.path, reason) for it, reason in report.failures[failures_start:]]

    if bundle_path is not None and latents:
        summary.bundle = save_latent_bundle(names, torch.stack(latents), bundle_path, overwrite=overwrite)
    elif bundle_path is not None:
        log(f"{bundle_path}: not written, no image was inverted")
    return summary


def _bundle_name(plan: PlannedOutputs) -> str:
    """The name of an image in a latent bundle: its output path relative to the output folder, without
    extension (the key that :mod:`wagi.metrics` and the editing script match files by)."""
    return os.path.splitext(plan.item.rel)[0]
