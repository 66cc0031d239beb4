"""Torch datasets of demo faces: :class:`DemoFaceDataset` (map-style, item i = seed ``seed_offset + i``)
and :class:`DemoFaceStream` (infinite, rank- and worker-aware, resumable) yield ``(3, S, S)`` float
tensors in ``[-1, 1]``.
"""
from __future__ import annotations

import random
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from wagi.demo_seeds import TEST_SEED_OFFSET, TRAIN_SEED_END

from .attributes import DEMO_FACES_VERSION, sample_attributes
from .render import check_size, render_face


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
        check_size(size)
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
        check_size(size)
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
