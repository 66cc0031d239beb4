"""Drawing a demo face: ``render_from_attributes(attrs, size) -> PIL RGB image (size, size)``.

Pillow's ImageDraw draws on a canvas ``supersample`` times larger than the output, then a LANCZOS
downsample gives anti-aliased edges. Geometry lives in the unit square, so one attribute dict renders the
same face at 64, 128 or 256 pixels. Randomness that the attributes do not spell out comes from
``attrs["detail_seed"]`` through one private generator per face part. :func:`text_unit_box` and
:func:`neckline_y` give the renderer's geometry to code that crops details (:mod:`wagi.figures`).
"""
from __future__ import annotations

import math
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .attributes import DEMO_FACES_VERSION, LENS_TINT, METALS, MIN_CANVAS, sample_attributes

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


def text_glyph_size(text: str) -> Tuple[int, int]:
    """``(width, height)`` in font pixels of ``text`` as the renderer draws it (Pillow's bitmap font, whose
    line height is ``FONT_CELL``); the drawn text is scaled from this to ``text_height`` output pixels."""
    left, top, right, bottom = _bitmap_font().getbbox(text)
    return max(1, right - left), max(1, bottom - top)


def neckline_y(attrs: Dict[str, Any]) -> float:
    """Unit-square height of the neckline's lowest point (the text and the necklace hang from it)."""
    ry = attrs["head_rx"] * attrs["head_aspect"]
    y = attrs["head_cy"] + ry * 1.05 + 0.045  # shoulder line + neckline depth, as _draw_clothing draws them
    return y + 0.02 if attrs["neckline"] == "v" else y


def text_unit_box(attrs: Dict[str, Any]) -> Tuple[float, float, float, float]:
    """Unit-square box ``(x0, y0, x1, y1)`` of the printed text with its badge (``text_on_badge``), at any
    output size (the renderer rounds to whole canvas pixels; this is the unrounded geometry). Given whether
    or not the face draws its text."""
    tw, th = text_glyph_size(attrs["text"])
    unit_per_font_px = attrs["text_height"] / (REFERENCE_SIZE * FONT_CELL)
    sw, sh = tw * unit_per_font_px, th * unit_per_font_px
    cx = attrs["head_cx"] + attrs["text_x"] * attrs["shoulder_width"]
    cy = neckline_y(attrs) + 0.1 + sh / 2
    pad = 0.25 * sh if attrs["text_on_badge"] else 0.0
    return (cx - sw / 2 - pad, cy - sh / 2 - pad, cx + sw / 2 + pad, cy + sh / 2 + pad)


def _draw_text(c: _Canvas, img: Image.Image, d: ImageDraw.ImageDraw, a: Dict[str, Any], neck_y: float) -> None:
    font = _bitmap_font()
    text = a["text"]
    left, top = font.getbbox(text)[:2]
    tw, th = text_glyph_size(text)
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

        def local(box, x0=x0, y0=y0):
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
    for i, (ex, ey, ew, _eh) in enumerate(eyes):
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


def check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 16 or size % 16:
        raise ValueError(f"demo face size must be an int multiple of 16 (64, 128, 256 are supported), got {size!r}")


_REQUIRED_KEYS = tuple(sample_attributes(0).keys())


def render_from_attributes(attrs: Dict[str, Any], size: int = 128, supersample: Optional[int] = None) -> Image.Image:
    """Render the face described by ``attrs`` (from :func:`sample_attributes`) as an RGB ``size``² image."""
    check_size(size)
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
