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

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from wagi.fileio import PathLike

from ..bundle import BundleError, read_manifest
from .interfacegan import load_boundary

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


def generator_fingerprint(generator: torch.nn.Module) -> str:
    """sha256 of a generator's weights rounded to fp16 (the bundle's storage precision): the same number
    for the bundled file and for the generator inside every bundled model that shares it."""
    h = hashlib.sha256()
    for key, value in sorted(generator.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
    return h.hexdigest()


def check_direction_fits(entry: Dict[str, Any], generator: torch.nn.Module, name: str) -> None:
    """Raise :class:`BundleError` when shipped direction ``name`` was fitted for another generator."""
    want = entry.get("generator_fingerprint")
    if want is not None and want != generator_fingerprint(generator):
        raise BundleError(f"shipped direction {name!r} was fitted for another generator than this model's "
                          "(directions mean nothing in another W space): fit one with scripts/fit_directions.py")


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


def _stored_shape(path: Path):
    import numpy as np
    try:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except Exception as err:  # not an .npy file: one line
        raise BundleError(f"{path}: not a readable .npy direction ({type(err).__name__})") from None
    return (int(shape[-2]) if len(shape) >= 2 else 1), int(shape[-1])


def load_shipped(bundle_dir: PathLike = DEMO_BUNDLE, names=None, n_latent: Optional[int] = None,
                 style_dim: Optional[int] = None) -> Dict[str, ShippedDirection]:
    """Every shipped direction (or those in ``names``), read and checked by
    :func:`~wagi.editing.interfacegan.load_boundary` (against ``n_latent`` / ``style_dim`` when given)."""
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
        n, dim = n_latent, style_dim
        if n is None or dim is None:  # shapes unknown: as stored, still checked for values
            rows, stored = _stored_shape(path)
            n, dim = n or rows, dim or stored
        d = load_boundary(path, n, dim)
        out[name] = ShippedDirection(name, e["attribute"], path, float(e["strength"]), d, e)
    return out


__all__ = ["generator_fingerprint", "check_direction_fits", "DIRECTION_KIND", "DIRECTIONS_DIR", "DEMO_BUNDLE",
           "ShippedDirection", "direction_entries", "resolve_shipped", "load_shipped"]
