#!/usr/bin/env python
"""Train a WaGI encoder (stage 'encoder') or fusion module (stage 'fusion') from a YAML config.

    python scripts/train.py --config configs/wagi_ffhq1024.yaml [--set key=value ...] [--resume PATH|auto]
    torchrun --nproc_per_node 2 scripts/train.py --config ...        # DDP: batch_size is per process

The config is validated before any heavy work; the resolved config is saved in the run directory
(experiment.out_dir/experiment.name) and in every checkpoint. Ctrl-C or a kill loses at most the steps since
the last checkpoint: ``--resume auto`` continues from ``checkpoints/latest.pt`` exactly.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from wagi.config import ConfigError, load_config  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (see docs/config.md)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.lr=2e-4 (repeatable)")
    p.add_argument("--resume", default=None, help="a training checkpoint, or 'auto' for the run's latest.pt")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from wagi.training import Trainer, TrainingStopped

    from wagi.checkpoint import CheckpointError

    try:
        trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        trainer.train()
    except TrainingStopped as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\ninterrupted at step {trainer.step}; resume with --resume auto "
              f"(continues from the last checkpoint in {trainer.ckpt_dir})", file=sys.stderr)
        return 130
    print(f"done: {trainer.step} steps, checkpoints in {trainer.ckpt_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
