"""Training data for WaGI: datasets from the config and a resumable, DDP-aware batch order.

The order of training samples is a pure function of ``(seed, step)``: step s of epoch e uses the
permutation drawn from ``seed + e``, global batch ``s mod batches_per_epoch``, and rank r takes slice r of
that global batch. So a resumed run sees exactly the data an uninterrupted one would, and a run on W
processes with batch b sees the same samples as one process with batch W·b. Per-sample augmentation
seeds are drawn the same way (:func:`sample_seeds`).
"""
from __future__ import annotations

from typing import Iterator, List, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

TRAIN_DEMO_SEEDS = 1_000_000   # demo training images use seeds [0, 1e6)
TEST_DEMO_SEED_OFFSET = 1_000_000  # held-out demo images use seeds from 1e6 on


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


def build_datasets(cfg) -> (Dataset, Optional[Dataset]):
    """(train, test) datasets from ``cfg.data``; each item is a (3, S, S) tensor in [-1, 1]."""
    dc = cfg.data
    if dc.demo:
        from ..data.demo_faces import DemoFaceDataset

        train = DemoFaceDataset(TRAIN_DEMO_SEEDS, dc.image_size, seed_offset=0)
        test = DemoFaceDataset(dc.demo_test_size, dc.image_size, seed_offset=TEST_DEMO_SEED_OFFSET)
        return train, test
    from ..imageio import ImageFolderDataset

    train = ImageFolderDataset(dc.train_dir, dc.image_size)
    test = ImageFolderDataset(dc.test_dir, dc.image_size) if dc.test_dir else None
    return train, test


def _first(item):
    return item[0] if isinstance(item, (tuple, list)) else item


def collate_images(items) -> torch.Tensor:
    return torch.stack([_first(it) for it in items])


def train_loader(dataset: Dataset, sampler: StepBatchSampler, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_images,
                      persistent_workers=False, pin_memory=torch.cuda.is_available())


def test_loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    # Never drop the last partial batch: every test image counts.
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=workers,
                      collate_fn=collate_images)
