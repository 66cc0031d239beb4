"""Qualitative comparison figure: ground truth and each method's reconstruction, with zoomed crops.

Layout of the PNG (pixel-exact, see :func:`grid_layout`): one row per test image; one column block
per image source, ground truth first, then the methods in the given order. A block is the full
image (a ``T x T`` tile) followed by its crops (``T x T`` tiles each, nearest-neighbour upscaled).
Every crop window is outlined on the full images in the crop's colour, and the crop tile carries a
frame of the same colour. Under the ground-truth crops: the crop name and its magnification; under
a method's crops: the mean squared error against the ground truth inside that window.

Crops come from :func:`detail_boxes`, the pixel boxes of the regions with high-frequency detail in
a demo face (``text``: the printed text or badge; ``eyes``: both eyes with the glasses lenses;
``ears``: the left ear in the image with its earring; ``necklace``), computed from the face's
attribute dict (:func:`wagi.data.demo_faces.sample_attributes`) with the renderer's geometry.
Attributes come from a ``labels.jsonl`` (``scripts/make_demo_dataset.py --labels``) or, for the
files ``{i:06d}.png`` that ``make_demo_dataset`` writes, from the seed ``seed_offset + i``, used only
when rendering that seed reproduces the file. Images without attributes get :data:`FIXED_BOXES`.

Crop window: the detail box grown to a square of at least ``size / zoom`` pixels around the box
centre, shifted to lie inside the image, so the crop is magnified ``zoom`` times relative to the full
image (less when the detail is larger than ``size / zoom``).

Per-crop error: ``mean((x - y)^2)`` over the 3 channels and the pixels of the crop window, with both
images as loaded by :func:`wagi.imageio.load_image` (``(3, S, S)`` in ``[-1, 1]``; a reconstruction of
another size is resized to the ground truth's ``S``). Unit: squared ``[-1, 1]`` pixel values (an
error of one 8-bit level everywhere gives ``(2/255)^2 = 6.2e-5``).
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from wagi.data.demo_faces import (
    BEAD_RADIUS,
    EARRING_RADIUS,
    LABELS_FILE,
    REFERENCE_SIZE,
    TEST_SEED_OFFSET,
    face_tensor,
    neckline_y,
    render_from_attributes,
    sample_attributes,
    text_unit_box,
)
from wagi.evaluation import index_by_key, pair_key
from wagi.fileio import PathLike
from wagi.imageio import ImageItem, InputNotFoundError, find_images, load_image

logger = logging.getLogger(__name__)

Box = Tuple[int, int, int, int]  # (x0, y0, x1, y1) pixels, x1 and y1 exclusive
UnitBox = Tuple[float, float, float, float]

CROP_NAMES: Tuple[str, ...] = ("text", "eyes", "ears", "necklace")
AUTO_CROPS = "auto"
CROP_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "text": (230, 25, 75), "eyes": (0, 130, 230), "ears": (245, 150, 0), "necklace": (150, 40, 210),
}
# Where the details of a demo face lie (unit square), for images without attributes: each box spans
# from the 10th percentile of the detail boxes' left/top edges to the 90th percentile of their
# right/bottom edges over 2000 held-out seeds; a non-demo image gets the same regions.
FIXED_BOXES: Dict[str, UnitBox] = {
    "text": (0.33, 0.80, 0.67, 0.99),
    "eyes": (0.26, 0.33, 0.74, 0.50),
    "ears": (0.20, 0.35, 0.37, 0.54),
    "necklace": (0.32, 0.67, 0.68, 0.84),
}
DETAIL_MARGIN = 1.5 / REFERENCE_SIZE  # unit square: anti-aliased edges reach ~1.5 px beyond the drawn shapes
MIN_VISIBLE_TEXT = 0.75  # a text box counts as visible when this share of it lies inside the image
DEMO_NAME = re.compile(r"^(\d{6})$")  # make_demo_dataset's file names, without extension
RENDER_MATCH_TOL = 1.5 / 127.5  # [-1, 1] units: a re-rendered seed must match its file within 1.5 levels

# Figure layout, in output pixels (dpi = DPI, so 1 pt = DPI / 72 px)
MAX_WIDTH = 1600  # readable in a README without being scaled to mush
MAX_TILE = 256
MIN_TILE = 32  # below this a crop shows nothing: refuse instead
DPI = 100
MARGIN_LEFT = 22  # the image names, written vertically
MARGIN_RIGHT = 6
HEADER = 26  # the column (method) names
LABEL_STRIP = 16  # under each tile: crop name or error
FOOTER = 22
ROW_GAP = 6
BLOCK_GAP = 12
CROP_GAP = 4
FRAME_PX = 2  # coloured frame of a crop tile
BACKGROUND = 255


class FigureInputError(ValueError):
    """Bad input for the figure (missing folder or image, unknown crop or name); one-line message."""


# --------------------------------------------------------------------------------------------
# Detail boxes
# --------------------------------------------------------------------------------------------
def detail_unit_boxes(attributes: Mapping[str, Any]) -> Dict[str, UnitBox]:
    """Unit-square boxes (``x0, y0, x1, y1``, not clipped) of the detail regions of a demo face.

    Each region is given whether or not the face draws its detail (``has_text=False`` still gives the
    place where the text would be). The geometry follows ``wagi.data.demo_faces``' drawing code.
    """
    a = attributes
    cx, cy, rx = a["head_cx"], a["head_cy"], a["head_rx"]
    ry = rx * a["head_aspect"]
    neck_y = neckline_y(a)
    text = text_unit_box(a)  # the renderer's own glyphs and placement

    # eyes: socket shadow and lashes of both eyes, and the lenses when the face wears glasses
    ey = cy + ry * a["eye_y"]
    ew = rx * a["eye_width"]
    eh = ew * a["eye_openness"]
    spread = rx * a["eye_spacing"]
    reach, top, bottom = spread + 1.2 * ew, ey - 1.2 * eh, ey + 0.9 * eh
    if a["has_glasses"]:  # lenses, and the temple arms that run out to 0.95 of the head half-width
        lw = min(ew * 1.45, rx * (a["eye_spacing"] - 0.07))
        lh = max(lw * 0.72, eh * 1.2)
        reach = max(reach, spread + lw, rx * 0.95)
        top, bottom = min(top, ey + eh * 0.1 - lh), max(bottom, ey + eh * 0.1 + lh)
    eyes = (cx - reach, top, cx + reach, bottom)

    # ears: the ear on the left of the image with its earring (renderer: lobe at 0.2 erx out, 0.85 ery down)
    ex, ey_ear = cx - rx * 0.97, cy + ry * 0.05
    erx, ery = rx * 0.16, ry * 0.2
    lobe_x, lobe_y = ex - erx * 0.2, ey_ear + ery * 0.85
    r = EARRING_RADIUS
    x0, y1 = ex - erx, ey_ear + ery
    if a["has_earrings"]:
        reach_x, reach_y = {"stud": (r, r), "hoop": (2.2 * r, 5.4 * r), "drop": (1.1 * r, 0.032 + 1.4 * r)}[
            a["earring_style"]]
        x0, y1 = min(x0, lobe_x - reach_x), max(y1, lobe_y + reach_y)
    ears = (x0, ey_ear - ery, ex + erx, y1)

    # necklace: beads along a parabola across the neckline
    half = rx * 0.48 * 1.25
    y0n = neck_y - 0.035
    necklace = (cx - half - BEAD_RADIUS, y0n - BEAD_RADIUS, cx + half + BEAD_RADIUS,
                y0n + a["necklace_sag"] + BEAD_RADIUS)

    m = DETAIL_MARGIN
    return {name: (b[0] - m, b[1] - m, b[2] + m, b[3] + m)
            for name, b in (("text", text), ("eyes", eyes), ("ears", ears), ("necklace", necklace))}


def _to_pixels(box: UnitBox, size: int) -> Box:
    x0, y0, x1, y1 = box
    clip = lambda v: min(size, max(0, v))  # noqa: E731
    return (clip(math.floor(x0 * size)), clip(math.floor(y0 * size)),
            clip(math.ceil(x1 * size)), clip(math.ceil(y1 * size)))


def detail_boxes(attributes: Mapping[str, Any], size: int) -> Dict[str, Box]:
    """Pixel boxes ``{name: (x0, y0, x1, y1)}`` (x1, y1 exclusive, clipped to the image) of the detail
    regions ``text``, ``eyes``, ``ears`` and ``necklace`` of the demo face ``attributes`` at ``size``².

    A box that lies wholly outside the image (text below the bottom edge) comes back empty
    (``x0 == x1`` or ``y0 == y1``)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    return {name: _to_pixels(b, size) for name, b in detail_unit_boxes(attributes).items()}


def fixed_boxes(size: int) -> Dict[str, Box]:
    """:data:`FIXED_BOXES` in pixels of a ``size``² image: the crops of images without attributes."""
    return {name: _to_pixels(b, size) for name, b in FIXED_BOXES.items()}


def text_visible(attributes: Mapping[str, Any]) -> bool:
    """The face draws text and at least ``MIN_VISIBLE_TEXT`` of its box lies inside the image."""
    if not attributes.get("has_text"):
        return False
    x0, y0, x1, y1 = detail_unit_boxes(attributes)["text"]
    inside = max(0.0, min(x1, 1.0) - max(x0, 0.0)) * max(0.0, min(y1, 1.0) - max(y0, 0.0))
    return inside >= MIN_VISIBLE_TEXT * (x1 - x0) * (y1 - y0)


def crop_window(box: Box, size: int, zoom: float) -> Box:
    """Square window around ``box``: side ``max(ceil(size / zoom), box width, box height)`` (at most
    ``size``), centred on the box and shifted to lie inside the ``size``² image."""
    if zoom < 1:
        raise ValueError(f"zoom must be >= 1, got {zoom}")
    x0, y0, x1, y1 = box
    side = min(size, max(math.ceil(size / zoom), x1 - x0, y1 - y0))
    left = min(size - side, max(0, int(math.floor((x0 + x1 - side) / 2))))
    top = min(size - side, max(0, int(math.floor((y0 + y1 - side) / 2))))
    return left, top, left + side, top + side


def box_mse(x: torch.Tensor, y: torch.Tensor, box: Box) -> float:
    """Mean squared difference of ``(C, H, W)`` images ``x`` and ``y`` over the pixels of ``box``."""
    if x.shape != y.shape:
        raise ValueError(f"box_mse needs images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {box} is empty")
    d = x[:, y0:y1, x0:x1].double() - y[:, y0:y1, x0:x1].double()
    return float(d.pow(2).mean())


# --------------------------------------------------------------------------------------------
# Attributes of the images
# --------------------------------------------------------------------------------------------
def read_labels(path: PathLike) -> Dict[str, Dict[str, Any]]:
    """``labels.jsonl`` (one JSON object per line with ``file`` and the attributes) as ``{key: record}``,
    keyed like the image matching (file path without extension)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FigureInputError(f"labels file {path} not found")
    records: Dict[str, Dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise FigureInputError(f"{path}:{n}: not a JSON object ({err.msg})") from None
            if not isinstance(rec, dict) or "file" not in rec:
                raise FigureInputError(f"{path}:{n}: a record needs a 'file' key")
            records[pair_key(str(rec["file"]))] = rec
    return records


def seed_of_name(key: str, seed_offset: int) -> Optional[int]:
    """Seed of a ``make_demo_dataset`` file ``{i:06d}`` (key without extension): ``seed_offset + i``."""
    m = DEMO_NAME.match(key)
    return seed_offset + int(m.group(1)) if m else None


def renders_as(attributes: Mapping[str, Any], image: torch.Tensor) -> bool:
    """Whether ``attributes`` rendered at the image's size reproduce ``image`` ``(3, S, S)`` in [-1, 1]."""
    size = image.shape[-1]
    if image.shape[-2] != size or size % 16:
        return False
    rendered = face_tensor(render_from_attributes(dict(attributes), size))
    return bool((rendered - image.float()).abs().max() <= RENDER_MATCH_TOL)


# --------------------------------------------------------------------------------------------
# Choosing images and crops
# --------------------------------------------------------------------------------------------
def parse_crops(spec: Union[str, Sequence[str]]) -> Optional[List[str]]:
    """``'auto'`` -> None (chosen per image); ``'text,eyes,ears'`` or a list -> the names, checked."""
    if isinstance(spec, str):
        if spec.strip() == AUTO_CROPS:
            return None
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    names = list(spec)
    if not names:
        raise FigureInputError(f"no crop given; use {AUTO_CROPS} or names from {', '.join(CROP_NAMES)}")
    unknown = [n for n in names if n not in CROP_NAMES]
    if unknown:
        raise FigureInputError(f"unknown crop name(s) {', '.join(map(repr, unknown))}; "
                               f"choose from {', '.join(CROP_NAMES)} or {AUTO_CROPS}")
    return names


def auto_crops(attributes: Optional[Mapping[str, Any]]) -> List[str]:
    """Text, eyes, and the ear when the face wears earrings, else the necklace when it wears one."""
    if attributes and not attributes.get("has_earrings") and attributes.get("has_necklace"):
        return ["text", "eyes", "necklace"]
    return ["text", "eyes", "ears"]


def detail_score(attributes: Optional[Mapping[str, Any]]) -> int:
    """Ranking for the automatic choice: visible text first, then glasses, then earrings or a necklace."""
    if not attributes:
        return 0
    return (4 * text_visible(attributes) + 2 * bool(attributes.get("has_glasses"))
            + bool(attributes.get("has_earrings") or attributes.get("has_necklace")))


def choose_images(keys: Sequence[str], attributes: Mapping[str, Optional[Mapping[str, Any]]], n: int) -> List[str]:
    """The ``n`` keys with the highest :func:`detail_score` (ties: by name), shown in name order."""
    ranked = sorted(keys, key=lambda k: (-detail_score(attributes.get(k)), k))
    return sorted(ranked[:n])


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of the figure: ``tile`` is the side of every image and crop tile."""

    n_rows: int
    n_blocks: int
    n_crops: int
    tile: int
    width: int
    height: int

    def block_x(self, b: int) -> int:
        return MARGIN_LEFT + b * (self.block_width + BLOCK_GAP)

    @property
    def block_width(self) -> int:
        return (1 + self.n_crops) * self.tile + self.n_crops * CROP_GAP

    def tile_x(self, b: int, j: int) -> int:
        """Left edge of tile ``j`` of block ``b`` (j = 0 the full image, j >= 1 the crops)."""
        return self.block_x(b) + j * self.tile + j * CROP_GAP

    def row_y(self, r: int) -> int:
        return HEADER + r * (self.tile + LABEL_STRIP + ROW_GAP)


def grid_layout(n_rows: int, n_blocks: int, n_crops: int, max_width: int = MAX_WIDTH) -> GridLayout:
    """Tiles as large as ``max_width`` allows (at most ``MAX_TILE``):

    ``width = MARGIN_LEFT + n_blocks * ((1 + n_crops) * tile + n_crops * CROP_GAP) + (n_blocks - 1) * BLOCK_GAP
    + MARGIN_RIGHT``; ``height = HEADER + n_rows * (tile + LABEL_STRIP) + (n_rows - 1) * ROW_GAP + FOOTER``.
    """
    fixed = MARGIN_LEFT + MARGIN_RIGHT + n_blocks * n_crops * CROP_GAP + (n_blocks - 1) * BLOCK_GAP
    tile = min(MAX_TILE, (max_width - fixed) // (n_blocks * (1 + n_crops)))
    if tile < MIN_TILE:
        raise FigureInputError(f"{n_blocks} columns of {1 + n_crops} tiles do not fit {max_width} px "
                               f"(tiles would be {tile} px, minimum {MIN_TILE}): use fewer methods or crops")
    width = fixed + n_blocks * (1 + n_crops) * tile
    height = HEADER + n_rows * (tile + LABEL_STRIP) + (n_rows - 1) * ROW_GAP + FOOTER
    return GridLayout(n_rows, n_blocks, n_crops, tile, width, height)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _nearest(arr: np.ndarray, out: int) -> np.ndarray:
    """Nearest-neighbour resize of ``(h, w, 3)`` to ``(out, out, 3)``: every output pixel copies one input pixel."""
    h, w = arr.shape[:2]
    rows = np.minimum(h - 1, (np.arange(out) + 0.5) * h // out).astype(np.int64)
    cols = np.minimum(w - 1, (np.arange(out) + 0.5) * w // out).astype(np.int64)
    return arr[rows][:, cols]


def _full_tile(arr: np.ndarray, tile: int) -> np.ndarray:
    if arr.shape[0] <= tile:
        return _nearest(arr, tile)  # enlarged: pixels stay sharp, as in the crops
    return np.asarray(Image.fromarray(arr).resize((tile, tile), Image.LANCZOS))  # reduced: antialiased


def _outline(canvas: np.ndarray, x0: int, y0: int, x1: int, y1: int, colour, width: int) -> None:
    """Rectangle outline just inside ``[x0, x1) x [y0, y1)``."""
    canvas[y0:y0 + width, x0:x1] = colour
    canvas[y1 - width:y1, x0:x1] = colour
    canvas[y0:y1, x0:x0 + width] = colour
    canvas[y0:y1, x1 - width:x1] = colour


# --------------------------------------------------------------------------------------------
# The figure
# --------------------------------------------------------------------------------------------
@dataclass
class GridRow:
    """One image of the figure: ``source`` of its boxes is ``'labels'``, ``'seed'`` or ``'fixed'``;
    ``windows`` maps crop name to its pixel window; ``errors[method][crop]`` is the crop MSE."""

    key: str
    gt_path: str
    size: int
    source: str
    windows: Dict[str, Box]
    errors: Dict[str, Dict[str, float]] = field(default_factory=dict)
    method_paths: Dict[str, str] = field(default_factory=dict)


@dataclass
class QualitativeFigure:
    png: bytes
    layout: GridLayout
    rows: List[GridRow]

    def error_table(self) -> str:
        """Markdown table of the crop errors: one line per image and method, one column per crop
        position (the crop names are in the cells, as ``auto`` may pick other crops per image)."""
        k = self.layout.n_crops
        lines = ["| image | method | " + " | ".join(f"crop {i + 1}: MSE" for i in range(k)) + " |",
                 "|---|---|" + "---|" * k]
        for row in self.rows:
            for method, errs in row.errors.items():
                cells = [f"{name} {v:.3e}" for name, v in errs.items()]
                lines.append(f"| {row.key} | {method} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _load_square(path: str) -> torch.Tensor:
    x = load_image(path, None)
    h, w = x.shape[-2:]
    return x if h == w else load_image(path, min(h, w))  # centre square: the boxes live in a square


def qualitative_grid(
    gt_dir: PathLike,
    methods: Mapping[str, PathLike],
    *,
    names: Optional[Sequence[str]] = None,
    n: int = 4,
    crops: Union[str, Sequence[str]] = AUTO_CROPS,
    zoom: float = 3.0,
    labels: Optional[PathLike] = None,
    seed_offset: int = TEST_SEED_OFFSET,
    max_width: int = MAX_WIDTH,
    log: Callable[[str], None] = logger.warning,
) -> QualitativeFigure:
    """Build the comparison figure (see the module docstring) and return its PNG bytes and numbers.

    Args:
        gt_dir: folder of ground-truth images (searched recursively, like ``eval_subbands.py``).
        methods: ``{name: folder}`` of reconstructions, matched to the GT by path without extension.
        names: the GT keys to show (path without extension, e.g. ``'000003'``); default: ``n`` images
            chosen by :func:`choose_images` (visible text first, then glasses, earrings/necklace).
        crops: ``'auto'`` (per image: :func:`auto_crops`) or crop names from ``CROP_NAMES``.
        zoom: nominal crop magnification (>= 1).
        labels: a ``labels.jsonl``; default ``gt_dir/labels.jsonl`` when present.
        seed_offset: for GT files named ``{i:06d}`` without labels: try seed ``seed_offset + i``
            (kept only when it re-renders the file).
    Raises:
        FigureInputError: missing folder, GT image missing in a method folder (named), unknown crop
            or image name, figure too wide. ``ImageLoadError`` for an unreadable image.
    """
    gt_dir = os.fspath(gt_dir)
    if not os.path.isdir(gt_dir):
        raise FigureInputError(f"ground-truth folder {gt_dir} not found")
    if not methods:
        raise FigureInputError("give at least one method (NAME=DIR)")
    for name, folder in methods.items():
        if not os.path.isdir(folder):
            raise FigureInputError(f"method {name}: folder {os.fspath(folder)} not found")
    if zoom < 1:
        raise FigureInputError(f"zoom must be >= 1, got {zoom}")
    if n < 1:
        raise FigureInputError(f"the number of images must be >= 1, got {n}")
    crop_names = parse_crops(crops)

    try:
        gt_index, gt_ambiguous = index_by_key(find_images(gt_dir))
    except InputNotFoundError:
        raise FigureInputError(f"ground-truth folder {gt_dir} holds no image") from None
    if not gt_index:
        raise FigureInputError(f"ground-truth folder {gt_dir}: every name is ambiguous ({', '.join(gt_ambiguous)})")

    if labels is None and os.path.isfile(os.path.join(gt_dir, LABELS_FILE)):
        labels = os.path.join(gt_dir, LABELS_FILE)
    records = read_labels(labels) if labels is not None else {}
    attributes: Dict[str, Optional[Dict[str, Any]]] = {}
    seeded: Dict[str, bool] = {}
    for key in gt_index:
        if key in records:
            attributes[key] = records[key]
        else:
            seed = seed_of_name(key, seed_offset)
            attributes[key] = sample_attributes(seed) if seed is not None else None
            seeded[key] = seed is not None

    if names is not None:
        names = [pair_key(k) if k not in gt_index else k for k in names]
        unknown = [k for k in names if k not in gt_index]
        if unknown:
            raise FigureInputError(f"image(s) {', '.join(unknown)} not in the ground-truth folder {gt_dir}")
        chosen = list(dict.fromkeys(names))
    else:
        if any(seeded.values()):
            # Names like 000007 do not prove a demo face: check one seed before ranking by its attributes.
            probe = min(k for k, s in seeded.items() if s)
            if not renders_as(attributes[probe], _load_square(gt_index[probe].path)):
                log(f"{probe}: not the demo face of seed {seed_of_name(probe, seed_offset)} "
                    f"(--seed-offset {seed_offset}); crops use the fixed boxes")
                for k in seeded:
                    if seeded[k]:
                        attributes[k] = None
        chosen = choose_images(sorted(gt_index), attributes, n)

    method_index: Dict[str, Dict[str, ImageItem]] = {}
    for name, folder in methods.items():
        try:
            found, _ = index_by_key(find_images(folder))
        except InputNotFoundError:
            found = {}
        missing = [k for k in chosen if k not in found]
        if missing:
            raise FigureInputError(f"method {name} ({os.fspath(folder)}) has no image for "
                                   f"{', '.join(gt_index[k].rel for k in missing)}")
        method_index[name] = found

    n_crops = len(crop_names) if crop_names is not None else len(auto_crops(None))
    layout = grid_layout(len(chosen), 1 + len(methods), n_crops, max_width)  # too wide: fail before loading
    rows: List[GridRow] = []
    images: List[List[np.ndarray]] = []
    for key in chosen:
        gt = _load_square(gt_index[key].path)
        size = gt.shape[-1]
        attrs = attributes.get(key)
        source = "labels" if key in records else "seed"
        if attrs is not None and seeded.get(key) and not renders_as(attrs, gt):
            log(f"{key}: not the demo face of seed {seed_of_name(key, seed_offset)}; crops use the fixed boxes")
            attrs = None
        if attrs is None:
            boxes, source = fixed_boxes(size), "fixed"
        else:
            boxes = detail_boxes(attrs, size)
        names_here = crop_names if crop_names is not None else auto_crops(attrs)
        windows = {c: crop_window(boxes[c], size, zoom) for c in names_here}
        row = GridRow(key, gt_index[key].path, size, source, windows)
        tiles = [_to_uint8(gt)]
        for name in methods:
            item = method_index[name][key]
            y = load_image(item.path, size)
            row.method_paths[name] = item.path
            row.errors[name] = {c: box_mse(gt, y, w) for c, w in windows.items()}
            tiles.append(_to_uint8(y))
        rows.append(row)
        images.append(tiles)

    png = _render(layout, rows, images, ["ground truth"] + list(methods), zoom)
    return QualitativeFigure(png, layout, rows)


def _render(layout: GridLayout, rows: List[GridRow], images: List[List[np.ndarray]], columns: List[str],
            zoom: float) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    T = layout.tile
    canvas = np.full((layout.height, layout.width, 3), BACKGROUND, dtype=np.uint8)
    line = max(1, T // 96)
    texts: List[Tuple[float, float, str, Dict[str, Any]]] = []
    for b, title in enumerate(columns):
        texts.append((layout.block_x(b) + layout.block_width / 2, HEADER / 2, title,
                      dict(ha="center", va="center", fontsize=10, fontweight="bold")))
    for r, (row, tiles) in enumerate(zip(rows, images)):
        y = layout.row_y(r)
        scale = T / row.size
        texts.append((MARGIN_LEFT / 2, y + T / 2, row.key, dict(ha="center", va="center", fontsize=8, rotation=90)))
        for b, arr in enumerate(tiles):
            x = layout.tile_x(b, 0)
            canvas[y:y + T, x:x + T] = _full_tile(arr, T)
            for j, (crop, (x0, y0, x1, y1)) in enumerate(row.windows.items(), start=1):
                colour = CROP_COLOURS[crop]
                _outline(canvas, x + math.floor(x0 * scale), y + math.floor(y0 * scale),
                         x + math.ceil(x1 * scale), y + math.ceil(y1 * scale), colour, line)
                cx = layout.tile_x(b, j)
                canvas[y:y + T, cx:cx + T] = _nearest(arr[y0:y1, x0:x1], T)
                _outline(canvas, cx, y, cx + T, y + T, colour, FRAME_PX)
                if b == 0:
                    label = f"{crop} ×{row.size / (x1 - x0):.1f}"
                else:
                    label = f"MSE {row.errors[columns[b]][crop]:.2e}"
                texts.append((cx + T / 2, y + T + LABEL_STRIP / 2, label,
                              dict(ha="center", va="center", fontsize=7.5)))
    sources = sorted({row.source for row in rows})
    texts.append((MARGIN_LEFT, layout.height - FOOTER / 2,
                  f"crops: nearest-neighbour, nominal zoom ×{zoom:g}; MSE vs ground truth inside the outlined "
                  f"box, pixel values in [-1, 1]; boxes from {', '.join(sources)}",
                  dict(ha="left", va="center", fontsize=7.5, color="0.3")))

    fig = Figure(figsize=(layout.width / DPI, layout.height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)  # off-screen, no pyplot state
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest", extent=(0, layout.width, layout.height, 0), aspect="auto")
    ax.set_xlim(0, layout.width)
    ax.set_ylim(layout.height, 0)
    ax.axis("off")
    for x, y, s, kw in texts:
        ax.text(x, y, s, **kw)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})  # no version stamp: same bytes each run
    return buf.getvalue()
