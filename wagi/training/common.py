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

Both trainers run in time slices (:class:`StopControl`): ``train(time_limit_s=...)`` or a first SIGINT /
SIGTERM ends the loop after the current step with a checkpoint, and the checkpoint's ``training`` entry
records ``wall_time_s`` (seconds spent in ``train()``, summed over the slices) and ``cards``
(:func:`device_name` of every machine the run trained on).
"""
from __future__ import annotations

import contextlib
import json
import logging
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from ..devices import resolve_device
from ..fileio import RunLock, atomic_link, remove_stale_temps
from .distributed import DistInfo, init_distributed

logger = logging.getLogger(__name__)

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


def device_name(device: torch.device, world_size: int = 1) -> str:
    """The card's name (or ``cpu``) and the process count, e.g. ``'NVIDIA H100 80GB HBM3 x1'``, ``'cpu x2'``."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{world_size}"
    return f"cpu x{world_size}"


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


@contextlib.contextmanager
def holding_run_folder(run_dir: Path, enabled: bool = True):
    """Hold the :class:`~wagi.fileio.RunLock` of ``run_dir`` for the block (a second training process on the
    same folder gets :class:`~wagi.fileio.RunFolderInUse`, one line) and, holding it, delete the temporary
    files a killed run left there. ``enabled=False`` (other DDP ranks, runs that write nothing): no-op."""
    if not enabled:
        yield
        return
    with RunLock(run_dir):
        removed = remove_stale_temps(run_dir, min_age_s=0, recursive=True)  # ours: no other writer can exist
        if removed:
            logger.info("removed %d temporary file(s) of an interrupted write in %s", len(removed), run_dir)
        yield


MAX_ERROR_CHARS = 500  # a value quoted from a hostile file must not flood the terminal


@contextlib.contextmanager
def restoring_from(path, what: str = "--resume"):
    """Turn any failure while a loaded checkpoint's entries are applied (a missing key, a wrong type, an
    RNG state of the wrong size, an optimizer state of another shape) into one
    :class:`~wagi.checkpoint.CheckpointError` line naming the file; the run has not started yet."""
    from ..checkpoint import CheckpointError

    try:
        yield
    except (CheckpointError, ValueError) as err:
        raise type(err)(" ".join(str(err).split())[:MAX_ERROR_CHARS]) from None
    except (KeyError, TypeError, IndexError, AttributeError, RuntimeError) as err:
        detail = " ".join(str(err).split())[:300] or type(err).__name__
        raise CheckpointError(f"{what}: {path} holds an unusable {'training state' if what == '--resume' else 'model'} "
                              f"({type(err).__name__}: {detail})") from None


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


# ------------------------------------------------------------------------------------------ stopping


class StopControl:
    """Stopping a training loop on a time limit or a signal, on every rank at the same step.

    Mixed into a trainer that has ``self.dist`` (:class:`DistInfo`) and ``self.device``. The loop calls
    :meth:`_install_signal_handlers` when it starts (restoring the returned handlers when it ends) and
    :meth:`_should_stop` after each step; when it returns True the loop writes a checkpoint and returns,
    with ``stop_reason`` saying why (``'time limit'``, ``'signal SIGINT'``, ``'signal SIGTERM'`` or
    ``'stop request'`` on the ranks that were told by another one).
    """

    stop_reason: Optional[str] = None

    def device_name(self) -> str:
        return device_name(self.device, self.dist.world_size)

    def _should_stop(self, deadline: Optional[float], at_sync_point: bool) -> bool:
        wanted = self.stop_reason is not None or (deadline is not None and time.monotonic() >= deadline)
        if not self.dist.enabled:
            if wanted and self.stop_reason is None:
                self.stop_reason = "time limit"
            return wanted
        if not at_sync_point:  # ranks agree on stopping only where they synchronise anyway
            return False
        flag = torch.tensor(float(wanted), device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if float(flag) > 0 and self.stop_reason is None:
            self.stop_reason = "time limit" if deadline is not None and time.monotonic() >= deadline else "stop request"
        return float(flag) > 0

    def _install_signal_handlers(self):
        """First SIGINT / SIGTERM: finish the step, save, return; a second one interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self.stop_reason is not None:
                raise KeyboardInterrupt
            self.stop_reason = f"signal {signal.Signals(signum).name}"

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, handler)
        return old


def restore_signal_handlers(old: Mapping[int, Any]) -> None:
    """Put back the handlers that :meth:`StopControl._install_signal_handlers` replaced."""
    for sig, h in old.items():
        signal.signal(sig, h)


def deadline_after(time_limit_s: Optional[float]) -> Optional[float]:
    """The ``time.monotonic()`` value at which a slice of ``time_limit_s`` seconds ends (None: no limit)."""
    return None if time_limit_s is None else time.monotonic() + time_limit_s


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
    "CHECKPOINT_DIR", "LATEST", "TrainingStopped", "training_device", "device_name", "seed_everything",
    "rng_state", "set_rng_state", "restoring_from", "holding_run_folder", "step_checkpoint_name", "resolve_resume",
    "save_and_prune", "StopControl",
    "restore_signal_handlers", "deadline_after", "RunLogger",
]
