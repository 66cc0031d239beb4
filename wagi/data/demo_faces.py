"""Procedural demo domain: seedable 2-D drawn faces with high-frequency details.

No pretrained FFHQ generator exists offline, so WaGI trains its own small SWAGAN and encoders on this
domain. The faces carry the kinds of fine detail that wavelet-based inversion is meant to keep and
that L2-trained encoders blur: thin hair strands, pupils with highlights, eyelashes, thin glasses
frames, earrings, necklace beads, striped or checked clothing, freckles, stubble and short printed
text.

Pipeline: ``seed -> sample_attributes(random.Random(seed)) -> attrs (JSON-able dict)
-> render_from_attributes(attrs, size) -> PIL RGB image (size, size)``. Drawing happens with
Pillow's ImageDraw on a canvas ``supersample`` times larger than the output, then a LANCZOS
downsample gives anti-aliased edges. Geometry lives in the unit square, so one attribute dict renders
the same face at 64, 128 or 256 pixels.

Randomness that the attribute dict does not spell out (strand paths, freckle positions, ...) comes
from ``attrs["detail_seed"]`` through one private generator per face part (``random.Random``, or a
NumPy ``Generator`` for the parts with hundreds of strokes), so switching one attribute off
(``has_text=False``) leaves every other part of the image bit-identical. No global RNG is read or
advanced. Images are bit-identical for a given Pillow and NumPy version.

Torch side: :class:`DemoFaceDataset` (map-style, item i = seed ``seed_offset + i``) and
:class:`DemoFaceStream` (infinite, rank- and worker-aware, resumable) yield ``(3, S, S)`` float
tensors in ``[-1, 1]``.

Ground truth for attribute editing: :func:`with_attribute` (one attribute changed, all else kept),
:func:`paired_renders` (the face with and without it), :func:`attribute_mask` (the ``(S, S)``
pixels it draws) and :func:`attribute_labels` (the judge's targets).

Seed convention: training uses seeds ``[0, TRAIN_SEED_END)``; held-out sets start at
``TEST_SEED_OFFSET`` (= ``TRAIN_SEED_END``), so test faces are never trained on.
"""
from __future__ import annotations

import copy
import json
import math
import multiprocessing
import os
import random
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import Dataset, IterableDataset, get_worker_info
from tqdm import tqdm

from wagi.demo_seeds import TEST_SEED_OFFSET, TRAIN_SEED_END
from wagi.fileio import atomic_write

DEMO_FACES_VERSION = 1  # bump when a change to the renderer changes any image of a given seed
SUPPORTED_SIZES = (64, 128, 256)
MIN_CANVAS = 256  # draw on at least 256 px so thin strokes stay sub-pixel at every output size
TEXT_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"  # no I/O: they read as 1/0 at a few pixels
CLOTHING_PATTERNS = ("plain", "stripes", "checks")
HAIR_STYLES = ("short", "long", "bob", "curly", "bald")

# Labels an attribute judge predicts and editing directions target (ground truth: the attribute dict).
BINARY_ATTRIBUTES = ("has_glasses", "has_earrings", "has_necklace", "has_text", "has_freckles", "has_stubble",
                     "mouth_open")
CATEGORICAL_ATTRIBUTES: Dict[str, Tuple[Any, ...]] = {}  # filled below, once the palettes exist
MIN_TEXT_CONTRAST = 90.0  # luma difference (0-255) between letters and the surface they sit on
RGB = List[int]

HAIR_PALETTE: Dict[str, Tuple[int, int, int]] = {
    "black": (28, 24, 24),
    "dark_brown": (62, 40, 28),
    "brown": (110, 72, 42),
    "auburn": (140, 62, 36),
    "blonde": (214, 180, 112),
    "red": (178, 70, 30),
    "grey": (150, 148, 146),
    "white": (228, 226, 220),
    "blue": (52, 90, 190),
    "pink": (220, 110, 160),
}
HAIR_WEIGHTS = (18, 18, 16, 8, 14, 6, 6, 3, 3, 3)
SKIN_PALETTE = ((255, 224, 196), (241, 194, 160), (224, 172, 125), (198, 134, 92), (160, 100, 66), (112, 70, 46))
EYE_PALETTE: Dict[str, Tuple[int, int, int]] = {
    "brown": (96, 58, 30),
    "dark": (48, 32, 22),
    "blue": (70, 120, 190),
    "green": (72, 130, 80),
    "hazel": (136, 110, 52),
    "grey": (120, 132, 140),
}
METALS: Dict[str, Tuple[int, int, int]] = {"gold": (222, 180, 60), "silver": (200, 204, 212)}
CATEGORICAL_ATTRIBUTES.update({
    "clothing_pattern": CLOTHING_PATTERNS,
    "hair_style": HAIR_STYLES,
    "hair_colour": tuple(HAIR_PALETTE),
    "eye_colour": tuple(EYE_PALETTE),
    "skin_tone": tuple(range(len(SKIN_PALETTE))),
    "neckline": ("round", "v"),
})
LIP_TINT = np.array([0.86, 0.55, 0.58])  # lips: the skin colour with less green and blue
LENS_TINT = (30, 30, 40, 110)  # sunglasses: translucent dark grey (RGBA)


# ----------------------------------------------------------------------------------------------
# Attributes
# ----------------------------------------------------------------------------------------------


def _jitter(rng: random.Random, rgb: Sequence[int], amount: int) -> RGB:
    return [int(min(255, max(0, c + rng.randint(-amount, amount)))) for c in rgb]


def _random_rgb(rng: random.Random, lo: int = 20, hi: int = 235) -> RGB:
    return [rng.randint(lo, hi) for _ in range(3)]


def _luma(rgb: Sequence[int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _pick(rng: random.Random, options: Sequence[Any], weights: Optional[Sequence[float]] = None) -> Any:
    return rng.choices(list(options), weights=weights, k=1)[0]


def sample_attributes(rng: Union[random.Random, int]) -> Dict[str, Any]:
    """Draw one face description.

    Args:
        rng: a ``random.Random`` (consumed) or an int seed.
    Returns:
        A plain JSON-serialisable dict (ints, floats, bools, strings, lists). Label-like keys for
        attribute editing: ``has_glasses``, ``has_earrings``, ``has_necklace``, ``has_text``,
        ``has_freckles``, ``has_stubble``, ``mouth_open`` (bools), ``smile`` (float in [-0.4, 1]),
        ``clothing_pattern`` (one of ``CLOTHING_PATTERNS``), ``hair_colour`` (a ``HAIR_PALETTE``
        name), ``hair_style`` (one of ``HAIR_STYLES``), ``eye_colour``, ``skin_tone`` (0 light ..
        5 dark). The remaining keys are geometry and colours in unit-square coordinates.
    """
    if isinstance(rng, bool) or not isinstance(rng, (random.Random, int)):
        raise TypeError(f"sample_attributes needs a random.Random or an int seed, got {type(rng).__name__}")
    if isinstance(rng, int):
        rng = random.Random(rng)
    u = rng.uniform
    a: Dict[str, Any] = {"version": DEMO_FACES_VERSION, "detail_seed": rng.randrange(2**31)}

    # background: two-colour gradient
    a["bg_top"] = _random_rgb(rng, 30, 240)
    a["bg_bottom"] = _jitter(rng, a["bg_top"], 70) if rng.random() < 0.6 else _random_rgb(rng, 30, 240)
    a["bg_direction"] = _pick(rng, ("vertical", "horizontal", "diagonal"))

    # head: superellipse upper half, tapered lower half (jaw)
    a["head_cx"] = u(0.46, 0.54)
    a["head_cy"] = u(0.4, 0.44)
    a["head_rx"] = u(0.195, 0.24)
    a["head_aspect"] = u(1.12, 1.42)  # vertical / horizontal half-axis
    a["head_squareness"] = u(2.0, 2.8)  # superellipse exponent: 2 = ellipse, larger = squarer
    a["jaw_taper"] = u(0.05, 0.45)  # how much the lower half narrows towards the chin
    a["skin_tone"] = rng.randrange(len(SKIN_PALETTE))
    a["skin_rgb"] = _jitter(rng, SKIN_PALETTE[a["skin_tone"]], 10)

    # hair
    a["hair_colour"] = _pick(rng, list(HAIR_PALETTE), HAIR_WEIGHTS)
    a["hair_rgb"] = _jitter(rng, HAIR_PALETTE[a["hair_colour"]], 12)
    a["hair_style"] = _pick(rng, HAIR_STYLES, (34, 28, 18, 14, 6))
    a["hair_volume"] = u(0.06, 0.22)  # outer hair contour, as a fraction of the head half-axes
    a["hairline"] = u(0.35, 0.75)  # fringe height: fraction of the upper head half-axis above the centre
    a["fringe_slope"] = u(-0.25, 0.25)  # side-swept fringe
    a["hair_parting"] = u(-0.5, 0.5)  # parting x, fraction of the head half-width
    a["hair_strands"] = rng.randint(60, 150)
    a["hair_length"] = u(0.15, 0.4)  # how far long hair falls below the head centre (unit square)

    # eyes and brows
    a["eye_colour"] = _pick(rng, list(EYE_PALETTE))
    a["eye_rgb"] = _jitter(rng, EYE_PALETTE[a["eye_colour"]], 10)
    a["eye_y"] = u(-0.08, 0.04)  # fraction of the vertical half-axis, relative to the head centre
    a["eye_spacing"] = u(0.36, 0.48)  # fraction of the head half-width
    a["eye_width"] = u(0.27, 0.34)  # fraction of the head half-width
    a["eye_openness"] = u(0.42, 0.62)  # eye height / eye width
    a["gaze_x"] = u(-0.35, 0.35)
    a["gaze_y"] = u(-0.2, 0.2)
    a["brow_raise"] = u(0.12, 0.26)  # brow height above the eye, fraction of the vertical half-axis
    a["brow_thickness"] = u(0.012, 0.022)
    a["brow_tilt"] = u(-0.25, 0.35)

    # nose and mouth
    a["nose_length"] = u(0.22, 0.36)
    a["nose_width"] = u(0.16, 0.26)
    a["mouth_y"] = u(0.5, 0.62)
    a["mouth_width"] = u(0.38, 0.6)
    a["lip_thickness"] = u(0.035, 0.065)
    lip = np.array(a["skin_rgb"]) * LIP_TINT + [rng.randint(0, 40), 0, 0]
    a["lip_rgb"] = [int(c) for c in np.clip(lip, 0, 255)]
    a["smile"] = u(-0.4, 1.0)
    a["mouth_open"] = rng.random() < 0.3

    # skin details
    a["has_freckles"] = rng.random() < 0.25
    a["has_stubble"] = rng.random() < 0.2
    a["blush"] = u(0.0, 0.5)

    # accessories
    a["has_glasses"] = rng.random() < 0.4
    a["glasses_shape"] = _pick(rng, ("round", "rect"))
    frames = ([20, 20, 20], [120, 80, 40], list(METALS["gold"]), list(METALS["silver"]), _random_rgb(rng))
    a["glasses_rgb"] = _pick(rng, frames)
    a["glasses_frame"] = u(0.6, 1.3)  # frame line width in output pixels
    a["glasses_tint"] = rng.random() < 0.25
    a["has_earrings"] = rng.random() < 0.35
    a["earring_style"] = _pick(rng, ("stud", "hoop", "drop"))
    a["earring_metal"] = _pick(rng, list(METALS))
    a["has_necklace"] = rng.random() < 0.35
    a["necklace_beads"] = rng.randint(11, 25)
    a["necklace_rgb"] = _pick(rng, (list(METALS["gold"]), list(METALS["silver"]), [245, 245, 240], _random_rgb(rng)))
    a["necklace_sag"] = u(0.03, 0.07)

    # clothing
    a["shoulder_width"] = u(0.36, 0.48)
    a["clothing_rgb"] = _random_rgb(rng)
    a["clothing_pattern"] = _pick(rng, CLOTHING_PATTERNS, (40, 35, 25))
    a["pattern_rgb"] = _random_rgb(rng)
    a["pattern_period"] = u(3.0, 7.0)  # stripe period in output pixels at 128 px (scales with size)
    a["pattern_duty"] = u(0.3, 0.6)
    a["stripe_angle"] = _pick(rng, (0.0, 0.0, 90.0, 45.0, -45.0))
    a["neckline"] = _pick(rng, ("round", "v"))

    # text on a badge or directly on the chest
    a["has_text"] = rng.random() < 0.5
    a["text"] = "".join(rng.choice(TEXT_ALPHABET) for _ in range(rng.randint(2, 5)))
    a["text_on_badge"] = rng.random() < 0.5
    a["text_height"] = u(6.0, 9.0)  # glyph cell height in output pixels at 128 px
    a["badge_rgb"] = _pick(rng, ([250, 250, 250], [250, 220, 60], _random_rgb(rng, 150, 250)))
    surface = a["badge_rgb"] if a["text_on_badge"] else a["clothing_rgb"]
    text_rgb = _pick(rng, ([15, 15, 15], [200, 30, 30], [250, 250, 250], _random_rgb(rng)))
    if abs(_luma(text_rgb) - _luma(surface)) < MIN_TEXT_CONTRAST:  # keep the letters legible
        text_rgb = [15, 15, 15] if _luma(surface) > 128 else [250, 250, 250]
    a["text_rgb"] = text_rgb
    a["text_x"] = u(-0.2, 0.2)
    return a


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

_PART_IDS = {"hair_back": 1, "hair_cap": 2, "freckles": 3, "stubble": 4, "brows": 5, "curls": 6, "lashes": 7}
REFERENCE_SIZE = 128  # sizes given "in output pixels" in the attributes refer to this resolution
SHOULDER_DROP = 0.17  # shoulder line: how far the torso outline falls from the neck to the sides
STUBBLE_DOTS_PER_256 = 600  # stubble density: dots on a 256 px canvas, scaled with the canvas area
MIN_PATTERN_PERIOD = 2.5  # output pixels: a finer stripe period averages away in the downsample
WAVES_PER_STRAND = 2.5  # long hair: sine periods along one strand
BEAD_RADIUS = 0.006  # necklace bead radius (unit square): about 1.5 px wide beads at 128 px
EARRING_RADIUS = 0.006  # stud radius (unit square); hoops and drops are scaled from it
FONT_CELL = 11  # line height of Pillow's bitmap default font, in font pixels
_font_cache: Dict[str, Any] = {}


def _bitmap_font():
    # Pillow's bitmap default font: identical glyphs everywhere (no FreeType, no system fonts).
    if "font" not in _font_cache:
        loader = getattr(ImageFont, "load_default_imagefont", None)  # Pillow >= 10.1
        _font_cache["font"] = loader() if loader is not None else ImageFont.load_default()
    return _font_cache["font"]


def _shade(rgb: Sequence[int], f: float) -> Tuple[int, int, int]:
    """Multiply (f < 1 darkens) or blend towards white (f > 1)."""
    if f <= 1.0:
        return tuple(int(c * f) for c in rgb)  # type: ignore[return-value]
    t = min(1.0, f - 1.0)
    return tuple(int(c + (255 - c) * t) for c in rgb)  # type: ignore[return-value]


def _part_rng(attrs: Dict[str, Any], part: str) -> random.Random:
    return random.Random(int(attrs["detail_seed"]) * 16 + _PART_IDS[part])


def _part_np_rng(attrs: Dict[str, Any], part: str) -> np.random.Generator:
    """Vectorised draws for the parts with hundreds of strokes (strands, stubble)."""
    return np.random.default_rng([int(attrs["detail_seed"]), _PART_IDS[part]])


def _shade_table(rgb: Sequence[int], lo: float, hi: float, k: int = 8) -> List[Tuple[int, int, int]]:
    return [_shade(rgb, f) for f in np.linspace(lo, hi, k).tolist()]


def _bezier_batch(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, steps: int) -> np.ndarray:
    """Quadratic Bezier curves, ``(K, 2)`` control points each -> ``(K, steps + 1, 2)`` points."""
    t = np.linspace(0.0, 1.0, steps + 1)[None, :, None]
    return (1 - t) ** 2 * p0[:, None] + 2 * (1 - t) * t * p1[:, None] + t**2 * p2[:, None]


class _Canvas:
    """Unit-square geometry mapped onto a supersampled pixel canvas."""

    def __init__(self, size: int, supersample: int):
        self.size = size
        self.ss = supersample
        self.n = size * supersample
        self.px_scale = size / REFERENCE_SIZE * supersample  # canvas px per "output px at 128"

    def p(self, x: float, y: float) -> Tuple[float, float]:
        return (x * self.n, y * self.n)

    def box(self, cx: float, cy: float, rx: float, ry: float) -> Tuple[float, float, float, float]:
        n = self.n
        return ((cx - rx) * n, (cy - ry) * n, (cx + rx) * n, (cy + ry) * n)

    def w(self, out_px: float) -> int:
        """Line width in canvas pixels for a width given in output pixels at 128 px."""
        return max(1, int(round(out_px * self.px_scale)))


def _background(c: _Canvas, a: Dict[str, Any]) -> Image.Image:
    """Linear two-colour gradient, built as raw RGB rows (much faster than per-pixel arithmetic)."""
    n = c.n
    diagonal = a["bg_direction"] == "diagonal"
    m = 2 * n - 1 if diagonal else n
    t = np.linspace(0.0, 1.0, m, dtype=np.float32)[:, None]
    top = np.asarray(a["bg_top"], dtype=np.float32)
    bot = np.asarray(a["bg_bottom"], dtype=np.float32)
    lut = (top + t * (bot - top) + 0.5).astype(np.uint8).tobytes()  # colour of each gradient step
    if a["bg_direction"] == "horizontal":
        data = lut * n
    elif a["bg_direction"] == "vertical":
        data = b"".join(lut[3 * i : 3 * i + 3] * n for i in range(n))
    else:  # pixel (i, j) takes step i + j
        data = b"".join(lut[3 * i : 3 * (i + n)] for i in range(n))
    return Image.frombytes("RGB", (n, n), data)


def _superellipse(a: Dict[str, Any], th, sx: float, sy: float) -> List[Tuple[float, float]]:
    """Points at angles ``th`` (array) of the head contour scaled by (sx, sy), unit coordinates:
    a superellipse whose lower half narrows towards the chin (the jaw)."""
    e = 2.0 / a["head_squareness"]
    th = np.asarray(th, dtype=np.float64)
    co, si = np.cos(th), np.sin(th)
    x = np.sign(co) * np.abs(co) ** e
    y = np.sign(si) * np.abs(si) ** e
    x = np.where(y > 0, x * (1.0 - a["jaw_taper"] * y * y), x)  # image y grows downwards
    rx = a["head_rx"]
    pts = np.stack([a["head_cx"] + rx * sx * x, a["head_cy"] + rx * a["head_aspect"] * sy * y], axis=-1)
    return [tuple(q) for q in pts.tolist()]


def _head_outline(a: Dict[str, Any], n_points: int = 64) -> List[Tuple[float, float]]:
    """Head contour in unit coordinates."""
    return _superellipse(a, np.arange(n_points) * (2 * math.pi / n_points), 1.0, 1.0)


def _hair_geometry(a: Dict[str, Any]):
    cx, cy, rx = a["head_cx"], a["head_cy"], a["head_rx"]
    ry = rx * a["head_aspect"]
    v = a["hair_volume"]
    return cx, cy, rx, ry, rx * (1 + v), ry * (1 + v * 0.8)


def _hair_dome(a: Dict[str, Any], t0: float, t1: float, n: int, widen: float = 1.0) -> List[Tuple[float, float]]:
    """Outer hair contour: the head contour grown by ``hair_volume`` (wider by ``widen``)."""
    v = a["hair_volume"]
    return _superellipse(a, np.linspace(t0, t1, n), (1 + v) * widen, 1 + v * 0.8)


def _draw_back_hair(c: _Canvas, d: ImageDraw.ImageDraw, a: Dict[str, Any]) -> None:
    style = a["hair_style"]
    if style in ("short", "bald"):
        return
    cx, cy, rx, ry, orx, ory = _hair_geometry(a)
    rng = _part_np_rng(a, "hair_back")
    col = tuple(a["hair_rgb"])
    dark = _shade(col, 0.72)
    bottom = cy + (a["hair_length"] if style == "long" else 0.08 + a["hair_length"] * 0.3)
    if style == "curly":
        bottom = cy + 0.05 + a["hair_length"] * 0.4
        orx *= 1.15
    # dome + straight sides down to `bottom`, slightly wider at the ends
    pts = _hair_dome(a, math.pi, 2 * math.pi, 20, orx / (rx * (1 + a["hair_volume"])))
    pts += [(cx + orx * 1.08, bottom), (cx - orx * 1.08, bottom)]
    d.polygon([c.p(*q) for q in pts], fill=dark)
    # vertical strands over the back hair, visible beside the face and neck
    k = int(a["hair_strands"] * 0.6)
    x0 = cx + rng.uniform(-1.0, 1.0, k) * orx
    y0 = cy - ory * rng.uniform(0.0, 0.5, k)
    amp = rng.uniform(0.0, 0.012, k)
    phase = rng.uniform(0.0, 2 * math.pi, k)
    y1 = bottom - rng.uniform(0.0, 0.02, k)
    shade = rng.integers(0, 8, k)
    s = np.linspace(0.0, 1.0, 7)[None, :]
    ys = y0[:, None] + (y1 - y0)[:, None] * s
    xs = x0[:, None] + amp[:, None] * np.sin(phase[:, None] + WAVES_PER_STRAND * 2 * math.pi * s)
    lines = (np.stack([xs, ys], axis=-1) * c.n).reshape(k, -1).tolist()
    shades = _shade_table(col, 0.5, 1.25)
    w1 = c.w(0.5)
    for line, sh in zip(lines, shade.tolist()):
        d.line(line, fill=shades[sh], width=w1)


def _draw_clothing(c: _Canvas, img: Image.Image, d: ImageDraw.ImageDraw, a: Dict[str, Any]) -> Tuple[float, float]:
    """Neck, torso with its pattern, neckline. Returns (neck_x_half_width, neckline_y) in unit coords."""
    cx, cy, rx = a["head_cx"], a["head_cy"], a["head_rx"]
    ry = rx * a["head_aspect"]
    skin = tuple(a["skin_rgb"])
    neck_hw = rx * 0.48
    chin_y = cy + ry * 0.9
    top = cy + ry * 1.05  # shoulder line
    d.rectangle(c.box(cx, (chin_y + top + 0.1) / 2, neck_hw, (top + 0.1 - chin_y) / 2), fill=_shade(skin, 0.82))
    sw = a["shoulder_width"]
    angles = np.linspace(math.pi, 2 * math.pi, 24).tolist()
    torso = [(cx + sw * math.cos(t), top + SHOULDER_DROP * (1 + math.sin(t))) for t in angles]
    torso += [(cx + sw, 1.05), (cx - sw, 1.05)]
    poly = [c.p(*q) for q in torso]
    pattern = a["clothing_pattern"]
    base = tuple(a["clothing_rgb"])
    if pattern == "plain":
        d.polygon(poly, fill=base)
    else:
        # Draw the pattern inside the torso's bounding box, then paste it through the torso mask.
        x0, y0 = int(min(p[0] for p in poly)), int(min(p[1] for p in poly))
        x0, y0 = max(0, x0), max(0, y0)
        w, h = c.n - x0, c.n - y0
        layer = Image.new("RGB", (w, h), base)
        ld = ImageDraw.Draw(layer, "RGBA")
        period = max(a["pattern_period"] * c.px_scale, MIN_PATTERN_PERIOD * c.ss)
        band = max(1, int(round(period * a["pattern_duty"])))
        pcol = tuple(a["pattern_rgb"])
        diag = math.hypot(w, h)
        if pattern == "stripes":
            ang = math.radians(a["stripe_angle"])
            ux, uy = math.cos(ang), math.sin(ang)  # stripe direction
            nx, ny = -uy, ux  # stripe normal
            k = -diag
            while k < diag:
                mx, my = w / 2 + nx * k, h / 2 + ny * k
                ld.line([(mx - ux * diag, my - uy * diag), (mx + ux * diag, my + uy * diag)], fill=pcol, width=band)
                k += period
        else:  # checks: translucent bands both ways, darker where they cross (gingham)
            fill = pcol + (150,)
            k = 0.0
            while k < max(w, h):
                ld.rectangle((0, k, w, k + band - 1), fill=fill)
                ld.rectangle((k, 0, k + band - 1, h), fill=fill)
                k += period
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in poly], fill=255)
        img.paste(layer, (x0, y0), mask)
    # seams at the shoulders: a darker outline gives the torso a crisp edge
    d.line(poly[:24], fill=_shade(base, 0.6), width=c.w(0.6))
    # neckline showing skin
    neck_y = top + 0.045
    if a["neckline"] == "v":
        vee = [c.p(cx - neck_hw * 1.25, top - 0.01), c.p(cx + neck_hw * 1.25, top - 0.01), c.p(cx, neck_y + 0.05)]
        d.polygon(vee, fill=_shade(skin, 0.9))
        neck_y += 0.02
    else:
        d.ellipse(c.box(cx, top, neck_hw * 1.3, neck_y - top), fill=_shade(skin, 0.9))
    return neck_hw, neck_y


def _draw_necklace(c: _Canvas, d: ImageDraw.ImageDraw, a: Dict[str, Any], neck_hw: float, neck_y: float) -> None:
    cx = a["head_cx"]
    col = tuple(a["necklace_rgb"])
    n_beads = a["necklace_beads"]
    half = neck_hw * 1.25
    y0 = neck_y - 0.035
    sag = a["necklace_sag"]
    pts = [(cx + half * t, y0 + sag * (1 - t * t)) for t in np.linspace(-1, 1, n_beads)]
    d.line([c.p(*q) for q in pts], fill=_shade(col, 0.55), width=c.w(0.4))
    r = BEAD_RADIUS
    hl = _shade(col, 1.6)
    for x, y in pts:
        d.ellipse(c.box(x, y, r, r), fill=col, outline=_shade(col, 0.5), width=c.w(0.3))
        d.point([c.p(x - r * 0.35, y - r * 0.35)], fill=hl)


def _draw_text(c: _Canvas, img: Image.Image, d: ImageDraw.ImageDraw, a: Dict[str, Any], neck_y: float) -> None:
    font = _bitmap_font()
    text = a["text"]
    left, top, right, bottom = font.getbbox(text)
    tw, th = max(1, right - left), max(1, bottom - top)
    glyphs = Image.new("L", (tw, th), 0)
    ImageDraw.Draw(glyphs).text((-left, -top), text, font=font, fill=255)
    scale = a["text_height"] * c.px_scale / FONT_CELL
    sw, sh = max(1, int(round(tw * scale))), max(1, int(round(th * scale)))
    glyphs = glyphs.resize((sw, sh), Image.BILINEAR)
    cx = a["head_cx"] + a["text_x"] * a["shoulder_width"]
    cy = neck_y + 0.1 + sh / c.n / 2
    px, py = int(cx * c.n - sw / 2), int(cy * c.n - sh / 2)
    if a["text_on_badge"]:
        pad = max(2, int(0.25 * sh))
        badge = (px - pad, py - pad, px + sw + pad, py + sh + pad)
        edge = _shade(a["badge_rgb"], 0.45)
        d.rounded_rectangle(badge, radius=pad, fill=tuple(a["badge_rgb"]), outline=edge, width=c.w(0.5))
    img.paste(tuple(a["text_rgb"]), (px, py, px + sw, py + sh), glyphs)


def _draw_ears(c: _Canvas, d: ImageDraw.ImageDraw, a: Dict[str, Any]) -> List[Tuple[float, float]]:
    cx, cy, rx = a["head_cx"], a["head_cy"], a["head_rx"]
    ry = rx * a["head_aspect"]
    skin = tuple(a["skin_rgb"])
    erx, ery = rx * 0.16, ry * 0.2
    lobes = []
    for s in (-1, 1):
        ex = cx + s * rx * 0.97
        ey = cy + ry * 0.05
        d.ellipse(c.box(ex, ey, erx, ery), fill=_shade(skin, 0.93), outline=_shade(skin, 0.7), width=c.w(0.5))
        # inner ridge: the half of a smaller ellipse that faces away from the head
        start = 100 if s < 0 else -80
        ridge = c.box(ex + s * erx * 0.1, ey, erx * 0.55, ery * 0.6)
        d.arc(ridge, start, start + 160, fill=_shade(skin, 0.65), width=c.w(0.5))
        lobes.append((ex + s * erx * 0.2, ey + ery * 0.85))
    return lobes


def _draw_earrings(c: _Canvas, d: ImageDraw.ImageDraw, a: Dict[str, Any], lobes) -> None:
    metal = METALS[a["earring_metal"]]
    dark = _shade(metal, 0.55)
    style = a["earring_style"]
    r = EARRING_RADIUS
    for x, y in lobes:
        if style == "stud":
            d.ellipse(c.box(x, y, r, r), fill=metal, outline=dark, width=c.w(0.3))
        elif style == "hoop":
            d.ellipse(c.box(x, y + r * 2.6, r * 2.2, r * 2.8), outline=metal, width=c.w(0.6))
        else:
            d.line([c.p(x, y), c.p(x, y + 0.03)], fill=metal, width=c.w(0.5))
            d.ellipse(c.box(x, y + 0.032, r * 1.1, r * 1.4), fill=metal, outline=dark, width=c.w(0.3))


def _draw_skin_details(c: _Canvas, d: ImageDraw.ImageDraw, da: ImageDraw.ImageDraw, a: Dict[str, Any]) -> None:
    cx, cy, rx = a["head_cx"], a["head_cy"], a["head_rx"]
    ry = rx * a["head_aspect"]
    skin = tuple(a["skin_rgb"])
    if a["blush"] > 0.05:
        alpha = int(110 * a["blush"])
        for s in (-1, 1):
            da.ellipse(c.box(cx + s * rx * 0.52, cy + ry * 0.3, rx * 0.2, ry * 0.11), fill=(230, 90, 90, alpha))
    if a["has_stubble"]:
        rng = _part_np_rng(a, "stubble")
        # stubble dots: halfway between skin and dark hair, so they read as texture rather than dirt
        col = tuple((s_ + h_) // 2 for s_, h_ in zip(skin, _shade(a["hair_rgb"], 0.55)))
        k = int(STUBBLE_DOTS_PER_256 * (c.n / 256) ** 2)
        t = rng.uniform(-1.0, 1.0, k)
        yy = rng.uniform(0.42, 0.98, k)
        # stay inside the jaw: the half-width of the head contour at height yy
        p = a["head_squareness"]
        half = (1 - a["jaw_taper"] * yy * yy) * (1 - yy**p) ** (1 / p)
        keep = ~((np.abs(t) < a["mouth_width"] * 0.9) & (np.abs(yy - a["mouth_y"]) < 0.1))  # leave the mouth clear
        xy = np.stack([cx + rx * 0.92 * half * t, cy + ry * yy], axis=1)[keep] * c.n
        pts = xy.reshape(-1).tolist()
        d.point(pts, fill=col)
    if a["has_freckles"]:
        rng = _part_rng(a, "freckles")
        col = _shade(skin, 0.7)
        r = 0.55 / REFERENCE_SIZE
        for _ in range(rng.randint(14, 32)):
            s = rng.choice((-1, 1))
            x = cx + s * rx * rng.uniform(0.15, 0.7)
            y = cy + ry * rng.uniform(0.08, 0.36)
            d.ellipse(c.box(x, y, r, r), fill=col)


def _draw_nose_mouth(c: _Canvas, d: ImageDraw.ImageDraw, a: Dict[str, Any]) -> None:
    cx, cy, rx = a["head_cx"], a["head_cy"], a["head_rx"]
    ry = rx * a["head_aspect"]
    skin = tuple(a["skin_rgb"])
    shadow = _shade(skin, 0.68)
    # nose: a side shading line and a base with nostrils
    tip_y = cy + ry * a["nose_length"]
    nw = rx * a["nose_width"]
    bridge = [c.p(cx + nw * 0.35, cy - ry * 0.02), c.p(cx + nw * 0.6, tip_y - ry * 0.04)]
    d.line(bridge, fill=_shade(skin, 0.8), width=c.w(0.7))
    d.arc(c.box(cx, tip_y - ry * 0.02, nw, ry * 0.05), 20, 160, fill=shadow, width=c.w(0.8))
    for s in (-1, 1):
        d.ellipse(c.box(cx + s * nw * 0.45, tip_y, nw * 0.2, ry * 0.018), fill=_shade(skin, 0.45))
    # mouth: lips drawn around the mouth line y(t) = my - depth * t^2, t in [-1, 1] from corner to corner
    my = cy + ry * a["mouth_y"]
    hw = rx * a["mouth_width"]
    depth = ry * 0.08 * a["smile"]  # smile lifts the corners above the centre
    lip = a["lip_thickness"] * ry
    gap = lip * 0.9 if a["mouth_open"] else 0.0
    ts = np.linspace(-1, 1, 17)
    line = [(cx + hw * t, my - depth * (t * t)) for t in ts]
    bulge = [math.sqrt(max(0.0, 1 - t * t)) for t in ts]
    upper = [(x, y - lip * 0.8 * b * (1 - 0.35 * math.exp(-(t / 0.22) ** 2))) for (x, y), b, t in zip(line, bulge, ts)]
    lower_in = [(x, y + gap * b) for (x, y), b in zip(line, bulge)]
    lower = [(x, y + gap * b + lip * 1.1 * b) for (x, y), b in zip(line, bulge)]
    lipc = tuple(a["lip_rgb"])
    d.polygon([c.p(*q) for q in upper + line[::-1]], fill=_shade(lipc, 0.9))
    d.polygon([c.p(*q) for q in lower_in + lower[::-1]], fill=lipc)
    if a["mouth_open"]:
        d.polygon([c.p(*q) for q in line + lower_in[::-1]], fill=(70, 20, 25))
        teeth = [(x, y + (ly - y) * 0.45) for (x, y), (_, ly) in zip(line, lower_in)]
        d.polygon([c.p(*q) for q in line[2:-2] + teeth[2:-2][::-1]], fill=(245, 242, 235))
    d.line([c.p(*q) for q in line], fill=_shade(lipc, 0.45), width=c.w(0.6))
    # highlight on the lower lip
    y_hl = lower[8][1] - lip * 0.45
    d.line([c.p(cx - hw * 0.25, y_hl), c.p(cx + hw * 0.2, y_hl)], fill=_shade(lipc, 1.35), width=c.w(0.4))


def _draw_eyes(
    c: _Canvas, img: Image.Image, d: ImageDraw.ImageDraw, a: Dict[str, Any]
) -> List[Tuple[float, float, float, float]]:
    """Both eyes; returns (centre x, centre y, half-width, height) of each, left first."""
    cx, cy, rx = a["head_cx"], a["head_cy"], a["head_rx"]
    ry = rx * a["head_aspect"]
    skin = tuple(a["skin_rgb"])
    ey = cy + ry * a["eye_y"]
    ew = rx * a["eye_width"]
    eh = ew * a["eye_openness"]
    iris_col = tuple(a["eye_rgb"])
    rng = _part_rng(a, "lashes")
    eyes = []
    for s in (-1, 1):
        ex = cx + s * rx * a["eye_spacing"]
        eyes.append((ex, ey, ew, eh))
        # socket shadow and lid crease
        d.ellipse(c.box(ex, ey - eh * 0.15, ew * 1.15, eh * 1.05), fill=_shade(skin, 0.88))
        d.arc(c.box(ex, ey - eh * 0.25, ew * 0.95, eh * 0.8), 200, 340, fill=_shade(skin, 0.7), width=c.w(0.4))
        # The eyeball (sclera, iris with a darker rim, pupil, catch-light) is drawn on a crop of the
        # image and pasted back through the sclera's mask, so the lids clip the iris at any gaze.
        x0, y0, x1, y1 = (int(math.floor(v)) for v in c.box(ex, ey, ew, eh * 0.62))
        x1, y1 = x1 + 2, y1 + 2
        patch = img.crop((x0, y0, x1, y1))
        pd = ImageDraw.Draw(patch)

        def local(box):
            return (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)

        sclera = local(c.box(ex, ey, ew, eh * 0.62))
        pd.ellipse(sclera, fill=(246, 244, 240))
        ir = eh * 0.5
        ix, iy = ex + a["gaze_x"] * (ew - ir) * 0.8, ey + a["gaze_y"] * eh * 0.2
        pd.ellipse(local(c.box(ix, iy, ir, ir)), fill=iris_col, outline=_shade(iris_col, 0.45), width=c.w(0.4))
        pr = ir * 0.45
        pd.ellipse(local(c.box(ix, iy, pr, pr)), fill=(8, 8, 10))
        hr = ir * 0.28
        pd.ellipse(local(c.box(ix - ir * 0.35, iy - ir * 0.35, hr, hr)), fill=(255, 255, 255))
        mask = Image.new("L", patch.size, 0)
        ImageDraw.Draw(mask).ellipse(sclera, fill=255)
        img.paste(patch, (x0, y0), mask)
        # lid lines: dark upper lid, soft lower lid
        d.arc(c.box(ex, ey, ew, eh * 0.62), 180, 360, fill=(30, 22, 20), width=c.w(0.9))
        d.arc(c.box(ex, ey, ew, eh * 0.62), 20, 160, fill=_shade(skin, 0.7), width=c.w(0.4))
        # lashes: short strokes off the outer half of the upper lid
        for k in range(rng.randint(3, 6)):
            # angles on the upper half of the eye ellipse, stepping from the middle to the outer corner
            frac = 0.55 + 0.09 * k
            t = 1.5 * math.pi + s * frac * math.pi / 2
            lx, ly = ex + ew * math.cos(t), ey + eh * 0.62 * math.sin(t)
            d.line([c.p(lx, ly), c.p(lx + s * ew * 0.18, ly - eh * 0.22)], fill=(30, 22, 20), width=c.w(0.4))
    return eyes


def _draw_brows(c: _Canvas, d: ImageDraw.ImageDraw, a: Dict[str, Any], eyes) -> None:
    ry = a["head_rx"] * a["head_aspect"]
    light_hair = a["hair_colour"] in ("white", "grey", "blonde")
    col = _shade(a["hair_rgb"], 0.7 if light_hair else 0.55)
    rng = _part_rng(a, "brows")
    th = a["brow_thickness"]
    hair_col = _shade(col, 0.75)
    w = c.w(0.4)
    for i, (ex, ey, ew, eh) in enumerate(eyes):
        s = -1 if i == 0 else 1
        by = ey - ry * a["brow_raise"]
        tilt = a["brow_tilt"] * 0.03
        inner = (ex - s * ew * 1.05, by + tilt)
        outer = (ex + s * ew * 1.2, by + 0.01 - tilt * 0.5)
        peak = (ex + s * ew * 0.25, by - 0.022)
        top = [tuple(q) for q in _bezier_batch(np.array([inner]), np.array([peak]), np.array([outer]), 8)[0].tolist()]
        bottom = [(x, y + th * (1.0 - 0.6 * k / 8)) for k, (x, y) in enumerate(top)]
        d.polygon([c.p(*q) for q in top + bottom[::-1]], fill=col)
        # individual hairs along the brow
        for _ in range(14):
            k = rng.randrange(8)
            x, y = top[k]
            d.line([c.p(x, y + th * 0.8), c.p(x + s * 0.012, y - 0.002)], fill=hair_col, width=w)


def _draw_hair_cap(c: _Canvas, d: ImageDraw.ImageDraw, a: Dict[str, Any]) -> None:
    if a["hair_style"] == "bald":
        return
    cx, cy, rx, ry, orx, ory = _hair_geometry(a)
    col = tuple(a["hair_rgb"])
    rng = _part_np_rng(a, "hair_cap")
    hl_y = cy - ry * a["hairline"]  # fringe height
    temple_y = cy - ry * 0.15
    # dome from the left temple over the top to the right temple
    t0, t1 = math.pi + 0.15, 2 * math.pi - 0.15
    dome = _hair_dome(a, t0 - 0.3, t1 + 0.3, 24)
    side_r = (cx + rx * 0.93, temple_y)
    side_l = (cx - rx * 0.93, temple_y)
    fringe = []
    n_f = 24
    zig = 0.012 if a["hair_style"] != "curly" else 0.02
    for k in range(n_f + 1):
        t = 1 - 2 * k / n_f  # right to left
        x = cx + rx * 0.9 * t
        y = hl_y + a["fringe_slope"] * rx * t + (zig if k % 2 else 0.0) * (1 - abs(t) ** 4)
        fringe.append((x, y))
    cap = dome + [side_r] + fringe + [side_l]
    if a["hair_style"] == "curly":  # bumpy silhouette: discs along the outer contour
        for x, y in dome[::2]:
            r = 0.035
            d.ellipse(c.box(x, y, r, r), fill=col)
    d.polygon([c.p(*q) for q in cap], fill=col)
    # strands: curves from the parting over the dome to the fringe and the sides
    part = (cx + a["hair_parting"] * rx, cy - ory * 0.98)
    targets = fringe[1:-1] + [side_r, side_l] + [dome[i] for i in (0, 1, 2, 21, 22, 23)]
    curly = a["hair_style"] == "curly"
    k = a["hair_strands"] // 3 if curly else a["hair_strands"]  # curly hair: mostly curls, few combed strands
    end = np.asarray(targets)[rng.integers(0, len(targets), k)]
    end[:, 0] += rng.uniform(-0.01, 0.01, k)
    end[:, 1] -= rng.uniform(0.0, 0.012, k)
    start = np.empty((k, 2))
    start[:, 0] = part[0] + rng.uniform(-0.01, 0.01, k)
    start[:, 1] = part[1] + rng.uniform(0.0, 0.02, k)
    mid = (start + end) * 0.5
    # the control point bulges away from the head centre, so strands follow the dome
    out = mid - np.array([cx, cy])
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-6
    ctrl = mid + out * rng.uniform(0.01, 0.03, (k, 1))
    lines = (_bezier_batch(start, ctrl, end, 6) * c.n).reshape(k, -1).tolist()
    shade = rng.integers(0, 8, k).tolist()
    shades = _shade_table(col, 0.55, 1.45)
    w1, w2 = c.w(0.5), c.w(0.8)
    for i, line in enumerate(lines):
        d.line(line, fill=shades[shade[i]], width=w2 if i % 5 == 0 else w1)  # every fifth strand thicker
    if curly:
        crng = _part_rng(a, "curls")
        for _ in range(a["hair_strands"] // 2):
            t = crng.uniform(t0 - 0.3, t1 + 0.3)
            rr = crng.uniform(0.8, 1.05)
            x, y = _superellipse(a, [t], rr * orx / rx, rr * ory / ry)[0]
            r = crng.uniform(0.008, 0.016)
            start = crng.uniform(0, 360)
            colour = _shade(col, crng.uniform(0.5, 1.4))
            d.arc(c.box(x, y, r, r), start, start + crng.uniform(200, 320), fill=colour, width=w1)


def _draw_glasses(c: _Canvas, d: ImageDraw.ImageDraw, da: ImageDraw.ImageDraw, a: Dict[str, Any], eyes) -> None:
    col = tuple(a["glasses_rgb"])
    w = c.w(a["glasses_frame"])
    rx = a["head_rx"]
    lenses = []
    for ex, ey, ew, eh in eyes:
        # lenses around the eyes, leaving a bridge gap between them
        lw = min(ew * 1.45, rx * (a["eye_spacing"] - 0.07))
        lh = max(lw * 0.72, eh * 1.2)
        box = c.box(ex, ey + eh * 0.1, lw, lh)
        lenses.append(box)
        if a["glasses_tint"]:
            if a["glasses_shape"] == "round":
                da.ellipse(box, fill=LENS_TINT)
            else:
                da.rounded_rectangle(box, radius=int(lh * c.n * 0.4), fill=LENS_TINT)
        if a["glasses_shape"] == "round":
            d.ellipse(box, outline=col, width=w)
        else:
            d.rounded_rectangle(box, radius=int(lh * c.n * 0.4), outline=col, width=w)
    (l0, t0, r0, b0), (l1, t1, r1, b1) = lenses
    mid_y = (t0 + b0) / 2
    gap = l1 - r0
    d.arc((r0 - w, mid_y - gap * 0.5, l1 + w, mid_y + gap * 0.5), 200, 340, fill=col, width=w)
    # temple arms towards the ears
    cx = a["head_cx"]
    for x_edge, s in ((l0, -1), (r1, 1)):
        ear_x = (cx + s * rx * 0.95) * c.n
        d.line([(x_edge, mid_y - (b0 - t0) * 0.2), (ear_x, mid_y - (b0 - t0) * 0.1)], fill=col, width=w)


def default_supersample(size: int) -> int:
    """Supersampling factor: draw on >= ``MIN_CANVAS`` px (4x at 64, 2x at 128 and 256)."""
    return max(2, -(-MIN_CANVAS // size))


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 16 or size % 16:
        raise ValueError(f"demo face size must be an int multiple of 16 (64, 128, 256 are supported), got {size!r}")


_REQUIRED_KEYS = tuple(sample_attributes(0).keys())


def render_from_attributes(attrs: Dict[str, Any], size: int = 128, supersample: Optional[int] = None) -> Image.Image:
    """Render the face described by ``attrs`` (from :func:`sample_attributes`) as an RGB ``size``² image."""
    _check_size(size)
    missing = [k for k in _REQUIRED_KEYS if k not in attrs]
    if missing:
        raise KeyError(f"face attributes are missing keys {missing}")
    if attrs["version"] != DEMO_FACES_VERSION:
        raise ValueError(
            f"face attributes have version {attrs['version']}, this renderer draws version {DEMO_FACES_VERSION}"
        )
    ss = default_supersample(size) if supersample is None else int(supersample)
    if ss < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    c = _Canvas(size, ss)
    a = attrs
    img = _background(c, a)
    d = ImageDraw.Draw(img)
    da = ImageDraw.Draw(img, "RGBA")  # for translucent blush and tinted lenses
    _draw_back_hair(c, d, a)
    neck_hw, neck_y = _draw_clothing(c, img, d, a)
    if a["has_necklace"]:
        _draw_necklace(c, d, a, neck_hw, neck_y)
    if a["has_text"]:
        _draw_text(c, img, d, a, neck_y)
    lobes = _draw_ears(c, d, a)
    if a["has_earrings"]:
        _draw_earrings(c, d, a, lobes)
    d.polygon([c.p(*q) for q in _head_outline(a)], fill=tuple(a["skin_rgb"]), outline=_shade(a["skin_rgb"], 0.8))
    _draw_skin_details(c, d, da, a)
    _draw_nose_mouth(c, d, a)
    eyes = _draw_eyes(c, img, d, a)
    _draw_brows(c, d, a, eyes)
    _draw_hair_cap(c, d, a)
    if a["has_glasses"]:
        _draw_glasses(c, d, da, a, eyes)
    if ss > 1:
        img = img.resize((size, size), Image.LANCZOS)
    return img


def render_face(seed: int, size: int = 128, supersample: Optional[int] = None) -> Image.Image:
    """The demo face of ``seed``: deterministic, independent of any global RNG state."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return render_from_attributes(sample_attributes(random.Random(int(seed))), size, supersample)


# ----------------------------------------------------------------------------------------------
# Ground truth for editing
# ----------------------------------------------------------------------------------------------

MASK_THRESHOLD = 2  # uint8 levels: a mask pixel changes by more in some channel (drops faint LANCZOS ringing)
VISIBLE_THRESHOLD = 15  # uint8 levels: 16+ is a clear change (stubble on dark skin, light hair stays below)
MIN_VISIBLE_PIXELS = 3  # at 128 px: a half-covered stud shows 3 clear pixels; fewer = hidden by hair or skin
VISIBILITY_SIZE = 128  # visible_only labels measure the mask at this size, whatever size the images have
# categorical attributes whose colour is stored as jittered RGB next to the class name
_DERIVED_RGB: Dict[str, Tuple[str, Sequence[Sequence[int]]]] = {
    "hair_colour": ("hair_rgb", list(HAIR_PALETTE.values())),
    "eye_colour": ("eye_rgb", list(EYE_PALETTE.values())),
    "skin_tone": ("skin_rgb", SKIN_PALETTE),
}
LIP_RED_MAX = 40  # sample_attributes adds up to this much red to the tinted skin colour of the lips


def _check_attribute_name(name: str) -> None:
    if name not in BINARY_ATTRIBUTES and name not in CATEGORICAL_ATTRIBUTES:
        raise ValueError(
            f"unknown attribute {name!r}: binary attributes are {list(BINARY_ATTRIBUTES)}, "
            f"categorical ones are {list(CATEGORICAL_ATTRIBUTES)}"
        )


def _check_attribute_value(name: str, value: Any) -> Any:
    """``value`` as stored in the attribute dict (a bool, a class name or a skin-tone index)."""
    _check_attribute_name(name)
    if name in BINARY_ATTRIBUTES:
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"binary attribute {name!r} takes True or False, got {value!r} ({type(value).__name__})")
        return bool(value)
    classes = CATEGORICAL_ATTRIBUTES[name]
    ok = (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
          if name == "skin_tone" else isinstance(value, str))
    if not ok or value not in classes:
        raise ValueError(f"categorical attribute {name!r} takes one of {list(classes)}, got {value!r}")
    return int(value) if name == "skin_tone" else value


def with_attribute(attrs: Dict[str, Any], name: str, value: Any) -> Dict[str, Any]:
    """A deep copy of ``attrs`` with attribute ``name`` set to ``value``; ``attrs`` is left alone.

    ``name`` is one of ``BINARY_ATTRIBUTES`` (``value`` a bool) or ``CATEGORICAL_ATTRIBUTES``
    (``value`` one of its classes: a name, or the index 0..5 for ``skin_tone``); anything else is
    a ``ValueError`` that lists the valid names or classes. A new ``hair_colour``, ``eye_colour`` or
    ``skin_tone`` also sets the colour the renderer draws with (``hair_rgb``, ``eye_rgb``,
    ``skin_rgb``) to the palette colour of the class, without jitter, and a new skin tone re-tints
    the lips (keeping the face's extra lip red). Setting a categorical attribute to the class it
    already has changes nothing (the jittered colour stays). Every other key, ``detail_seed``
    included, is kept, so only the pixels of that attribute change.
    """
    value = _check_attribute_value(name, value)
    out = copy.deepcopy(attrs)
    if name in CATEGORICAL_ATTRIBUTES and out.get(name) == value:
        return out
    out[name] = value
    if name in _DERIVED_RGB:
        key, palette = _DERIVED_RGB[name]
        index = CATEGORICAL_ATTRIBUTES[name].index(value)
        old = out[key]
        out[key] = [int(c) for c in palette[index]]
        if name == "skin_tone" and "lip_rgb" in out:
            red = min(LIP_RED_MAX, max(0.0, out["lip_rgb"][0] - old[0] * LIP_TINT[0]))
            lip = np.array(out[key]) * LIP_TINT + [red, 0, 0]
            out["lip_rgb"] = [int(c) for c in np.clip(lip, 0, 255)]
    return out


def paired_renders(
    attrs: Dict[str, Any], name: str, size: int = 128, value: Any = None
) -> Tuple[Image.Image, Image.Image]:
    """The same face rendered twice, differing only in attribute ``name``: two PIL RGB ``size``² images.

    Binary attribute: ``(with, without)`` = the face with ``name`` switched on and switched off,
    whatever ``attrs`` says (``value`` must be None). Categorical attribute: ``(as given, with
    value)`` = ``attrs`` rendered unchanged and :func:`with_attribute` ``(attrs, name, value)``;
    ``value`` is required. Every other part is drawn from its own generator, so every pixel that
    differs between the two belongs to the attribute (up to the LANCZOS downsample's ringing).
    """
    _check_attribute_name(name)
    if name in BINARY_ATTRIBUTES:
        if value is not None:
            raise ValueError(f"binary attribute {name!r} takes no value: the pair is (on, off)")
        return (render_from_attributes(with_attribute(attrs, name, True), size),
                render_from_attributes(with_attribute(attrs, name, False), size))
    if value is None:
        raise ValueError(f"categorical attribute {name!r} needs a value, one of {list(CATEGORICAL_ATTRIBUTES[name])}")
    return render_from_attributes(attrs, size), render_from_attributes(with_attribute(attrs, name, value), size)


def dilate_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Boolean ``(H, W)`` mask grown by ``radius`` pixels (square neighbourhood: Chebyshev distance)."""
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f"dilation radius must be a non-negative int, got {radius!r}")
    if radius == 0:
        return mask.copy()
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    return torch.nn.functional.max_pool2d(m, 2 * int(radius) + 1, stride=1, padding=int(radius))[0, 0].numpy() > 0


def changed_pixels(a: Image.Image, b: Image.Image, threshold: int = MASK_THRESHOLD) -> np.ndarray:
    """Boolean ``(H, W)``: some channel of ``a`` and ``b`` differs by more than ``threshold`` levels."""
    diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
    return diff.max(axis=-1) > threshold


def attribute_mask(
    attrs: Dict[str, Any],
    name: str,
    size: int = 128,
    value: Any = None,
    dilate: int = 0,
    threshold: int = MASK_THRESHOLD,
) -> np.ndarray:
    """Where attribute ``name`` is drawn: boolean ``(size, size)``, True where the paired renders differ.

    A pixel is in the mask when some channel of :func:`paired_renders` differs by more than
    ``threshold`` uint8 levels (default ``MASK_THRESHOLD``: the LANCZOS downsample spreads each
    drawn pixel up to 3 output pixels with faint ringing, and 2 levels keep almost all of the drawn
    footprint while dropping most of that ringing); then the mask is grown by ``dilate`` pixels
    (:func:`dilate_mask`).
    Binary attribute: the on/off difference, so the mask is the same whether the face has the
    attribute or not (where it is drawn, or would be). Categorical attribute: where the face
    changes when set to ``value``; with ``value=None`` the union over every other class (one render
    per class: hair colour = the hair and brows, skin tone = all skin, ...).
    """
    _check_attribute_name(name)
    if name in CATEGORICAL_ATTRIBUTES and value is None:
        base = render_from_attributes(attrs, size)
        mask = np.zeros((size, size), dtype=bool)
        for other in CATEGORICAL_ATTRIBUTES[name]:
            if other != attrs[name]:
                mask |= changed_pixels(base, render_from_attributes(with_attribute(attrs, name, other), size), threshold)
    else:
        mask = changed_pixels(*paired_renders(attrs, name, size, value), threshold)
    return dilate_mask(mask, dilate)


def attribute_labels(attrs: Dict[str, Any], visible_only: bool = False) -> Dict[str, Union[bool, int]]:
    """The judge's targets: ``{name: bool}`` for ``BINARY_ATTRIBUTES`` and ``{name: class index}``
    (into ``CATEGORICAL_ATTRIBUTES[name]``) for the categorical ones.

    ``visible_only``: a binary attribute counts only when it is also visible: its
    :func:`attribute_mask` at ``VISIBILITY_SIZE`` px with ``threshold=VISIBLE_THRESHOLD`` (pixels
    that change by 16+ levels) covers at least ``MIN_VISIBLE_PIXELS`` pixels. That costs two
    renders per attribute the face has, and turns off stubble drawn in nearly the skin's colour
    (dark skin, light hair) and earrings covered by hair. Categorical labels are the attribute
    dict's either way.
    """
    labels: Dict[str, Union[bool, int]] = {}
    for name in BINARY_ATTRIBUTES:
        on = bool(attrs[name])
        if on and visible_only:
            area = int(attribute_mask(attrs, name, VISIBILITY_SIZE, threshold=VISIBLE_THRESHOLD).sum())
            on = area >= MIN_VISIBLE_PIXELS
        labels[name] = on
    for name, classes in CATEGORICAL_ATTRIBUTES.items():
        labels[name] = classes.index(attrs[name])
    return labels


# ----------------------------------------------------------------------------------------------
# Torch datasets
# ----------------------------------------------------------------------------------------------


def face_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB image -> float32 tensor ``(3, H, W)`` in ``[-1, 1]`` (the generator's range)."""
    if img.mode != "RGB":
        raise ValueError(f"face_tensor expects an RGB image, got mode {img.mode}")
    w, h = img.size
    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)  # bytearray: a writable copy
    # uint8 HWC -> contiguous CHW before the float conversion (3x faster than converting strided)
    return pixels.view(h, w, 3).permute(2, 0, 1).contiguous().float().div_(127.5).sub_(1.0)


def check_seed_range(seed_offset: int, n: int) -> None:
    """Refuse a seed range that mixes training seeds and held-out seeds."""
    if isinstance(seed_offset, bool) or not isinstance(seed_offset, int) or seed_offset < 0:
        raise ValueError(f"seed_offset must be a non-negative int, got {seed_offset!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of images must be a positive int, got {n!r}")
    if seed_offset < TRAIN_SEED_END < seed_offset + n:
        raise ValueError(
            f"seeds [{seed_offset}, {seed_offset + n}) straddle the train/test boundary {TRAIN_SEED_END}: "
            f"training seeds are [0, {TRAIN_SEED_END}), held-out seeds start at {TEST_SEED_OFFSET}"
        )


class DemoFaceDataset(Dataset):
    """Map-style demo faces: item ``i`` is the face of seed ``seed_offset + i``, always the same image.

    ``dataset[i]`` is a float32 tensor ``(3, size, size)`` in ``[-1, 1]``. For held-out sets use
    ``seed_offset >= TEST_SEED_OFFSET``.
    """

    def __init__(self, n: int, size: int = 128, seed_offset: int = 0):
        _check_size(size)
        check_seed_range(seed_offset, n)
        self.n, self.size, self.seed_offset = n, size, seed_offset

    def __len__(self) -> int:
        return self.n

    def seed(self, index: int) -> int:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for a DemoFaceDataset of {self.n} images")
        return self.seed_offset + index

    def attributes(self, index: int) -> Dict[str, Any]:
        return sample_attributes(random.Random(self.seed(index)))

    def __getitem__(self, index: int) -> torch.Tensor:
        return face_tensor(render_face(self.seed(index), self.size))


def _default_rank_world() -> Tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class DemoFaceStream(IterableDataset):
    """Infinite stream of demo faces for training, seeded, disjoint across DDP ranks and workers.

    Rank ``r`` of ``W`` owns the rank-local sequence ``n = 0, 1, 2, ...`` with seeds
    ``seed_offset + (n * W + r) % n_seeds``: ranks never share a seed (within one pass over
    ``n_seeds``). Inside a rank, DataLoader worker ``k`` of ``K`` takes the chunks ``j`` of
    ``chunk_size`` consecutive items with ``j % K == k``; the DataLoader hands out one batch per
    worker in turn, so with ``chunk_size == batch_size`` the batches arrive in exactly the order of
    ``num_workers=0``, whatever the number of workers.

    Yields float32 tensors ``(3, size, size)`` in ``[-1, 1]`` (with ``return_seed``:
    ``(tensor, seed)``).

    Resume: ``state_dict()`` holds ``next_index``, the first rank-local item not yet consumed, and
    ``load_state_dict`` restarts there. Iterating in the main process advances it by itself; with
    DataLoader workers the workers advance their own copies, so the training loop calls
    ``advance(len(batch))`` for every batch it consumes (or sets ``next_index`` from its step count).

    ``rank`` and ``world_size`` default to the initialised ``torch.distributed`` process group (or
    0 and 1): build the stream after ``init_process_group``.
    """

    def __init__(
        self,
        size: int = 128,
        seed_offset: int = 0,
        n_seeds: int = TRAIN_SEED_END,
        start_index: int = 0,
        chunk_size: int = 1,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        return_seed: bool = False,
    ):
        _check_size(size)
        check_seed_range(seed_offset, n_seeds)
        if rank is None or world_size is None:
            d_rank, d_world = _default_rank_world()
            rank = d_rank if rank is None else rank
            world_size = d_world if world_size is None else world_size
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {start_index}")
        self.size, self.seed_offset, self.n_seeds = size, seed_offset, n_seeds
        self.rank, self.world_size = int(rank), int(world_size)
        self.chunk_size = int(chunk_size)
        self.next_index = int(start_index)
        self.return_seed = return_seed

    def seed_of(self, index: int) -> int:
        """Seed of the rank-local item ``index``."""
        return self.seed_offset + (index * self.world_size + self.rank) % self.n_seeds

    def indices(self, worker_id: int = 0, num_workers: int = 1) -> Iterator[int]:
        """Rank-local item indices that worker ``worker_id`` of ``num_workers`` produces, in order."""
        start, chunk = self.next_index, self.chunk_size
        j = worker_id
        while True:
            base = start + j * chunk
            yield from range(base, base + chunk)
            j += num_workers

    def __iter__(self):
        info = get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in self.indices(worker_id, num_workers):
            seed = self.seed_of(index)
            item = face_tensor(render_face(seed, self.size))
            if info is None:
                self.next_index = index + 1
            yield (item, seed) if self.return_seed else item

    def advance(self, n_items: int) -> None:
        """Record ``n_items`` more consumed items (for DataLoaders with workers)."""
        self.next_index += int(n_items)

    def state_dict(self) -> Dict[str, int]:
        return {
            "next_index": self.next_index,
            "seed_offset": self.seed_offset,
            "n_seeds": self.n_seeds,
            "size": self.size,
            "rank": self.rank,
            "world_size": self.world_size,
            "version": DEMO_FACES_VERSION,
        }

    def load_state_dict(self, state: Dict[str, int]) -> None:
        for key in ("seed_offset", "n_seeds", "size", "world_size", "version"):
            mine = DEMO_FACES_VERSION if key == "version" else getattr(self, key)
            if key in state and state[key] != mine:
                raise ValueError(f"DemoFaceStream state has {key}={state[key]}, this stream has {key}={mine}")
        if "next_index" not in state:
            raise KeyError("DemoFaceStream state is missing 'next_index'")
        self.next_index = int(state["next_index"])


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

LABELS_FILE = "labels.jsonl"


def demo_file_name(index: int) -> str:
    return f"{index:06d}.png"


def _write_one(job: Tuple[str, int, int, int]) -> Dict[str, Any]:
    out_dir, index, seed, size = job
    attrs = sample_attributes(random.Random(seed))
    img = render_from_attributes(attrs, size)
    # Atomic: a killed run never leaves a truncated PNG under the final name. Not fsync'ed: the
    # files are cheap to regenerate and a dataset holds many of them.
    atomic_write(os.path.join(out_dir, demo_file_name(index)), lambda f: img.save(f, format="PNG"), durable=False)
    return {"file": demo_file_name(index), "seed": seed, "size": size, **attrs}


def write_demo_dataset(
    out_dir: Union[str, Path],
    n: int,
    size: int = 128,
    seed_offset: int = TEST_SEED_OFFSET,
    workers: int = 1,
    labels: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> List[Path]:
    """Write faces ``seed_offset + i`` as ``out_dir/{i:06d}.png`` for ``i < n``, plus
    ``labels.jsonl`` (one JSON object per file: ``file``, ``seed``, ``size`` and the attributes)
    when ``labels``. Existing files are never replaced unless ``overwrite``: the check happens
    before anything is written. Returns the written PNG paths.
    """
    _check_size(size)
    check_seed_range(seed_offset, n)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / demo_file_name(i) for i in range(n)]
    targets = paths + ([out / LABELS_FILE] if labels else [])
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{len(existing)} output file(s) already exist in {out} (first: {existing[0].name}); "
            "pass overwrite=True (--overwrite) to replace them"
        )
    jobs = [(str(out), i, seed_offset + i, size) for i in range(n)]
    records: List[Dict[str, Any]] = []
    bar = tqdm(total=n, desc=f"demo faces -> {out}", unit="img", disable=not progress)
    if workers == 1:
        for job in jobs:
            records.append(_write_one(job))
            bar.update(1)
    else:
        with multiprocessing.Pool(workers) as pool:
            for rec in pool.imap(_write_one, jobs, chunksize=max(1, min(64, n // (4 * workers)))):
                records.append(rec)
                bar.update(1)
    bar.close()
    if labels:
        atomic_write(out / LABELS_FILE, "".join(json.dumps(rec, sort_keys=True) + "\n" for rec in records),
                     durable=False)
    return paths


def demo_grid(seeds: Sequence[int], size: int = 128, nrow: int = 8, padding: int = 2) -> Image.Image:
    """One RGB image showing the faces of ``seeds`` in rows of ``nrow``, on a white background."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("demo_grid needs at least one seed")
    rows = -(-len(seeds) // nrow)
    cols = min(nrow, len(seeds))
    step = size + padding
    grid = Image.new("RGB", (cols * step + padding, rows * step + padding), (255, 255, 255))
    for k, seed in enumerate(seeds):
        grid.paste(render_face(seed, size), (padding + (k % nrow) * step, padding + (k // nrow) * step))
    return grid
