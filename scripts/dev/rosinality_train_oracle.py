#!/usr/bin/env python
"""Train a SWAGAN with rosinality's own training loop (``train()`` of stylegan2-pytorch's train.py): an oracle
for WaGI's loop (scripts/train_generator.py) on the same data.

    python scripts/dev/rosinality_train_oracle.py --rosinality ext/rosinality --nets ours \\
        --config configs/demo_swagan_v4.yaml --cache runs/cache/demo_faces_128x60000.pt \\
        --init pretrained/wip/swagan128_v4.pt --minutes 6 --snapshot-every 500 --out runs/oracle_ours
    python scripts/fd_judge.py --generator oracle=runs/oracle_ours/snapshots/step_0003000.pt

``--rosinality`` is a checkout of rosinality/stylegan2-pytorch (commit bef283a): train.py, swagan.py, model.py,
dataset.py, distributed.py, non_leaking.py and op/ are imported from there without edits and without a
``sys.path`` change. With ``--nets theirs`` their ``op`` package compiles its CUDA extensions on import (JIT,
ninja + nvcc, a few minutes, not counted in --minutes); where that fails, or with ``--ops wagi``, their network
runs on WaGI's ops (same signatures and results). ``--nets ours`` never builds them (nothing of theirs uses them
then: their augmentation is off).

``--nets ours``: WaGI's Generator / Discriminator built from the config like the GAN trainer does
(``generator.*``, ``discriminator.*``; G and g_ema start from ``--init``, else the config's ``generator.init``;
``--init none`` starts fresh). ``--nets theirs``: rosinality's swagan.Generator / Discriminator at their own
channel table (the config's size, style_dim, n_mlp, channel_multiplier and lr_mlp; its channel caps ignored).

The data is the config's training set, preloaded like the GAN trainer's ``data.preload`` (``--cache``, else
``data.cache_file``: read when it was built from that set, rendered and written when missing), served in their
DataLoader's order (a fresh permutation per epoch, last partial batch dropped, random horizontal flips when
``data.hflip``). Optimisers and g_ema as their train.py's main (lazy-regularisation ratio on lr and betas,
``accumulate(g_ema, G, 0)``); their args namespace takes batch, lr and r1 from the flags, mixing,
path_regularize, path_batch_shrink, d_reg_every, g_reg_every and n_sample from the config. Their loop is
unchanged except from the outside: their module-level ``accumulate`` (once per step) is wrapped to count steps
and write a snapshot every ``--snapshot-every`` steps, ``reduce_loss_dict`` to record the losses (a line and
a metrics.jsonl record every ``--log-every`` steps) and to stop after ``--minutes`` / ``--steps`` (with a last
snapshot), ``utils.save_image`` to accept their ``range=`` keyword on current torchvision.

Output in ``--out``: snapshots/step_XXXXXXX.pt (WaGI generator files of g_ema: fd_judge.py --generator,
wagi.checkpoint.load_generator), metrics.jsonl, oracle.json (settings, ops used, how it ended) and
rosinality_cwd/ (their loop's working directory: sample/ every 100 steps, checkpoint/ every 10,000).
Exit status: 0 done; 2 bad arguments, a missing or foreign file.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib.util
import json
import logging
import math
import os
import sys
import time
import types
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1]
ROOT = SCRIPTS.parent


def _import_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# scripts/benchmark.py owns the import of a rosinality checkout (rosinality_modules); its first import,
# _require_wagi (one line and exit 2 without wagi), is registered first so that no sys.path edit is needed.
if "_require_wagi" not in sys.modules:
    sys.modules["_require_wagi"] = _import_file("_require_wagi", SCRIPTS / "_require_wagi.py")
BENCH = _import_file("_rosinality_oracle_benchmark", SCRIPTS / "benchmark.py")

import torch  # noqa: E402

from wagi.builders import dataset_source  # noqa: E402
from wagi.checkpoint import (  # noqa: E402
    LATENT_AVG_SAMPLES,
    LATENT_AVG_SEED,
    CheckpointError,
    load_checkpoint,
    load_generator,
    save_checkpoint,
    save_generator,
)
from wagi.cli import DefaultsHelpFormatter, positive_int, run_main  # noqa: E402
from wagi.config import ConfigError  # noqa: E402
from wagi.devices import DEVICE_CHOICES, resolve_device  # noqa: E402
from wagi.models.swagan import Discriminator, Generator  # noqa: E402
from wagi.models.widen import channel_table, widen_generator  # noqa: E402
from wagi.training.common import seed_everything  # noqa: E402
from wagi.training.data import PreloadedImages, preload_images, read_image_cache  # noqa: E402
from wagi.training.gan import build_gan_dataset, ema_beta  # noqa: E402
from wagi.training.gan_config import gan_to_dict, load_gan_config  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "demo_swagan_v4.yaml"
TRAIN_FILES = ("train.py", "dataset.py", "distributed.py", "non_leaking.py")
# Top-level names their train.py imports (besides benchmark's op / model / swagan), and its own module name.
TRAIN_MODULE = "rosinality_train"
TRAIN_MODULES = ("distributed", "dataset", "non_leaking", "lmdb", "wandb", TRAIN_MODULE)
SNAPSHOT_KIND = "rosinality_oracle_snapshot"
THEIR_BETAS = (0.0, 0.99)  # hard-coded in their train.py's main
THEIR_PATH_DECAY = 0.01    # g_path_regularize's default, which train() uses
CHECK_TOLERANCE = 1e-4     # relative error of a snapshot's image against their g_ema's (fp32, TF32 off)
NO_LIMIT_ITERS = 10 ** 9   # their args.iter when only --minutes bounds the run


class OracleError(Exception):
    """A bad argument or input, reported in one line (exit status 2)."""


class _Stop(Exception):
    """Raised from inside their train() to end it (time or step limit); caught around the call."""


# --------------------------------------------------------------------------------- their modules


@contextlib.contextmanager
def rosinality_train_module(root: Path, build_ops: bool = True):
    """Their ``train`` module (and ``swagan``) from the checkout at ``root``; yields ``(train, swagan, ops used)``.

    On top of :func:`benchmark.rosinality_modules`: their dataset.py imports ``lmdb`` at the top (a stand-in
    module when it is not installed: no LMDB is opened here), ``wandb`` is blocked (their ``try: import wandb``
    then sets it to None), and every name is removed from ``sys.modules`` again on exit.
    """
    root = Path(root).expanduser()
    missing = [f for f in (*BENCH.ROSINALITY_FILES, *TRAIN_FILES) if not (root / f).is_file()]
    if missing:
        raise OracleError(f"--rosinality {root}: not a checkout of rosinality/stylegan2-pytorch "
                          f"(missing {', '.join(missing)})")
    saved = {n: sys.modules.pop(n) for n in TRAIN_MODULES if n in sys.modules}
    try:
        with BENCH.rosinality_modules(root, build_ops=build_ops) as (swagan, ops_used):
            if importlib.util.find_spec("lmdb") is None:
                sys.modules["lmdb"] = types.ModuleType("lmdb")
            sys.modules["wandb"] = None  # "import wandb" raises ImportError
            for name in ("distributed", "dataset", "non_leaking"):
                BENCH._load_module(name, root / f"{name}.py")
            yield BENCH._load_module(TRAIN_MODULE, root / "train.py"), swagan, ops_used
    finally:
        for n in TRAIN_MODULES:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


def _save_image(tensor, fp, range=None, **kwargs):  # their keyword
    """torchvision's ``save_image`` taking their ``range=`` (renamed ``value_range`` in torchvision 0.10+)."""
    from torchvision import utils

    return utils.save_image(tensor, fp, value_range=range, **kwargs)


# ------------------------------------------------------------------------------------------------ data


class ShuffledBatches:
    """What their DataLoader gives train(): each pass over it is one epoch of ``(batch, 3, S, S)`` float batches
    in [-1, 1] on the device, in a fresh random order (RandomSampler), the last partial batch dropped
    (drop_last), each image flipped horizontally with p = 0.5 when ``hflip`` (their RandomHorizontalFlip)."""

    def __init__(self, images: PreloadedImages, batch: int, hflip: bool, seed: int):
        if len(images) < batch:
            raise OracleError(f"the training set has {len(images)} images, fewer than one batch ({batch})")
        self.images, self.batch, self.hflip = images, batch, hflip
        self.rng = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images) // self.batch

    def __iter__(self):
        perm = torch.randperm(len(self.images), generator=self.rng)
        for b in range(len(self)):
            x = self.images.batch(perm[b * self.batch:(b + 1) * self.batch].tolist())
            if self.hflip:
                flip = (torch.rand(self.batch, generator=self.rng) < 0.5).to(x.device)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            yield x  # a leaf tensor: their R1 step sets requires_grad on it


def load_images(cfg, cache, device: torch.device, progress: bool) -> PreloadedImages:
    """The config's training set as the GAN trainer preloads it: from ``cache`` when that file was built from
    this set (its ``source`` record), rendered (and written to ``cache``) when the file is missing."""
    train_set = build_gan_dataset(cfg)
    source = dataset_source(cfg.data, len(train_set), cfg.generator.size)
    images = None
    if cache is not None:
        data_log = logging.getLogger("wagi.training.data")
        level = data_log.level
        data_log.setLevel(logging.WARNING)  # not its "rebuilding it": a cache of other data is an error here
        try:
            images = read_image_cache(cache, source)
        finally:
            data_log.setLevel(level)
        if images is None and cache.exists():
            held = load_checkpoint(cache).get("source")
            raise OracleError(f"--cache {cache} holds {held}, not this config's training set {source}: pass the "
                              f"matching config keys (--set data.demo_images=N, generator.size=S) or another --cache")
    if images is None:
        print(f"rendering the training set ({len(train_set)} images at {cfg.generator.size} px)"
              + (f" into {cache}" if cache is not None else ""), file=sys.stderr, flush=True)
        images = preload_images(train_set, cfg.data.workers, progress)
        if cache is not None:
            save_checkpoint({"source": source, "images": images}, cache)
    if images.shape[-1] != cfg.generator.size:
        raise OracleError(f"the cached images are {images.shape[-1]} px, the generator {cfg.generator.size} px")
    return PreloadedImages(images, device)


# ------------------------------------------------------------------------------------------------ nets


def build_ours(cfg):
    """WaGI's G and D as wagi.training.gan.GANTrainer builds them from ``cfg``."""
    gc, dc = cfg.generator, cfg.discriminator
    g = Generator(gc.size, gc.style_dim, gc.n_mlp, gc.channel_multiplier, lr_mlp=gc.lr_mlp, channels=gc.channels,
                  channel_max=gc.channel_max, to_rgb_kernel=gc.to_rgb_kernel)
    d = Discriminator(gc.size, dc.channel_multiplier, channel_max=dc.channel_max)
    g.set_fused_modconv(cfg.train.fused_modconv)
    return g, d


def build_theirs(swagan: types.ModuleType, cfg):
    """rosinality's swagan.Generator / Discriminator at their channel table (``channel_max`` does not exist there)."""
    gc, dc = cfg.generator, cfg.discriminator
    if gc.to_rgb_kernel != 1:
        raise OracleError(f"--nets theirs has 1x1 ToRGB convs; the config asks "
                          f"generator.to_rgb_kernel={gc.to_rgb_kernel}")
    g = swagan.Generator(gc.size, gc.style_dim, gc.n_mlp, channel_multiplier=gc.channel_multiplier, lr_mlp=gc.lr_mlp)
    d = swagan.Discriminator(gc.size, channel_multiplier=dc.channel_multiplier)
    return g, d


def warm_start(g: Generator, path: Path, seed: int) -> str:
    """G from a WaGI generator file (an exported fp16 g_ema is enough), as the GAN trainer's generator.init:
    exact architecture, or narrower at every resolution (widened first, seeded). Returns a description."""
    src, _, info = load_generator(path)
    if src.config["to_rgb_kernel"] != g.config["to_rgb_kernel"]:
        raise OracleError(f"--init {path} has {src.config['to_rgb_kernel']}x{src.config['to_rgb_kernel']} ToRGB convs, "
                          f"the config's generator {g.config['to_rgb_kernel']}x{g.config['to_rgb_kernel']}")
    old, new = channel_table(src), channel_table(g)
    note = ""
    if old.keys() == new.keys() and old != new and all(old[r] <= new[r] for r in old):
        src, note = widen_generator(src, new, seed=seed), f", widened from {old}"
    mine, theirs = g.state_dict(), src.state_dict()
    bad = [k for k in mine if k not in theirs or theirs[k].shape != mine[k].shape]
    if bad or len(mine) != len(theirs):
        raise OracleError(f"--init {path} does not match the config's generator "
                          f"(first mismatching key: {bad[0] if bad else 'extra keys'})")
    with torch.no_grad():
        g.load_state_dict({k: v.float() for k, v in theirs.items()}, strict=True)
    return f"{path} ({info['format']}{note})"


# ------------------------------------------------------------------------------------------- snapshots


@contextlib.contextmanager
def _no_tf32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


class Snapshots:
    """Writes g_ema as WaGI generator files ``snapshots/step_XXXXXXX.pt``.

    With their nets the weights go into WaGI's Generator with their channel table (same key names: a strict
    load), and each snapshot is checked to draw the same images as their g_ema (fixed z, stored noise, fp32).
    """

    def __init__(self, out: Path, g_ema, nets: str, config: dict, meta: dict):
        self.dir = out / "snapshots"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.g_ema, self.nets, self.config, self.meta = g_ema, nets, config, meta
        self.paths: list = []
        self.check_errors: list = []
        if nets == "ours":
            self.wagi_g = g_ema
        else:
            gc = config["generator"]
            res = [2 ** i for i in range(2, int(math.log2(gc["size"])))]
            table = {r: int(g_ema.channels[r]) for r in res}
            self.wagi_g = Generator(gc["size"], gc["style_dim"], gc["n_mlp"], gc["channel_multiplier"],
                                    lr_mlp=gc["lr_mlp"], channels=table)
            config["generator"].update(channels=table, channel_max=None)
            self.wagi_g.load_state_dict(g_ema.state_dict(), strict=True)  # fails now, not at the first snapshot
            self.wagi_g.to(next(g_ema.parameters()).device).eval()

    @torch.no_grad()
    def _copy_and_check(self) -> float:
        self.wagi_g.load_state_dict(self.g_ema.state_dict(), strict=True)
        device = next(self.g_ema.parameters()).device
        z = torch.randn(4, self.wagi_g.style_dim, generator=torch.Generator().manual_seed(0)).to(device)
        with _no_tf32():
            theirs, _ = self.g_ema([z], randomize_noise=False)
            mine, _ = self.wagi_g([z], randomize_noise=False)
        err = float((mine.double() - theirs.double()).norm() / theirs.double().norm().clamp_min(1e-30))
        if not err <= CHECK_TOLERANCE:
            raise RuntimeError(f"the WaGI copy of their g_ema draws other images (relative error {err:.3g})")
        return err

    @torch.no_grad()
    def write(self, step: int, wall_s: float, batch: int) -> Path:
        extra = {}
        if self.nets == "theirs":
            extra["check_rel_err"] = self._copy_and_check()
            self.check_errors.append(extra["check_rel_err"])
        rng = torch.Generator().manual_seed(LATENT_AVG_SEED)
        latent_avg = self.wagi_g.mean_latent(LATENT_AVG_SAMPLES, generator=rng).float()
        path = save_generator(self.dir / f"step_{step:07d}.pt", self.wagi_g, latent_avg, config=self.config,
                              kind=SNAPSHOT_KIND, step=step, kimg=step * batch / 1000.0, wall_time_s=wall_s,
                              oracle=dict(self.meta, **extra))
        self.paths.append(path)
        return path


# ----------------------------------------------------------------------------------------- the loop hooks


class LoopHooks:
    """Wrappers of three module-level functions of their train.py, installed while train() runs.

    ``accumulate`` (the g_ema update, once per step): counts steps, writes a snapshot every ``snapshot_every``.
    ``reduce_loss_dict`` (right after it, with the step's loss dict): sums the losses, logs every ``log_every``
    steps, and ends the loop (:class:`_Stop`, with a last snapshot) when the time or step limit is reached.
    ``g_path_regularize``: records the path-length target (``mean path`` of their progress bar).
    """

    def __init__(self, train_mod, snapshots: Snapshots, batch: int, snapshot_every: int, log_every: int,
                 time_limit_s, max_steps, metrics_path: Path):
        self.mod, self.snapshots, self.batch = train_mod, snapshots, batch
        self.snapshot_every, self.log_every = snapshot_every, log_every
        self.time_limit_s, self.max_steps = time_limit_s, max_steps
        self.metrics_path = metrics_path
        self.step, self.t0, self.last_snapshot = 0, None, None
        self.sums: dict = {}
        self.count = 0
        self.mean_path_length = 0.0
        self.t_interval = None
        self.originals = {n: getattr(train_mod, n) for n in ("accumulate", "reduce_loss_dict", "g_path_regularize")}
        self.stop_reason = "their loop ended"

    @contextlib.contextmanager
    def installed(self):
        self.mod.accumulate, self.mod.reduce_loss_dict = self.accumulate, self.reduce_loss_dict
        self.mod.g_path_regularize = self.g_path_regularize
        self.t0 = self.t_interval = time.perf_counter()
        try:
            yield self
        finally:
            for name, fn in self.originals.items():
                setattr(self.mod, name, fn)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def snapshot(self) -> None:
        if self.last_snapshot != self.step:
            path = self.snapshots.write(self.step, self.elapsed(), self.batch)
            self.last_snapshot = self.step
            self._say(f"snapshot of g_ema at step {self.step}: {path}")

    def accumulate(self, model1, model2, decay=0.999):
        self.originals["accumulate"](model1, model2, decay)
        self.step += 1
        if self.step % self.snapshot_every == 0:
            self.snapshot()

    def g_path_regularize(self, *args, **kwargs):
        out = self.originals["g_path_regularize"](*args, **kwargs)
        self.mean_path_length = float(out[1])
        return out

    def reduce_loss_dict(self, loss_dict):
        reduced = self.originals["reduce_loss_dict"](loss_dict)
        for k, v in reduced.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach().mean())
        self.count += 1
        if self.step % self.log_every == 0 or self.step == 1:
            self.log()
        stop = None
        if self.max_steps is not None and self.step >= self.max_steps:
            stop = f"--steps {self.max_steps} done"
        elif self.time_limit_s is not None and self.elapsed() >= self.time_limit_s:
            stop = f"--minutes {self.time_limit_s / 60:g} passed"
        if stop is not None:
            if self.count:
                self.log()
            self.stop_reason = stop
            self.snapshot()
            raise _Stop(stop)
        return reduced

    def log(self) -> None:
        now = time.perf_counter()
        rec = {"step": self.step, "kimg": self.step * self.batch / 1000.0, "time_s": round(self.elapsed(), 2),
               **{k: v / self.count for k, v in self.sums.items()}, "mean_path_length": self.mean_path_length,
               "steps_per_s": self.count / max(now - self.t_interval, 1e-9)}
        self.sums, self.count, self.t_interval = {}, 0, now
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        self._say(f"step {rec['step']} ({rec['kimg']:.1f} kimg, {rec['time_s']:.0f} s, {rec['steps_per_s']:.2f} "
                  f"steps/s): d {rec.get('d', math.nan):.4f} g {rec.get('g', math.nan):.4f} "
                  f"r1 {rec.get('r1', math.nan):.4f} path {rec.get('path', math.nan):.4f} "
                  f"mean path {rec['mean_path_length']:.4f} real {rec.get('real_score', math.nan):.3f} "
                  f"fake {rec.get('fake_score', math.nan):.3f}")

    @staticmethod
    def _say(line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)  # below their progress bar


# ------------------------------------------------------------------------------------------------ main


def _differences(cfg, args) -> list:
    """What the config asks of WaGI's loop that their loop does not do (printed, and kept in oracle.json)."""
    tc, notes = cfg.train, []
    if tc.d_warmup:
        notes.append(f"train.d_warmup={tc.d_warmup} ignored: their loop updates G and g_ema from step 0")
    ours = ema_beta(0, args.batch, tc.ema_half_life_kimg, None)
    theirs = 0.5 ** (32 / (10 * 1000))
    if tc.ema_rampup is not None or abs(ours - theirs) > 1e-12:
        notes.append(f"EMA decay per step: theirs {theirs:.6f} (0.5 ** (32 / 10000), whatever the batch); the config's "
                     f"{ours:.6f} (half-life {tc.ema_half_life_kimg} kimg at batch {args.batch}"
                     + (f", rampup {tc.ema_rampup}" if tc.ema_rampup is not None else "") + ")")
    if tuple(tc.betas) != THEIR_BETAS:
        notes.append(f"train.betas={tc.betas} ignored: theirs are {list(THEIR_BETAS)}")
    if tc.g_lr is not None or tc.d_lr is not None:
        notes.append("train.g_lr / train.d_lr ignored: one --lr for both")
    if tc.path_decay != THEIR_PATH_DECAY:
        notes.append(f"train.path_decay={tc.path_decay} ignored: theirs is {THEIR_PATH_DECAY}")
    if tc.amp != "none" or tc.compile or tc.channels_last:
        notes.append("train.amp / compile / channels_last ignored: their loop runs eager fp32")
    return notes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0], formatter_class=DefaultsHelpFormatter,
                                epilog=__doc__.partition("\n\n")[2])
    p.add_argument("--rosinality", type=Path, required=True, metavar="PATH",
                   help="a checkout of rosinality/stylegan2-pytorch")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                   help="a generator-training config (scripts/train_generator.py's): sizes, widths, init, data, "
                        "regularisation")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set generator.size=32 (repeatable)")
    p.add_argument("--nets", choices=("ours", "theirs"), default="ours")
    p.add_argument("--cache", type=Path, default=None,
                   help="the preload cache of the training set (scripts/make_demo_dataset.py --cache; default: "
                        "the config's data.cache_file)")
    p.add_argument("--init", default=None, metavar="PATH",
                   help="WaGI generator file G and g_ema start from (--nets ours; default: the config's "
                        "generator.init; 'none': a fresh G)")
    p.add_argument("--batch", type=positive_int, default=None, help="batch size (default: train.batch_size)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: train.lr)")
    p.add_argument("--r1", type=float, default=None, help="R1 weight (default: train.r1)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes in their train()")
    p.add_argument("--steps", type=positive_int, default=None, help="stop after this many steps")
    p.add_argument("--snapshot-every", type=positive_int, default=1000, metavar="N")
    p.add_argument("--log-every", type=positive_int, default=100, metavar="N")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=None, help="default: experiment.seed")
    p.add_argument("--device", choices=DEVICE_CHOICES, default=None, help="default: experiment.device")
    p.add_argument("--ops", choices=("auto", "wagi"), default="auto",
                   help="their networks' ops: auto = with --nets theirs build their CUDA extensions (WaGI's ops "
                        "where that fails); wagi = never try")
    p.add_argument("--no-progress", action="store_true", help="no progress bar from their loop")
    args = p.parse_args(argv)
    if args.minutes is None and args.steps is None:
        p.error("give --minutes or --steps (their loop runs 800,000 steps otherwise)")
    if args.minutes is not None and not args.minutes > 0:
        p.error(f"--minutes must be > 0, got {args.minutes}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (OracleError, ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    cfg = load_gan_config(args.config, args.overrides)
    tc = cfg.train
    args.batch = args.batch or tc.batch_size
    args.lr = tc.lr if args.lr is None else args.lr
    args.r1 = tc.r1 if args.r1 is None else args.r1
    args.seed = cfg.experiment.seed if args.seed is None else args.seed
    if tc.d_reg_every < 1 or tc.g_reg_every < 1:
        raise OracleError("their loop regularises lazily at train.d_reg_every / train.g_reg_every steps (>= 1); "
                          "set r1 or path_regularize to 0 instead")
    if args.batch > 4 and args.batch % 4:
        raise OracleError(f"--batch {args.batch}: the discriminator's stddev groups need <= 4 or a multiple of 4")
    init = cfg.generator.init if args.init is None else (None if args.init.lower() == "none" else Path(args.init))
    if args.nets == "theirs" and args.init not in (None, "none"):
        raise OracleError("--init loads a WaGI generator into --nets ours only")
    if args.nets == "theirs":
        init = None
    cache = args.cache if args.cache is not None else (Path(cfg.data.cache_file) if cfg.data.cache_file else None)
    try:
        device = resolve_device(args.device or cfg.experiment.device)
    except ValueError as e:  # 'cuda' without a CUDA device
        raise OracleError(str(e)) from None
    out = args.out.resolve()
    cwd_dir = out / "rosinality_cwd"
    for d in (cwd_dir / "sample", cwd_dir / "checkpoint"):
        d.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress and sys.stderr.isatty()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as WaGI's trainer (their main leaves it off: speed only)

    build_ops = args.ops == "auto" and args.nets == "theirs"
    with rosinality_train_module(args.rosinality, build_ops=build_ops) as (train_mod, swagan, ops_used):
        print(f"rosinality's train() from {Path(args.rosinality).resolve()}; their networks' ops: {ops_used}",
              file=sys.stderr, flush=True)
        seed_everything(args.seed)
        images = load_images(cfg, cache, device, progress)
        batches = ShuffledBatches(images, args.batch, cfg.data.hflip, args.seed)

        seed_everything(args.seed)
        if args.nets == "ours":
            generator, discriminator = build_ours(cfg)
            started = warm_start(generator, init, args.seed) if init is not None else "fresh"
        else:
            generator, discriminator = build_theirs(swagan, cfg)
            started = "fresh"
        generator, discriminator = generator.to(device), discriminator.to(device)
        g_ema = copy.deepcopy(generator).eval()
        train_mod.accumulate(g_ema, generator, 0)  # as their main does

        # Their main's optimisers: the lazy-regularisation ratio on lr and on their fixed betas.
        g_ratio = tc.g_reg_every / (tc.g_reg_every + 1)
        d_ratio = tc.d_reg_every / (tc.d_reg_every + 1)
        g_optim = torch.optim.Adam(generator.parameters(), lr=args.lr * g_ratio,
                                   betas=(THEIR_BETAS[0] ** g_ratio, THEIR_BETAS[1] ** g_ratio))
        d_optim = torch.optim.Adam(discriminator.parameters(), lr=args.lr * d_ratio,
                                   betas=(THEIR_BETAS[0] ** d_ratio, THEIR_BETAS[1] ** d_ratio))

        ns = argparse.Namespace(
            path=str(cache) if cache else None, arch="swagan", iter=(args.steps + 1) if args.steps else NO_LIMIT_ITERS,
            start_iter=0, batch=args.batch, n_sample=tc.n_sample, size=cfg.generator.size,
            latent=cfg.generator.style_dim, n_mlp=cfg.generator.n_mlp, r1=args.r1,
            path_regularize=tc.path_regularize, path_batch_shrink=tc.path_batch_shrink, d_reg_every=tc.d_reg_every,
            g_reg_every=tc.g_reg_every, mixing=tc.mixing, ckpt=None, lr=args.lr,
            channel_multiplier=cfg.generator.channel_multiplier, wandb=False, local_rank=0, augment=False,
            augment_p=0.0, ada_target=0.6, ada_length=500 * 1000, ada_every=256, distributed=False)

        config = gan_to_dict(cfg)
        config["generator"]["init"] = str(init) if init is not None else None
        config["train"].update(batch_size=args.batch, lr=args.lr, r1=args.r1)
        notes = _differences(cfg, args)
        meta = {"loop": "rosinality train()", "nets": args.nets, "ops": ops_used, "init": started,
                "rosinality": str(Path(args.rosinality).resolve()), "seed": args.seed, "device": str(device),
                "args": {k: v for k, v in vars(ns).items()}}
        snapshots = Snapshots(out, g_ema, args.nets, config, meta)
        n_g = sum(p.numel() for p in generator.parameters())
        n_d = sum(p.numel() for p in discriminator.parameters())
        print(f"{args.nets} nets: G {n_g / 1e6:.2f} M parameters (channels {channel_table(snapshots.wagi_g)}), "
              f"D {n_d / 1e6:.2f} M; G from {started}; {len(images)} images at {cfg.generator.size} px, batch "
              f"{args.batch}, lr {args.lr}, r1 {args.r1}, on {device}", file=sys.stderr, flush=True)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        (out / "oracle.json").write_text(json.dumps({**meta, "notes": notes, "config": config}, indent=2,
                                                    default=str) + "\n")
        (out / "metrics.jsonl").write_text("")  # this run's records only

        train_mod.utils = types.SimpleNamespace(save_image=_save_image)
        train_mod.tqdm = functools.partial(train_mod.tqdm, file=sys.stderr, mininterval=1.0,
                                           disable=not progress)
        hooks = LoopHooks(train_mod, snapshots, args.batch, args.snapshot_every, args.log_every,
                          None if args.minutes is None else 60.0 * args.minutes, args.steps, out / "metrics.jsonl")
        old_cwd = os.getcwd()
        os.chdir(cwd_dir)  # their loop writes sample/ and checkpoint/ relative to the working directory
        try:
            with hooks.installed():
                try:
                    train_mod.train(ns, batches, generator, discriminator, g_optim, d_optim, g_ema, device)
                except _Stop:
                    pass
                else:
                    hooks.snapshot()
        finally:
            os.chdir(old_cwd)
        wall = hooks.elapsed()

    summary = {**meta, "notes": notes, "config": config, "steps": hooks.step, "seconds": round(wall, 1),
               "stopped": hooks.stop_reason, "snapshots": [str(p) for p in snapshots.paths]}
    if snapshots.check_errors:
        summary["check_rel_err_max"] = max(snapshots.check_errors)
    (out / "oracle.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"{hooks.step} steps in {wall:.0f} s ({hooks.stop_reason}); {len(snapshots.paths)} snapshot(s) of g_ema "
          f"in {snapshots.dir}")
    if snapshots.paths:
        print(f"last: {snapshots.paths[-1]}\n  python scripts/fd_judge.py --generator oracle={snapshots.paths[-1]}")
    return 0


if __name__ == "__main__":
    run_main(main)
