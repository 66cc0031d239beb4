#!/usr/bin/env python
"""Train a WaGI encoder (stage 'encoder') or fusion module (stage 'fusion') from a YAML config.

    python scripts/train.py --config configs/wagi_ffhq1024.yaml [--set key=value ...] [--resume PATH|auto]
    python scripts/train.py --config ... --resume auto --time-limit 9   # stop and save after 9 minutes
    torchrun --nproc_per_node 2 scripts/train.py --config ...        # DDP: batch_size is per process

The config is validated before any heavy work; the resolved config is saved in the run directory
(experiment.out_dir/experiment.name) and in every checkpoint. --time-limit or a first Ctrl-C / SIGTERM
finishes the current step, writes a checkpoint and exits (0 for the time limit, 130 for a signal); a
second signal interrupts at once, losing the steps since the last checkpoint. ``--resume auto`` continues
exactly from ``checkpoints/latest.pt`` (a fresh run when there is none yet, so the same command line runs
every slice).
"""
import argparse
import sys

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import (
    DefaultsHelpFormatter,
    add_training_flags,
    quiet_interrupts,
    run_main,
    run_training,
    training_overrides,
)

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

from wagi.config import ConfigError, load_config

EXIT_CONFIG = 2


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (see docs/config.md)")
    add_training_flags(p, "train.lr=2e-4")
    p.add_argument("--no-progress", action="store_true",
                   help="no tqdm progress bar (none either when stderr is not a terminal); validation lines still "
                        "print")
    args = p.parse_args(argv)
    if args.time_limit is not None and args.time_limit < 0:
        p.error(f"--time-limit must be >= 0 minutes, got {args.time_limit}")
    try:
        cfg = load_config(args.config, training_overrides(args))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    from wagi.checkpoint import CheckpointError
    from wagi.fileio import RunFolderInUse
    from wagi.imageio import ImageIOError
    from wagi.training import Trainer
    from wagi.training.distributed import cleanup

    try:
        trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress)
    except (OSError, ValueError, CheckpointError, ImageIOError, RunFolderInUse) as e:  # OSError: unwritable run folder
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return run_training(trainer, args.time_limit, cfg.train.max_steps)
    finally:
        cleanup(trainer.dist)


if __name__ == "__main__":
    run_main(main)
