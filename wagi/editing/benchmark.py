"""Edit-fidelity benchmark on held-out demo faces, with the renderer as ground truth.

For every model × shipped direction × strength factor × fusion setting, each face is inverted once and
edited towards the other state of the direction's attribute: faces without the attribute get
``+strength`` ("add"), faces with it ``-strength`` ("remove"). Four measures:

* **success**: the fraction of "add" faces the attribute judge calls *with* the attribute after the
  edit (and of "remove" faces it calls *without*);
* **leakage**: for every other binary attribute, the fraction of faces whose judge decision differs
  between the unedited reconstruction and the edit (the largest of them is reported, and the mean);
* **preservation**: per-sub-band L2 (Haar level 1: LL, LH, HL, HH) between the edited image and the
  *input* outside the edited attribute's mask grown by ``MASK_DILATE`` pixels; the text on the shirt,
  stripes and pupils must survive a glasses edit. The same number for the unedited reconstruction is
  reported beside it (``recon_*``);
* **ghosting** (removals): the high-band energy of ``edit − render without the attribute`` inside the
  attribute's mask, absolute and relative to the attribute's own high-band energy there (``input −
  render without``): 0 is a clean removal, 1 leaves as much high-frequency change as the attribute had.

The ground-truth labels are the renderer's visible-attribute labels
(:func:`wagi.data.demo_faces.attribute_labels` with ``visible_only``); images are 128 px.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.demo_faces import (
    BINARY_ATTRIBUTES,
    TEST_SEED_OFFSET,
    attribute_labels,
    changed_pixels,
    dilate_mask,
    face_tensor,
    paired_renders,
    render_from_attributes,
    sample_attributes,
)
from ..tensors import resize
from ..wavelets import dwt, split_bands

Tensor = torch.Tensor

EDIT_TEST_SEED_OFFSET = TEST_SEED_OFFSET + 3000  # benchmark faces: used by nothing else (examples/ are 1,002,000+)
EDIT_TUNE_SEED_OFFSET = TEST_SEED_OFFSET + 6000  # faces on which fit_directions.py chooses the strengths
BENCH_SIZE = 128  # every image of the benchmark is compared at the demo generator's resolution
MASK_DILATE = 3  # px: a generated attribute lands within a few pixels of where the renderer draws it
BANDS = ("LL", "LH", "HL", "HH")
HIGH = ("LH", "HL", "HH")


@dataclass
class Face:
    """One benchmark face: its input image ``(3, S, S)``, labels, and the masks / paired renders needed."""

    seed: int
    image: Tensor
    labels: Dict[str, Any]
    masks: Dict[str, np.ndarray]  # attribute -> undilated mask (S, S) of where it is / would be drawn
    without: Dict[str, Tensor]  # attribute -> render without it (only for attributes the face has)


def prepare_faces(seeds: Sequence[int], attributes: Sequence[str], size: int = BENCH_SIZE,
                  progress: bool = False) -> List[Face]:
    """Render the faces of ``seeds`` with their labels, masks and paired renders for ``attributes``."""
    faces = []
    for seed in tqdm(seeds, desc="ground truth", unit="face", disable=not progress):
        attrs = sample_attributes(int(seed))
        labels = attribute_labels(attrs, visible_only=True)
        masks, without = {}, {}
        for name in attributes:
            on, off = paired_renders(attrs, name, size)
            masks[name] = changed_pixels(on, off)  # attribute_mask's rule, without rendering the pair twice
            if labels[name]:
                without[name] = face_tensor(off)
        faces.append(Face(int(seed), face_tensor(render_from_attributes(attrs, size)), labels, masks, without))
    return faces


def _band_sq(x: Tensor, y: Tensor) -> Dict[str, Tensor]:
    """Squared Haar level-1 coefficient differences per band, summed over colours: ``(N, S/2, S/2)``."""
    bands = split_bands(dwt(x.float() - y.float()))
    return {k: v.pow(2).sum(1) for k, v in bands.items()}


def _down_mask(mask: Tensor) -> Tensor:
    """``(N, S, S)`` bool → ``(N, S/2, S/2)``: a coefficient is masked when any of its 2x2 pixels is."""
    return F.max_pool2d(mask.float().unsqueeze(1), 2).squeeze(1) > 0


def masked_band_l2(x: Tensor, y: Tensor, mask: Tensor, inside: bool) -> Dict[str, Tensor]:
    """Per-image, per-band mean squared coefficient difference inside / outside ``mask`` ``(N, S, S)``.

    Normalised like :func:`wagi.metrics.subband_l2` (mean over colours and counted coefficients); an
    image with no coefficient in the region gives NaN.
    """
    region = _down_mask(mask)
    if not inside:
        region = ~region
    count = region.flatten(1).sum(1).float() * x.shape[1]
    return {k: (v * region).flatten(1).sum(1) / count for k, v in _band_sq(x, y).items()}


@dataclass
class EditSetting:
    model: str
    direction: str
    attribute: str
    strength: float
    fuse: bool


def _mean(values: Sequence[float]) -> Optional[float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


class EditBenchmark:
    """Runs the benchmark for a set of models on prepared faces.

    Args:
        judge: an :class:`~wagi.models.judge.AttributeJudge` (eval mode) on ``device``.
        faces: from :func:`prepare_faces`.
        batch_size: images per forward pass.
    """

    def __init__(self, judge, faces: Sequence[Face], device: torch.device, batch_size: int = 16,
                 dilate: int = MASK_DILATE, progress: bool = False):
        self.judge, self.faces, self.device = judge, list(faces), device
        self.batch_size, self.dilate, self.progress = batch_size, dilate, progress
        self.images = torch.stack([f.image for f in self.faces])

    @torch.no_grad()
    def _judge(self, images: Tensor) -> Dict[str, Tensor]:
        out = self.judge.predict(images.to(self.device).clamp(-1, 1))  # as an image file would hold it
        return {k: v.cpu() for k, v in out.items() if k in BINARY_ATTRIBUTES}

    def _dilated(self, attribute: str, index: Sequence[int]) -> Tensor:
        return torch.from_numpy(np.stack([dilate_mask(self.faces[i].masks[attribute], self.dilate) for i in index]))

    @torch.no_grad()
    def run_model(self, name: str, model, directions: Mapping[str, Any], factors: Sequence[float] = (1.0,),
                  fuse_modes: Sequence[bool] = (False, True)) -> List[Dict[str, Any]]:
        """Rows of results for one model (see :func:`summary_rows` for the columns)."""
        model = model.to(self.device).eval()
        has_fusion = getattr(model, "fusion", None) is not None
        modes = [m for m in fuse_modes if has_fusion or not m] or [False]
        n = len(self.faces)
        # invert every face once
        codes, bases, xs = [], [], []
        recon: Dict[bool, List[Tensor]] = {m: [] for m in modes}
        for i in tqdm(range(0, n, self.batch_size), desc=f"{name}: invert", disable=not self.progress):
            x = resize(self.images[i:i + self.batch_size].to(self.device), model.image_size)
            w = model.encode(x)
            branches = model.synthesize(w)
            base = model.compose(branches)
            codes.append(w)
            bases.append(base)
            xs.append(x)
            for m in modes:
                out = model.fused_decode(w, branches, model.fusion_outputs(x, base)) if m else base
                recon[m].append(resize(out, BENCH_SIZE).cpu())
        recon_t = {m: torch.cat(v) for m, v in recon.items()}
        recon_judge = {m: self._judge_all(recon_t[m]) for m in modes}
        rows = []
        for dname, sd in directions.items():
            attr = sd.attribute
            gt = torch.tensor([bool(f.labels[attr]) for f in self.faces])
            for factor in factors:
                strength = float(sd.strength) * float(factor)
                signs = torch.where(gt, -1.0, 1.0)
                for m in modes:
                    edited = []
                    for b, i in enumerate(range(0, n, self.batch_size)):
                        s = signs[i:i + self.batch_size].to(self.device).view(-1, 1, 1)
                        d = sd.direction.to(self.device)
                        d = d.expand(model.n_latent, -1) if d.shape[0] == 1 else d
                        shift = s * d.unsqueeze(0)  # (B, n_latent, D): +strength adds, -strength removes
                        out = model.render_edit(codes[b], shift, strength, xs[b], bases[b], fuse=m)
                        edited.append(resize(out, BENCH_SIZE).cpu())
                    edited_t = torch.cat(edited).float()
                    rows.append(self._score(EditSetting(name, dname, attr, strength, m), gt, edited_t,
                                            recon_t[m].float(), recon_judge[m]))
        return rows

    def _judge_all(self, images: Tensor) -> Dict[str, Tensor]:
        parts = [self._judge(images[i:i + 64]) for i in range(0, images.shape[0], 64)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _score(self, setting: EditSetting, gt: Tensor, edited: Tensor, recon: Tensor,
               recon_judge: Dict[str, Tensor]) -> Dict[str, Any]:
        attr = setting.attribute
        after = self._judge_all(edited)
        add, rem = ~gt, gt
        row: Dict[str, Any] = {"model": setting.model, "direction": setting.direction, "attribute": attr,
                               "strength": setting.strength, "fusion": setting.fuse,
                               "n_add": int(add.sum()), "n_remove": int(rem.sum())}
        row["success_add"] = float(after[attr][add].float().mean()) if add.any() else None
        row["success_remove"] = float((~after[attr][rem]).float().mean()) if rem.any() else None
        row["recon_has_when_absent"] = float(recon_judge[attr][add].float().mean()) if add.any() else None
        row["recon_has_when_present"] = float(recon_judge[attr][rem].float().mean()) if rem.any() else None
        # success on the faces whose reconstruction the judge reads right: a removal is not free there
        add_ok, rem_ok = add & ~recon_judge[attr], rem & recon_judge[attr]
        row["success_add_readable"] = float(after[attr][add_ok].float().mean()) if add_ok.any() else None
        row["success_remove_readable"] = float((~after[attr][rem_ok]).float().mean()) if rem_ok.any() else None
        others = {b: float((after[b] != recon_judge[b]).float().mean()) for b in after if b != attr}
        row["leakage"] = others
        row["leakage_max"] = max(others.values()) if others else None
        row["leakage_mean"] = _mean(list(others.values()))
        idx = list(range(len(self.faces)))
        outside = self._dilated(attr, idx)
        x = self.images.float()
        kept = masked_band_l2(edited, x, outside, inside=False)
        base = masked_band_l2(recon, x, outside, inside=False)
        for k in BANDS:
            row[f"preserve_{k}"] = _mean(kept[k].tolist())
            row[f"recon_{k}"] = _mean(base[k].tolist())
        row["preserve_high"] = _mean([row[f"preserve_{k}"] for k in HIGH])
        # ghosting: removal faces only, inside the attribute's own (undilated) mask
        ridx = [i for i in idx if bool(gt[i])]
        if ridx:
            mask = torch.from_numpy(np.stack([self.faces[i].masks[attr] for i in ridx]))
            clean = torch.stack([self.faces[i].without[attr] for i in ridx]).float()
            left = masked_band_l2(edited[ridx], clean, mask, inside=True)
            own = masked_band_l2(x[ridx], clean, mask, inside=True)
            recon_err = masked_band_l2(recon[ridx], x[ridx], mask, inside=True)
            ghost = sum(left[k] for k in HIGH) / 3
            own_e = sum(own[k] for k in HIGH) / 3
            row["ghost_high"] = _mean(ghost.tolist())
            # ratio of sums: faces whose attribute carries little HF energy do not dominate
            row["ghost_relative"] = float(ghost.sum() / own_e.sum().clamp_min(1e-12))
            # the model's own HF error in the same region before editing: the floor a removal cannot beat
            row["ghost_floor"] = _mean((sum(recon_err[k] for k in HIGH) / 3).tolist())
        else:
            row["ghost_high"] = row["ghost_relative"] = row["ghost_floor"] = None
        return row


# ----------------------------------------------------------------------------------------- reports
SUMMARY_COLUMNS = ("model", "fusion", "direction", "strength", "n_add", "n_remove", "success_add", "success_remove",
                   "success_add_readable", "success_remove_readable", "recon_has_when_absent",
                   "recon_has_when_present", "leakage_max", "leakage_mean", "preserve_LL", "preserve_LH", "preserve_HL",
                   "preserve_HH", "preserve_high", "recon_LL", "recon_LH", "recon_HL", "recon_HH", "ghost_high",
                   "ghost_relative", "ghost_floor")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        if abs(v) >= 0.01 or v == 0:
            return f"{v:.3f}"
        return f"{v:.3g}"
    return str(v)


def markdown_tables(rows: Sequence[Mapping[str, Any]]) -> str:
    """Two Markdown tables: success / leakage / ghosting, and preservation per band."""
    a = ["| model | fusion | direction | strength | add ✓ | remove ✓ | remove ✓ (recon kept it) | recon kept | "
         "leakage max | leakage mean | ghost HF | ghost floor | ghost rel. |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    b = ["| model | fusion | direction | strength | LL | LH | HL | HH | HF mean | recon LH | recon HL | recon HH |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a.append("| " + " | ".join(_fmt(r[k]) for k in ("model", "fusion", "direction", "strength", "success_add",
                                                           "success_remove", "success_remove_readable",
                                                           "recon_has_when_present", "leakage_max", "leakage_mean",
                                                           "ghost_high", "ghost_floor", "ghost_relative")) + " |")
        b.append("| " + " | ".join(_fmt(r[k]) for k in ("model", "fusion", "direction", "strength", "preserve_LL",
                                                           "preserve_LH", "preserve_HL", "preserve_HH", "preserve_high",
                                                           "recon_LH", "recon_HL", "recon_HH")) + " |")
    return ("Edit success, leakage and ghosting\n\n" + "\n".join(a) +
            "\n\nPreservation outside the edited attribute's mask (per-band L2 against the input)\n\n" + "\n".join(b)
            + "\n")


def _factor(row: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> float:
    """The strength factor of a row: its strength over the smallest strength of its direction."""
    base = min(r["strength"] for r in rows if r["direction"] == row["direction"] and r["model"] == row["model"])
    return round(row["strength"] / base, 6) if base else 1.0


SUMMARY_KEYS = ("success_add", "success_remove", "success_remove_readable", "leakage_max", "preserve_LL",
                "preserve_high", "ghost_relative")


def model_summary(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per model, fusion setting and strength factor (relative to each direction's smallest), the means
    over directions (one line each)."""
    tagged = [(r, _factor(r, rows)) for r in rows]
    keys = sorted({(r["model"], r["fusion"], f) for r, f in tagged})
    out = []
    for model, fuse, f in keys:
        sel = [r for r, g in tagged if r["model"] == model and r["fusion"] == fuse and g == f]
        out.append({"model": model, "fusion": fuse, "factor": f,
                    **{k: _mean([r[k] for r in sel]) for k in SUMMARY_KEYS}})
    return out


def summary_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    s = model_summary(rows)
    lines = ["| model | fusion | × strength | add ✓ | remove ✓ | remove ✓ (recon kept it) | leakage max | "
             "preserve LL | preserve HF | ghost rel. |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in s:
        lines.append("| " + " | ".join(_fmt(r[k]) for k in ("model", "fusion", "factor") + SUMMARY_KEYS) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(SUMMARY_COLUMNS)
    for r in rows:
        w.writerow(["" if r[k] is None else r[k] for k in SUMMARY_COLUMNS])
    return buf.getvalue()


def json_text(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v
    return json.dumps({"meta": dict(meta), "rows": [clean(dict(r)) for r in rows]}, indent=1) + "\n"


# ----------------------------------------------------------------------------------------- figure
FIGURE_TILE = 128  # px per image in the figure
FIGURE_DIRECTIONS = 4  # rows: the first directions, one face each (alternating add / remove)
CROP_PAD = 6  # px of context around the attribute's mask in the zoomed crop


def _tile(img: Tensor) -> np.ndarray:
    x = ((img.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return x


def _crop(img: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    if len(ys) == 0:
        y0, y1, x0, x1 = 0, h, 0, w
    else:
        y0, y1 = max(0, ys.min() - CROP_PAD), min(h, ys.max() + 1 + CROP_PAD)
        x0, x1 = max(0, xs.min() - CROP_PAD), min(w, xs.max() + 1 + CROP_PAD)
        side = max(y1 - y0, x1 - x0)  # square crop, so the zoom keeps the aspect
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        y0, x0 = min(max(0, cy - side // 2), h - side), min(max(0, cx - side // 2), w - side)
        y0, x0 = max(0, y0), max(0, x0)
        y1, x1 = y0 + side, x0 + side
    return np.asarray(Image.fromarray(img[y0:y1, x0:x1]).resize((size, size), Image.NEAREST))


@torch.no_grad()
def edit_figure(models: Mapping[str, Any], directions: Mapping[str, Any], faces: Sequence[Face],
                device: torch.device) -> bytes:
    """PNG: per row one direction on one face; columns: input, then per model the edit (fusion on where
    the model has one) and a zoomed crop of the attribute's region."""
    from PIL import Image, ImageDraw
    rows = []
    names = list(directions)[:FIGURE_DIRECTIONS]
    for r, dname in enumerate(names):
        sd = directions[dname]
        want = r % 2 == 1  # alternate: add on a face without, remove on a face with the attribute
        face = next((f for f in faces if bool(f.labels[sd.attribute]) == want), faces[0])
        sign = -1.0 if face.labels[sd.attribute] else 1.0
        mask = dilate_mask(face.masks[sd.attribute], MASK_DILATE)
        x = face.image.unsqueeze(0).to(device)
        tiles = [_tile(face.image), _crop(_tile(face.image), mask, FIGURE_TILE)]
        for model in models.values():
            model = model.to(device).eval()
            out = model.edit(x, sign * sd.direction.to(device), sd.strength, fuse=True)[0].cpu()
            tiles += [_tile(resize(out[None], BENCH_SIZE)[0]), _crop(_tile(resize(out[None], BENCH_SIZE)[0]), mask,
                                                                      FIGURE_TILE)]
        label = f"{'+' if sign > 0 else '-'}{dname}"
        rows.append((label, tiles))
    head = 14
    n_cols = len(rows[0][1]) if rows else 0
    canvas = Image.new("RGB", (n_cols * FIGURE_TILE, head + len(rows) * (FIGURE_TILE + head)), "white")
    d = ImageDraw.Draw(canvas)
    titles = ["input", "crop"] + [t for m in models for t in (m, "crop")]
    for c, t in enumerate(titles):
        d.text((c * FIGURE_TILE + 3, 1), t, fill="black")
    for r, (label, tiles) in enumerate(rows):
        y = head + r * (FIGURE_TILE + head)
        d.text((3, y), label, fill="black")
        for c, t in enumerate(tiles):
            canvas.paste(Image.fromarray(t), (c * FIGURE_TILE, y + head))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


__all__ = ["EDIT_TEST_SEED_OFFSET", "EDIT_TUNE_SEED_OFFSET", "MASK_DILATE", "Face", "prepare_faces",
           "masked_band_l2", "EditBenchmark", "markdown_tables", "summary_markdown", "model_summary", "csv_text",
           "json_text", "edit_figure"]
