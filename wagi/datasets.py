"""The training and validation image sets of both trainers, registered by name (``data.kind``).

A dataset builder is ``fn(data_config, split, size) -> Dataset or None``: ``split`` is ``'train'`` or
``'test'`` (None: this kind has no validation set here), ``size`` the side of the square images, and
each item a ``(3, size, size)`` float tensor in ``[-1, 1]`` (or a tuple whose first element is one).
``data_config`` is the ``data`` section of the encoder config (:class:`wagi.config.DataConfig`) or of the
generator config (:class:`wagi.training.gan_config.GANDataConfig`); a builder reads the keys it needs.

Built in: ``folder`` (``data.train_dir`` / ``data.test_dir``, :class:`wagi.imageio.ImageFolderDataset`) and
``demo`` (the procedural demo faces: training seeds ``[0, data.demo_images)``, validation
``data.demo_test_size`` seeds from ``TEST_SEED_OFFSET``, see :mod:`wagi.demo_seeds`). ``data.kind: null``
keeps the older switch: ``demo`` when ``data.demo`` is true, else ``folder``. :func:`wagi.builders.build_dataset`
is the one place both trainers build their data from; ``docs/extending.md`` shows a new kind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

from torch.utils.data import Dataset

from .data import DEMO_FACES_VERSION, DemoFaceDataset
from .demo_seeds import TEST_SEED_OFFSET, TRAIN_SEED_END
from .imageio import ImageFolderDataset
from .registry import Registry

SPLITS = ("train", "test")

# builder(data config section, split, size) -> Dataset or None; info: source (fn(data config, n, size) ->
# the record of what a preload cache of the training set was built from; see wagi.training.data)
DATASETS: Registry[Callable[..., Optional[Dataset]]] = Registry("dataset kind", "data.kind")


def register_dataset(name: str, source: Optional[Callable[[Any, int, int], Dict[str, Any]]] = None):
    """Register ``fn(data_config, split, size) -> Dataset or None`` under ``data.kind`` ``name``. ``source``
    describes a training set for the preload cache (default: kind, number of images and size)."""
    return DATASETS.register(name, source=source or (lambda dc, n, size: {"kind": name, "n": n, "size": size}))


def dataset_kind(dc) -> str:
    """The registered kind a ``data`` config section selects: ``data.kind``, or (null) ``demo`` / ``folder``
    by ``data.demo``."""
    kind = getattr(dc, "kind", None)
    if kind is not None:
        return kind
    return "demo" if dc.demo else "folder"


def dataset_description(dc) -> str:
    """How error messages name the training set a ``data`` section selects (the key to change)."""
    kind = dataset_kind(dc)
    if kind == "folder":
        return "data.train_dir"
    if kind == "demo":
        return "the demo training set (data.demo_images)"
    return f"the {kind!r} training set (data.kind)"


@register_dataset("folder", source=lambda dc, n, size: {"kind": "folder", "root": str(Path(dc.train_dir).resolve()),
                                                         "n": n, "size": size})
def _folder(dc, split: str, size: int) -> Optional[Dataset]:
    if split == "train":
        return ImageFolderDataset(dc.train_dir, size)
    folder = getattr(dc, "test_dir", None)  # the generator trainer has no validation set
    return ImageFolderDataset(folder, size) if folder else None


@register_dataset("demo", source=lambda dc, n, size: {"kind": "demo", "n": n, "size": size,
                                                       "version": DEMO_FACES_VERSION})
def _demo(dc, split: str, size: int) -> Optional[Dataset]:
    if split == "train":
        n = TRAIN_SEED_END if dc.demo_images is None else dc.demo_images
        return DemoFaceDataset(n, size, seed_offset=0)
    n_test = getattr(dc, "demo_test_size", None)  # the generator trainer has no validation set
    return DemoFaceDataset(n_test, size, seed_offset=TEST_SEED_OFFSET) if n_test else None
