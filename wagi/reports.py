"""Reports of a folder comparison (:class:`wagi.evaluation.Evaluation`) and sub-band figures.

:func:`write_report` writes ``results.md``, ``results.csv``, ``results.json``, ``subbands_bar.png`` (per band,
per method) and ``subbands_example.png`` (Haar sub-bands of one image, GT vs methods);
:func:`plot_subbands` draws the level-1 sub-bands of any images (the app uses it too).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from wagi.evaluation import Evaluation, list_names
from wagi.fileio import PathLike, atomic_write, encode_text
from wagi.imageio import OutputExistsError, load_image
from wagi.wavelets import HIGH_BANDS, dwt, split_bands

logger = logging.getLogger(__name__)


REPORT_FILES: Tuple[str, ...] = ("results.md", "results.csv", "results.json", "subbands_bar.png",
                                 "subbands_example.png")
SIG_DIGITS = 5  # significant digits in the Markdown table (small L2 values need more than 2 decimals)


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------
def fmt(value: Optional[float], digits: int = SIG_DIGITS) -> str:
    """A number with ``digits`` significant digits; ``n/a`` for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


COLUMN_TITLES = {"MSE": "MSE", "PSNR": "PSNR (dB)", "SSIM": "SSIM", "LPIPS": "LPIPS", "ID": "ID similarity"}


def markdown_report(ev: Evaluation) -> str:
    """``results.md``: per-band L2, shares of the total error, image metrics, skipped metrics, mismatches."""
    bands = ev.band_columns
    names = list(ev.methods)
    out = ["# Per-sub-band evaluation", "",
           f"Ground truth `{ev.gt_root}`; images at {ev.size}x{ev.size} in [-1, 1] (policy `{ev.policy}`), "
           f"{ev.levels}-level orthonormal Haar transform. Band values are the mean squared error of the "
           "coefficients (L2), averaged over images; LL is the coarsest low-pass band, LHj/HLj/HHj the "
           "high-frequency bands of level j (1 = finest). With one level, the four band MSEs sum to 4x the "
           "pixel MSE.", "",
           "## Mean L2 per sub-band", ""]
    out.append(_md_table(["method", "n"] + bands,
                         [[n, str(len(ev.methods[n].rows))] + [fmt(ev.methods[n].mean(b)) for b in bands]
                          for n in names]))
    out += ["", "## Share of the total squared error (%)", "",
            "From the mean band L2 of each method (a band's sum of squares over the pixel sum of squares).", ""]
    out.append(_md_table(["method"] + bands,
                         [[n] + [fmt(100.0 * v, 4) for v in ev.methods[n].shares(ev.levels).values()]
                          for n in names]))
    img_cols = ev.image_columns
    out += ["", "## Image metrics (mean ± std over images)", ""]
    out.append(_md_table(["method"] + [COLUMN_TITLES.get(c, c) for c in img_cols],
                         [[n] + [f"{fmt(ev.methods[n].mean(c))} ± {fmt(ev.methods[n].std(c), 3)}" for c in img_cols]
                          for n in names]))
    for metric, reason in ev.skipped_metrics.items():
        out += ["", f"**{metric} skipped**: {reason}"]
    problems = []
    for n in names:
        m = ev.methods[n]
        for title, items in (("missing in method", m.matching.missing), ("extra in method", m.matching.extra),
                             ("ambiguous in method", m.matching.ambiguous),
                             ("unreadable", [f"{k} ({r})" for k, _, r in m.failed])):
            if items:
                problems.append(f"- {n}: {len(items)} {title}: {list_names(items)}")
    if ev.gt_ambiguous:
        problems.append(f"- ground truth: {len(ev.gt_ambiguous)} ambiguous: {list_names(ev.gt_ambiguous)}")
    out += ["", "## Mismatches and failures", ""] + (problems or ["None: every ground-truth image was compared."])
    return "\n".join(out) + "\n"


def csv_report(ev: Evaluation) -> str:
    """``results.csv``: one row per (method, image), full float precision."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "name", "gt_path", "method_path"] + ev.columns)
    for name, m in ev.methods.items():
        for r in m.rows:
            writer.writerow([name, r["name"], r["gt_path"], r["method_path"]] + [repr(float(r[c])) for c in ev.columns])
    return buf.getvalue()


def json_report(ev: Evaluation) -> str:
    return json.dumps(ev.to_dict(), indent=2, allow_nan=False) + "\n"


def _figure_png(fig, dpi: int = 120) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def plot_subband_bars(ev: Evaluation) -> bytes:
    """PNG of a grouped bar chart: mean L2 per band (left, log scale) and share of the total error
    (right), one bar per method in each band group."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bands = ev.band_columns
    names = list(ev.methods)
    fig = Figure(figsize=(max(6.0, 1.2 * len(bands) * 2), 4.0))
    FigureCanvasAgg(fig)  # off-screen rendering, no pyplot state
    axes = fig.subplots(1, 2)
    width = 0.8 / max(1, len(names))
    pos = np.arange(len(bands))
    for i, n in enumerate(names):
        m = ev.methods[n]
        means = [m.mean(b) for b in bands]
        shares = [100.0 * v for v in m.shares(ev.levels).values()]
        offset = (i - (len(names) - 1) / 2) * width
        axes[0].bar(pos + offset, means, width, label=n)
        axes[1].bar(pos + offset, shares, width, label=n)
    all_means = [ev.methods[n].mean(b) for n in names for b in bands]
    if all(v > 0 for v in all_means if math.isfinite(v)) and any(math.isfinite(v) for v in all_means):
        axes[0].set_yscale("log")
    axes[0].set_ylabel("mean L2 of the coefficients")
    axes[0].set_title("L2 per sub-band")
    axes[1].set_ylabel("% of the total squared error")
    axes[1].set_title("share of the total error")
    for ax in axes:
        ax.set_xticks(pos)
        ax.set_xticklabels(bands)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    return _figure_png(fig)


def example_key(ev: Evaluation) -> Optional[str]:
    """First image name (sorted) compared for every method, or None."""
    common = None
    for m in ev.methods.values():
        keys = {r["name"] for r in m.rows}
        common = keys if common is None else common & keys
    return min(common) if common else None


def plot_subband_example(ev: Evaluation, key: str) -> bytes:
    """PNG of the level-1 Haar sub-bands of image ``key``: rows GT and each method (see :func:`plot_subbands`)."""
    rows = [("ground truth", next(r["gt_path"] for r in next(iter(ev.methods.values())).rows if r["name"] == key))]
    rows += [(n, next(r["method_path"] for r in m.rows if r["name"] == key)) for n, m in ev.methods.items()]
    images = [(title, load_image(path, ev.size, ev.policy)) for title, path in rows]
    return plot_subbands(images, f"Haar sub-bands (level 1) of {key}")


def plot_subbands(images: Sequence[Tuple[str, torch.Tensor]], title: str = "", tile_inches: float = 2.2,
                  dpi: int = 120) -> bytes:
    """PNG of the level-1 Haar sub-bands of images ``(3, S, S)`` in [-1, 1] (the paper's Figure 2a): one row
    per ``(name, image)``; columns the image, LL (shown as colours, LL/2 is the 2x2 block mean) and |LH|,
    |HL|, |HH| (channel mean, one colour scale per band column, clipped at the 99.5th percentile so a few
    edges do not flatten the rest)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = []
    for name, img in images:
        x = img.detach().to("cpu").unsqueeze(0).double()
        bands = split_bands(dwt(x))
        panels.append((name, x[0], {b: t[0] for b, t in bands.items()}))
    vmax = {b: max(float(np.percentile(p[2][b].abs().mean(0).numpy(), 99.5)) for p in panels) or 1e-12
            for b in HIGH_BANDS}
    fig = Figure(figsize=(tile_inches * 5, tile_inches * len(panels)))
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(len(panels), 5))
    for i, (name, img, bands) in enumerate(panels):
        to_rgb = lambda t: ((t.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()  # noqa: E731
        axes[i, 0].imshow(to_rgb(img), interpolation="nearest")
        axes[i, 1].imshow(to_rgb(bands["LL"] / 2.0), interpolation="nearest")
        for j, b in enumerate(HIGH_BANDS, start=2):
            axes[i, j].imshow(bands[b].abs().mean(0).numpy(), cmap="magma", vmin=0.0, vmax=vmax[b],
                              interpolation="nearest")
        axes[i, 0].set_ylabel(name)
    for j, t in enumerate(["image", "LL", "|LH|", "|HL|", "|HH|"]):
        axes[0, j].set_title(t)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return _figure_png(fig, dpi)


def write_report(ev: Evaluation, out_dir: PathLike, overwrite: bool = False,
                 log: Optional[Callable[[str], None]] = None) -> Dict[str, str]:
    """Write the report files (:data:`REPORT_FILES`) into ``out_dir``; returns ``{file name: path}``.

    Refuses (:class:`OutputExistsError`, before writing anything) when one exists and not ``overwrite``.
    The example figure is left out, with one line, when no image was compared for every method."""
    log = log or logger.warning
    out_dir = os.fspath(out_dir)
    check_report_outputs(out_dir, overwrite)
    contents: Dict[str, bytes] = {
        "results.md": encode_text(markdown_report(ev)),  # a non-UTF-8 file name must not cost the report
        "results.csv": encode_text(csv_report(ev)),
        "results.json": encode_text(json_report(ev)),
    }
    if any(m.rows for m in ev.methods.values()):
        contents["subbands_bar.png"] = plot_subband_bars(ev)
    else:
        log("subbands_bar.png not written: no image pair was compared")
    key = example_key(ev)
    if key is not None:
        contents["subbands_example.png"] = plot_subband_example(ev, key)
    else:
        log("subbands_example.png not written: no image was compared for every method")
    written = {}
    for name, data in contents.items():
        written[name] = os.path.join(out_dir, name)
        atomic_write(written[name], data)
    return written


def check_report_outputs(out_dir: PathLike, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` naming the report files already in ``out_dir`` (unless ``overwrite``)."""
    existing = [n for n in REPORT_FILES if os.path.lexists(os.path.join(os.fspath(out_dir), n))]
    if existing and not overwrite:
        raise OutputExistsError(f"{out_dir} already holds {', '.join(existing)}; pass --overwrite to replace them")
