"""What both training loops share: device and process group, seeding and RNG state, checkpoints, logging.

Used by :class:`wagi.training.trainer.Trainer` (encoder / fusion runs) and
:class:`wagi.training.gan.GANTrainer` (SWAGAN runs). A run directory looks the same for both::

    <out_dir>/<name>/config.yaml                   resolved options
    <out_dir>/<name>/metrics.jsonl                 one JSON record per line: kind, step, time, values
    <out_dir>/<name>/tb/                           the same scalars for TensorBoard (when installed)
    <out_dir>/<name>/checkpoints/step_XXXXXXX.pt   the newest ``keep_checkpoints`` of them
    <out_dir>/<name>/checkpoints/latest.pt         the newest checkpoint (a hard link, or a copy)

RNG state (:func:`rng_state`) is plain data (tensors, numbers, lists), so checkpoints that hold it
load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from ..devices import resolve_device
from ..fileio import atomic_link
from .distributed import DistInfo, init_distributed

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
STEP_CHECKPOINTS = "step_*.pt"  # the checkpoints that keep_checkpoints prunes (named by step_checkpoint_name)


class TrainingStopped(RuntimeError):
    """Training stopped on purpose (non-finite loss); the last good checkpoint is kept."""


# ------------------------------------------------------------------------------------- device, seeds


def training_device(name: str, dist_info: Optional[DistInfo] = None) -> Tuple[torch.device, DistInfo]:
    """The device of this process (``experiment.device``; under DDP on CUDA, the local rank's card) and
    its process group (``dist_info``, or the one ``torchrun`` describes)."""
    device = resolve_device(name, "experiment.device")
    dist = dist_info or init_distributed(device.type)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    return device, dist


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    """The global torch / CUDA / NumPy / Python RNG states as plain data (see the module docstring)."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                      int(np_state[3]), float(np_state[4])],
            "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]]}


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))


# ----------------------------------------------------------------------------------------- checkpoints


def step_checkpoint_name(step: int) -> str:
    return f"step_{step:07d}.pt"


def resolve_resume(resume: Optional[str], ckpt_dir: Path) -> Optional[Path]:
    """``--resume``: None, ``'auto'`` (``ckpt_dir/latest.pt`` if it exists, else None) or a checkpoint path."""
    if resume is None:
        return None
    if resume == "auto":
        p = ckpt_dir / LATEST
        return p if p.exists() else None
    p = Path(resume)
    if not p.exists():
        raise FileNotFoundError(f"--resume: {resume} does not exist")
    return p


def save_and_prune(write: Callable[[Path], Any], ckpt_dir: Path, name: str, keep: int) -> Path:
    """Write the checkpoint ``ckpt_dir/name`` with ``write(path)`` (an atomic writer such as
    :func:`wagi.checkpoint.save_checkpoint`), make ``latest.pt`` point at it, and delete all but the
    newest ``keep`` step checkpoints (``keep == 0``: keep all). Returns the path written."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / name
    write(path)
    atomic_link(path, ckpt_dir / LATEST)
    if keep > 0:
        for old in sorted(ckpt_dir.glob(STEP_CHECKPOINTS))[:-keep]:
            old.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------------------------- logging


class RunLogger:
    """metrics.jsonl (one JSON record per line: kind, step, time, values) and TensorBoard; ``enabled``
    only on the process that writes (the main rank)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.run_dir, self.enabled = run_dir, enabled
        self._writer = None

    @property
    def writer(self):
        if self._writer is None and self.enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run_dir / "tb"))
            except ImportError:  # TensorBoard is optional at run time; metrics.jsonl is always written
                self._writer = False
        return self._writer or None

    def log(self, kind: str, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        rec = {"kind": kind, "step": step, "time": time.time(), **values}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{kind}/{k}", v, step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, grid, step)

    def close(self) -> None:
        if self._writer:
            self._writer.flush()
            self._writer.close()
        self._writer = None


__all__ = [
    "CHECKPOINT_DIR", "LATEST", "TrainingStopped", "training_device", "seed_everything", "rng_state",
    "set_rng_state", "step_checkpoint_name", "resolve_resume", "save_and_prune", "RunLogger",
]
