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

The code lives in the package :mod:`wagi.data.demo`, one module per concern: ``attributes``
(:func:`sample_attributes`, palettes), ``render`` (drawing), ``labels`` (editing ground truth),
``datasets`` (torch datasets) and ``writer`` (files on disk); this module gathers their public names.
"""
from wagi.demo_seeds import TEST_SEED_OFFSET, TRAIN_SEED_END

from .demo.attributes import (
    BINARY_ATTRIBUTES,
    CATEGORICAL_ATTRIBUTES,
    CLOTHING_PATTERNS,
    DEMO_FACES_VERSION,
    EYE_PALETTE,
    HAIR_PALETTE,
    HAIR_STYLES,
    HAIR_WEIGHTS,
    LENS_TINT,
    LIP_TINT,
    METALS,
    MIN_CANVAS,
    MIN_TEXT_CONTRAST,
    SKIN_PALETTE,
    SUPPORTED_SIZES,
    TEXT_ALPHABET,
    sample_attributes,
)
from .demo.datasets import (
    DemoFaceDataset,
    DemoFaceStream,
    check_seed_range,
    face_tensor,
)
from .demo.labels import (
    LIP_RED_MAX,
    MASK_THRESHOLD,
    MIN_VISIBLE_PIXELS,
    VISIBILITY_SIZE,
    VISIBLE_THRESHOLD,
    attribute_labels,
    attribute_mask,
    changed_pixels,
    dilate_mask,
    paired_renders,
    with_attribute,
)
from .demo.render import (
    BEAD_RADIUS,
    EARRING_RADIUS,
    FONT_CELL,
    REFERENCE_SIZE,
    check_size,
    default_supersample,
    neckline_y,
    render_face,
    render_from_attributes,
    text_glyph_size,
    text_unit_box,
)
from .demo.writer import (
    LABELS_FILE,
    demo_file_name,
    demo_grid,
    write_demo_dataset,
)

__all__ = [
    "TEST_SEED_OFFSET",
    "TRAIN_SEED_END",
    "BINARY_ATTRIBUTES",
    "CATEGORICAL_ATTRIBUTES",
    "CLOTHING_PATTERNS",
    "DEMO_FACES_VERSION",
    "EYE_PALETTE",
    "HAIR_PALETTE",
    "HAIR_STYLES",
    "HAIR_WEIGHTS",
    "LENS_TINT",
    "LIP_TINT",
    "METALS",
    "MIN_CANVAS",
    "MIN_TEXT_CONTRAST",
    "SKIN_PALETTE",
    "SUPPORTED_SIZES",
    "TEXT_ALPHABET",
    "sample_attributes",
    "DemoFaceDataset",
    "DemoFaceStream",
    "check_seed_range",
    "face_tensor",
    "LIP_RED_MAX",
    "MASK_THRESHOLD",
    "MIN_VISIBLE_PIXELS",
    "VISIBILITY_SIZE",
    "VISIBLE_THRESHOLD",
    "attribute_labels",
    "attribute_mask",
    "changed_pixels",
    "dilate_mask",
    "paired_renders",
    "with_attribute",
    "BEAD_RADIUS",
    "EARRING_RADIUS",
    "FONT_CELL",
    "REFERENCE_SIZE",
    "check_size",
    "default_supersample",
    "neckline_y",
    "render_face",
    "render_from_attributes",
    "text_glyph_size",
    "text_unit_box",
    "LABELS_FILE",
    "demo_file_name",
    "demo_grid",
    "write_demo_dataset",
]
