"""Editing directions shipped with a model bundle (``pretrained/demo/directions/``), usable by name.

A shipped direction is an InterFaceGAN boundary fitted for the bundle's generator
(``scripts/fit_directions.py``) and recorded in the bundle's ``manifest.json`` as an entry of kind
``direction``::

    "glasses": {"kind": "direction", "file": "directions/glasses.npy", "attribute": "has_glasses",
                "strength": 4.0, "generator_sha256": "...", "sha256": "...", "fit": {...}, ...}

``strength`` is the documented strength: ``+strength`` adds the attribute, ``-strength`` removes it.
``edit.py --direction boundary:glasses`` resolves the name through :func:`resolve_shipped`.
Directions mean something only in the W space of the generator they were fitted for: every bundled
model shares the bundle's generator (``generator_sha256`` names it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from ..bundle import BundleError, read_manifest

PathLike = Union[str, os.PathLike]

DIRECTION_KIND = "direction"
DIRECTIONS_DIR = "directions"  # sub-folder of the bundle holding the boundary files
DEMO_BUNDLE = Path(__file__).resolve().parents[2] / "pretrained" / "demo"


@dataclass
class ShippedDirection:
    """One shipped boundary: unit-norm ``direction`` (1, D) or (n_latent, D) and its documented strength."""

    name: str
    attribute: str
    path: Path
    strength: float
    direction: torch.Tensor
    entry: Dict[str, Any] = field(repr=False, default_factory=dict)


def direction_entries(bundle_dir: Optional[PathLike] = None) -> Dict[str, Dict[str, Any]]:
    """Manifest entries of kind ``direction`` (name → entry); empty when the bundle ships none."""
    manifest = read_manifest(DEMO_BUNDLE if bundle_dir is None else bundle_dir, missing_ok=True)
    return {name: e for name, e in manifest["models"].items()
            if isinstance(e, dict) and e.get("kind") == DIRECTION_KIND}


def resolve_shipped(name: str, bundle_dir: Optional[PathLike] = None) -> Optional[Path]:
    """The file of the shipped direction ``name``, or None when the bundle has no direction of that name."""
    bundle_dir = DEMO_BUNDLE if bundle_dir is None else bundle_dir
    entry = direction_entries(bundle_dir).get(name)
    if entry is None:
        return None
    return Path(bundle_dir) / entry["file"]


def load_shipped(bundle_dir: PathLike = DEMO_BUNDLE, names=None) -> Dict[str, ShippedDirection]:
    """Every shipped direction (or those in ``names``), loaded as float32 tensors."""
    entries = direction_entries(bundle_dir)
    if names is not None:
        unknown = [n for n in names if n not in entries]
        if unknown:
            raise BundleError(f"no shipped direction named {', '.join(unknown)} in {bundle_dir} "
                              f"(shipped: {', '.join(sorted(entries)) or 'none'})")
        entries = {n: entries[n] for n in names}
    out: Dict[str, ShippedDirection] = {}
    for name, e in entries.items():
        path = Path(bundle_dir) / e["file"]
        if not path.is_file():
            raise BundleError(f"shipped direction {name!r}: {path} not found")
        d = torch.from_numpy(np.load(path, allow_pickle=False)).float()
        out[name] = ShippedDirection(name, e["attribute"], path, float(e["strength"]), d, e)
    return out


__all__ = ["DIRECTION_KIND", "DIRECTIONS_DIR", "DEMO_BUNDLE", "ShippedDirection", "direction_entries",
           "resolve_shipped", "load_shipped"]
