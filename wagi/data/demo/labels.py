"""Ground truth for attribute editing: :func:`with_attribute` (one attribute changed, all else kept),
:func:`paired_renders` (the face with and without it), :func:`attribute_mask` (the ``(S, S)`` pixels it
draws) and :func:`attribute_labels` (the judge's targets).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .attributes import BINARY_ATTRIBUTES, CATEGORICAL_ATTRIBUTES, EYE_PALETTE, HAIR_PALETTE, LIP_TINT, SKIN_PALETTE
from .render import render_from_attributes

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
                mask |= changed_pixels(base, render_from_attributes(with_attribute(attrs, name, other), size),
                                       threshold)
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
