#!/usr/bin/env python
"""Train a SWAGAN generator (non-saturating loss, lazy R1, path length, EMA, style mixing) from a YAML config.

    python scripts/train_generator.py --config configs/demo_swagan.yaml [--set key=value ...] [--resume auto]
    python scripts/train_generator.py --config ... --resume auto --time-limit 9    # stop, save after 9 minutes
    torchrun --nproc_per_node 2 scripts/train_generator.py --config ...          # DDP: batch_size is per process
    python scripts/train_generator.py --config ... --benchmark-steps 64          # speed only, writes nothing
    python scripts/train_generator.py --export demo_g.pt --ckpt runs/demo_swagan/checkpoints/latest.pt

The config is validated before any heavy work (see docs/train_generator.md); the run directory
(experiment.out_dir/experiment.name) receives config.yaml, metrics.jsonl, tb/, samples/ and checkpoints/.
A first Ctrl-C or SIGTERM finishes the current step, writes a checkpoint and exits; --resume auto continues
exactly from checkpoints/latest.pt. --export writes a compact fp16 g_ema-only file that
wagi.checkpoint.load_generator reads (from --ckpt, or the config's latest checkpoint).
"""
import argparse
import json
import sys
from pathlib import Path

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import (
    EXIT_STOPPED,
    DefaultsHelpFormatter,
    add_training_flags,
    quiet_interrupts,
    run_main,
    run_training,
    training_overrides,
)

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

from wagi.config import ConfigError
from wagi.training.gan_config import load_gan_config

EXIT_CONFIG = 2


def _export(args, cfg) -> int:
    from wagi.checkpoint import CheckpointError, export_generator
    from wagi.training.common import CHECKPOINT_DIR, LATEST

    src = args.ckpt
    if src is None:
        if cfg is None:
            print("error: --export needs --ckpt or --config (whose run's latest checkpoint is exported)",
                  file=sys.stderr)
            return EXIT_CONFIG
        src = Path(cfg.experiment.out_dir) / cfg.experiment.name / CHECKPOINT_DIR / LATEST
    try:
        out = export_generator(src, args.export, network=args.network)
    except (OSError, CheckpointError, ValueError) as e:  # OSError: a missing source, a refused write
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"exported {args.network} of {src} to {out} ({out.stat().st_size / 2 ** 20:.2f} MiB, fp16)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--config", help="YAML config (see docs/train_generator.md)")
    add_training_flags(p, "train.batch_size=32")
    p.add_argument("--no-progress", action="store_true",
                   help="no tqdm progress bar (none either when stderr is not a terminal)")
    p.add_argument("--benchmark-steps", type=int, default=None, metavar="N",
                   help="run N timed steps after warm-up, print steps/s (and peak CUDA memory), write nothing")
    p.add_argument("--benchmark-warmup", type=int, default=None, metavar="N", help="warm-up steps (default 20)")
    p.add_argument("--export", default=None, metavar="PATH",
                   help="write a compact fp16 single-generator file (g_ema, or --network) and exit")
    p.add_argument("--ckpt", type=Path, default=None, metavar="PATH", help="with --export: the checkpoint to export")
    p.add_argument("--network", choices=("g_ema", "g"), default="g_ema",
                   help="with --export: the averaged generator, or the raw one of a training checkpoint (diagnostics)")
    p.add_argument("--checkpoint", type=Path, dest="ckpt", help=argparse.SUPPRESS)  # the older name of --ckpt
    args = p.parse_args(argv)

    cfg = None
    if args.config is not None:
        try:
            cfg = load_gan_config(args.config, training_overrides(args))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_CONFIG
    if args.export is not None:
        return _export(args, cfg)
    if cfg is None:
        p.error("--config is required (except with --export --ckpt)")

    from wagi.checkpoint import CheckpointError
    from wagi.fileio import RunFolderInUse
    from wagi.imageio import ImageIOError
    from wagi.training.distributed import cleanup
    from wagi.training.gan import GANTrainer

    benchmark = args.benchmark_steps is not None
    try:
        trainer = GANTrainer(cfg, resume=None if benchmark else args.resume,
                             progress=not (args.no_progress or benchmark), write=not benchmark)
    except (OSError, ValueError, CheckpointError, ImageIOError, RunFolderInUse) as e:  # OSError: unwritable run folder
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return _benchmark(args, trainer) if benchmark else run_training(trainer, args.time_limit, trainer.max_steps)
    finally:
        cleanup(trainer.dist)


def _benchmark(args, trainer) -> int:
    from wagi.training.gan import BENCHMARK_WARMUP, TrainingStopped

    warmup = BENCHMARK_WARMUP if args.benchmark_warmup is None else args.benchmark_warmup
    try:
        result = trainer.benchmark(args.benchmark_steps, warmup=warmup)
    except (ValueError, TrainingStopped) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_STOPPED
    if trainer.dist.is_main:
        mem = result["max_memory_gib"]
        print(f"benchmark: {result['steps_per_s']:.2f} steps/s ({result['images_per_s']:.0f} img/s, "
              f"{result['ms_per_step']:.1f} ms/step) on {result['device']}, "
              f"batch {result['batch_size']}/process" + (f", peak memory {mem:.2f} GiB" if mem is not None else ""))
        print("BENCHMARK_JSON " + json.dumps(result))
    return 0


if __name__ == "__main__":
    run_main(main)
