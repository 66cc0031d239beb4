"""Training data for WaGI: datasets from the config, a resumable, DDP-aware batch order, and preloading.

The order of training samples is a pure function of ``(seed, step)``: step s of epoch e uses the
permutation drawn from ``seed + e``, global batch ``s mod batches_per_epoch``, and rank r takes slice r of
that global batch. So a resumed run sees exactly the data an uninterrupted one would, and a run on W
processes with batch b sees the same samples as one process with batch W·b. Per-sample augmentation
seeds are drawn the same way (:func:`sample_seeds`).

Preloading (both trainers' ``data.preload``): a finite training set is decoded (or rendered) once into a
uint8 tensor ``(N, 3, S, S)`` kept on the training device, and each step gathers its batch there
(:class:`PreloadedImages`, indexed by the same :class:`StepBatchSampler`), so no loader worker runs in
the loop. ``data.cache_file`` keeps that tensor on disk together with a record of what it was built from
(:func:`wagi.builders.dataset_source`); a cache whose record differs is rebuilt (:func:`load_preloaded`).
The datasets themselves come from :func:`wagi.builders.build_dataset` (registry :data:`wagi.datasets.DATASETS`).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .distributed import DistInfo, barrier

logger = logging.getLogger(__name__)

UINT8_MAX = 255.0
PRELOAD_BATCH = 64  # images decoded per loader batch while preloading


class StepBatchSampler(Sampler[List[int]]):
    """Yields this rank's index list for steps ``start_step, start_step + 1, ...`` (forever)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start_step: int = 0,
                 shuffle: bool = True):
        global_batch = batch_size * world_size
        if n < global_batch:
            raise ValueError(f"the training set has {n} images, fewer than one global batch ({global_batch})")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.start_step, self.shuffle = start_step, shuffle
        self.batches_per_epoch = n // global_batch

    def _perm(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def indices_for_step(self, step: int, perm: Optional[torch.Tensor] = None) -> List[int]:
        epoch, b = divmod(step, self.batches_per_epoch)
        perm = self._perm(epoch) if perm is None else perm
        gb = self.batch_size * self.world_size
        start = b * gb + self.rank * self.batch_size
        return perm[start: start + self.batch_size].tolist()

    def __iter__(self) -> Iterator[List[int]]:
        step, epoch, perm = self.start_step, None, None
        while True:
            e = step // self.batches_per_epoch
            if e != epoch:
                epoch, perm = e, self._perm(e)
            yield self.indices_for_step(step, perm)
            step += 1

    def __len__(self) -> int:  # an epoch, for progress displays
        return self.batches_per_epoch


def sample_seeds(seed: int, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> List[int]:
    """Per-sample augmentation seeds of this rank at ``step`` (independent of how the batch is split)."""
    g = torch.Generator().manual_seed(seed * 7_919 + step + 1)
    seeds = torch.randint(0, 2 ** 62, (batch_size * world_size,), generator=g)
    return seeds[rank * batch_size: (rank + 1) * batch_size].tolist()


def check_batch_fits(n_images: int, batch_size: int, world_size: int, source: str) -> None:
    """A training set must hold at least one global batch: say so naming the keys, before any model is built."""
    from ..config import ConfigError

    if n_images < batch_size * world_size:
        procs = f" x {world_size} processes" if world_size > 1 else ""
        raise ConfigError("train.batch_size", f"{source} has {n_images} readable image(s), fewer than one batch "
                                              f"({batch_size}{procs}); add images or lower train.batch_size")


def _first(item):
    return item[0] if isinstance(item, (tuple, list)) else item


def collate_images(items) -> torch.Tensor:
    return torch.stack([_first(it) for it in items])


def train_loader(dataset: Dataset, sampler: StepBatchSampler, workers: int, seed: int = 0) -> DataLoader:
    # The loader's own generator (worker seeds only): starting it draws nothing from the global RNG, whose
    # state checkpoints restore, so a preloaded run and a loader run leave that state alike.
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_images,
                      persistent_workers=False, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(seed))


def test_loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    # Never drop the last partial batch: every test image counts.
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=workers,
                      collate_fn=collate_images)


# ------------------------------------------------------------------------------------------- preloading


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` floats to uint8 (exact for images that came from 8-bit pixels)."""
    return ((x + 1) * (UINT8_MAX / 2)).round_().clamp_(0, UINT8_MAX).to(torch.uint8)


def preload_images(dataset: Dataset, workers: int, progress: bool = False) -> torch.Tensor:
    """Decode (or render) every item once: uint8 ``(N, 3, S, S)`` on the CPU, in index order."""
    loader = DataLoader(dataset, batch_size=PRELOAD_BATCH, shuffle=False, num_workers=workers,
                        collate_fn=collate_images)
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="preloading training images", dynamic_ncols=True, file=sys.stderr)
    return torch.cat([to_uint8(x) for x in it])


class PreloadedImages:
    """The training set as one uint8 tensor on the training device; batches are gathered there.

    ``batch(indices)`` returns float ``(len(indices), 3, S, S)`` in ``[-1, 1]`` on the device, equal to
    stacking ``dataset[i]`` for 8-bit images.
    """

    def __init__(self, images: torch.Tensor, device: torch.device):
        self.images = images.to(device)
        self.device = device

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        idx = torch.tensor(indices, dtype=torch.long)
        if self.device.type == "cuda":
            idx = idx.pin_memory().to(self.device, non_blocking=True)
        return self.images.index_select(0, idx).float().div_(UINT8_MAX / 2).sub_(1.0)


def read_image_cache(path: Path, source: Dict[str, Any]) -> Optional[torch.Tensor]:
    """The uint8 images cached in ``path``, or None when the file is missing or was built from other data."""
    from ..checkpoint import CheckpointError, load_checkpoint
    from ..config import ConfigError

    if not path.is_file():
        return None
    try:
        data = load_checkpoint(path)
    except CheckpointError as err:  # not ours: never overwrite a file we did not write
        raise ConfigError("data.cache_file", f"{err}; it is not an image cache, so it is left alone: delete it "
                                             "or point data.cache_file at another path") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
            or images.shape[1] != 3 or "source" not in data:
        raise ConfigError("data.cache_file", f"{path} is not an image cache written by WaGI (no uint8 'images' "
                                             "(N, 3, S, S) with a 'source'); delete it or point data.cache_file "
                                             "at another path")
    if data.get("source") != source:
        logger.info("data.cache_file: %s was built from %s, not %s: rebuilding it", path, data.get("source"), source)
        return None
    return images


def load_preloaded(dataset: Dataset, source: Dict[str, Any], device: torch.device, dist: DistInfo,
                   cache_file: Optional[Union[str, Path]] = None, workers: int = 0, progress: bool = False,
                   render: Optional[Callable[..., torch.Tensor]] = None) -> PreloadedImages:
    """``dataset`` preloaded on ``device``: read from ``cache_file`` when its record equals ``source``, else
    rendered with ``render`` (default :func:`preload_images`) and, with a cache file, written there by the
    main rank (the other ranks wait for it and read it)."""
    from ..checkpoint import save_checkpoint

    render = render or preload_images
    cache = Path(cache_file) if cache_file else None
    images = None
    if cache is not None and dist.is_main:
        images = read_image_cache(cache, source)
        if images is None:
            images = render(dataset, workers, progress)
            save_checkpoint({"source": source, "images": images}, cache)
    barrier(dist)  # the cache is complete before the other ranks read it
    if images is None:
        images = read_image_cache(cache, source) if cache is not None else None
        if images is None:
            images = render(dataset, workers, progress)
    return PreloadedImages(images, device)
