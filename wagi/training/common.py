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
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch

from ..devices import resolve_device
from ..fileio import RunLock, atomic_link, remove_stale_temps
from .data import StepBatchSampler
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
    """The frame of a training loop that runs in time slices, and stopping it on a time limit or a signal,
    on every rank at the same step.

    Mixed into a trainer that has ``self.dist`` (:class:`DistInfo`), ``self.device``, ``self.step``,
    ``self.progress``, ``self.cards``, ``self.wall_time_s`` and ``self.logger`` (:class:`RunLogger`). Its
    ``train()`` runs the steps inside :meth:`_training_slice` and ends each step with :meth:`_end_step`,
    which writes the periodic checkpoints and, when the slice must end, a checkpoint at the current step;
    ``stop_reason`` then says why (``'time limit'``, ``'signal SIGINT'``, ``'signal SIGTERM'`` or
    ``'stop request'`` on the ranks that were told by another one).
    """

    stop_reason: Optional[str] = None

    def device_name(self) -> str:
        return device_name(self.device, self.dist.world_size)

    @contextlib.contextmanager
    def _training_slice(self, time_limit_s: Optional[float], total: int, desc: str):
        """One ``train()`` call: the deadline, the signal handlers, the progress bar (yielded; None without
        ``progress``), this machine in ``cards`` and the wall-time clock; on the way out the handlers are put
        back and the bar and the logger closed."""
        self._deadline = deadline_after(time_limit_s)
        self.stop_reason = None
        self._saved_at = -1
        old_handlers = self._install_signal_handlers()
        pbar = None
        if self.progress:
            from tqdm import tqdm

            # disable=None: no bar when stderr is not a terminal (a redirected log gets no carriage-return frames)
            pbar = tqdm(total=total, initial=self.step, desc=desc, dynamic_ncols=True, file=sys.stderr, disable=None)
        if self.device_name() not in self.cards:
            self.cards.append(self.device_name())
        self._slice_clock = (time.perf_counter(), self.wall_time_s)
        try:
            yield pbar
        finally:
            restore_signal_handlers(old_handlers)
            if pbar is not None:
                pbar.close()
            self.logger.close()

    def _update_wall_time(self) -> None:
        """``wall_time_s``: the seconds of the earlier slices plus those of this one so far."""
        t_start, wall_base = self._slice_clock
        self.wall_time_s = wall_base + time.perf_counter() - t_start

    def _end_step(self, save: Callable[[], Any], save_now: bool, final: bool, at_sync_point: bool,
                  before_stop: Optional[Callable[[], Any]] = None) -> bool:
        """After step ``self.step``: update ``wall_time_s``, ``save()`` when ``save_now`` or ``final``, and
        decide whether the slice ends here (:meth:`_should_stop`); if so call ``before_stop()``, save unless
        this step was just saved, and return True (the loop breaks)."""
        s = self.step
        self._update_wall_time()
        if save_now or final:
            save()
            self._saved_at = s
        if final or not self._should_stop(self._deadline, at_sync_point):
            return False
        if before_stop is not None:
            before_stop()
        if self._saved_at != s:
            save()
        return True

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


# ------------------------------------------------------------------------------------------ trainers


class TrainerBase(StopControl):
    """What both trainers do alike: device and process group, the run folder and its config, ``--resume``,
    the checkpoint files and the run's progress in them (step, RNG, wall time, cards), time slices.

    A subclass calls :meth:`_start_run` first in its ``__init__``, :meth:`_resume` once its modules and
    optimisers exist and :meth:`_open_run_folder` last; it defines ``_train(time_limit_s)`` (its loop, in
    :meth:`_training_slice`) and ``_load_training_state(path)`` (which ends with :meth:`_restore_run_state`),
    and writes checkpoints with :meth:`_write_checkpoint`, their ``training`` entry built on :meth:`_run_state`.
    """

    write = True  # False: a run that writes nothing at all (GAN benchmarks)

    def _start_run(self, experiment, dist_info: Optional[DistInfo], progress: bool) -> None:
        """Device, process group and run folder of ``experiment`` (``device``, ``out_dir``, ``name``,
        ``seed``); step 0; the global RNGs seeded."""
        self.device, self.dist = training_device(experiment.device, dist_info)
        self.progress = progress and self.dist.is_main
        self.run_dir = Path(experiment.out_dir) / experiment.name
        self.ckpt_dir = self.run_dir / CHECKPOINT_DIR
        self.step = 0
        self.wall_time_s = 0.0  # seconds spent in train(), summed over every resumed slice
        self.cards: List[str] = []  # the devices this run has trained on (device_name; for the model manifest)
        self.stop_reason = None
        seed_everything(experiment.seed)

    def _resume(self, resume: Optional[str]) -> bool:
        """``--resume`` (:func:`resolve_resume`): load that training state; False when there is none."""
        path = resolve_resume(resume, self.ckpt_dir)
        if path is None:
            return False
        self._load_training_state(path)
        return True

    def _open_run_folder(self, save_config: Callable[[Path], Any]) -> None:
        """The metrics logger and, on the main rank of a writing run, the run folder with the resolved config
        (``save_config(path)``)."""
        writes = self.dist.is_main and self.write
        self.logger = RunLogger(self.run_dir, writes)
        if writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with RunLock(self.run_dir):  # a second run on a busy folder stops here, before writing anything
                save_config(self.run_dir / "config.yaml")

    def _run_state(self) -> Dict[str, Any]:
        """The ``training`` entries both trainers record: step, RNG state, world size, wall time, cards."""
        return {"step": self.step, "rng": rng_state(), "world_size": self.dist.world_size,
                "wall_time_s": self.wall_time_s, "cards": list(self.cards)}

    def _restore_run_state(self, tr: Mapping[str, Any]) -> None:
        """Apply what :meth:`_run_state` recorded (inside :func:`restoring_from`)."""
        self.step = int(tr["step"])
        self.wall_time_s = float(tr.get("wall_time_s", 0.0))
        self.cards = list(tr.get("cards", []))
        set_rng_state(tr["rng"])

    def _write_checkpoint(self, write: Callable[[Path], Any], keep: int, name: Optional[str] = None) -> Optional[Path]:
        """Main rank of a writing run: :func:`save_and_prune` ``ckpt_dir/name`` (default
        ``step_XXXXXXX.pt``) with ``write(path)``; returns the path, or None."""
        if not (self.dist.is_main and self.write):
            return None
        return save_and_prune(write, self.ckpt_dir, name or step_checkpoint_name(self.step), keep)

    def train(self, time_limit_s: Optional[float] = None) -> Dict[str, float]:
        """Train to the last step, or until ``time_limit_s`` seconds pass or a first SIGINT / SIGTERM arrives:
        then a checkpoint is written at the current step and ``stop_reason`` says why. Returns the last
        logged values. The run folder is held (:func:`holding_run_folder`) throughout."""
        with holding_run_folder(self.run_dir, enabled=self.dist.is_main and self.write):
            return self._train(time_limit_s)

    def batches(self) -> Iterator[torch.Tensor]:
        """This rank's training batches for steps ``self.step, self.step + 1, ...`` in the order of
        :class:`~wagi.training.data.StepBatchSampler`: with ``data.preload`` gathered from the copy on the
        training device (``_preload()``), otherwise from ``_loader(sampler)``."""
        cfg = self.cfg
        sampler = StepBatchSampler(len(self.train_set), cfg.train.batch_size, cfg.experiment.seed, self.dist.rank,
                                   self.dist.world_size, start_step=self.step)
        if cfg.data.preload:
            pre = self._preload()
            for indices in sampler:
                yield pre.batch(indices)
            return
        yield from self._loader(sampler)

    def _train(self, time_limit_s: Optional[float]) -> Dict[str, float]:
        """The trainer's own loop body (each subclass defines it; ``train()`` wraps it in the shared frame)."""
        raise NotImplementedError(f"{type(self).__name__} must define _train")

    def _load_training_state(self, path: Path) -> None:
        """Apply a resumed training checkpoint to the subclass's modules and optimisers."""
        raise NotImplementedError(f"{type(self).__name__} must define _load_training_state")


__all__ = [
    "CHECKPOINT_DIR", "LATEST", "TrainingStopped", "training_device", "device_name", "seed_everything",
    "rng_state", "set_rng_state", "restoring_from", "holding_run_folder", "step_checkpoint_name", "resolve_resume",
    "save_and_prune", "StopControl", "TrainerBase",
    "restore_signal_handlers", "deadline_after", "RunLogger",
]
