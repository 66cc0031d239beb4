"""Attributes of a demo face: the JSON-able dict that :func:`sample_attributes` draws from a seed, and the
palettes and option sets its values come from (:data:`BINARY_ATTRIBUTES` and
:data:`CATEGORICAL_ATTRIBUTES` are what an attribute judge predicts).
"""
from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

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
