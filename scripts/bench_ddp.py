#!/usr/bin/env python
"""Training throughput under torchrun, for the DDP scaling figure in docs/performance.md.

    torchrun --nproc_per_node 1 scripts/bench_ddp.py --config configs/X.yaml [--set k=v ...]
    torchrun --nproc_per_node 2 scripts/bench_ddp.py --config configs/X.yaml [--set k=v ...]

Runs warm-up steps, then times ``--steps`` optimisation steps of the real trainer (data loading included)
and prints one JSON line from rank 0: images per second over all processes. Scaling efficiency =
throughput(2 GPUs) / (2 x throughput(1 GPU)) with the same per-process batch.
"""
import argparse
import json
import time

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

import torch

from wagi.config import load_config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    args = p.parse_args(argv)
    total = args.steps + args.warmup
    cfg = load_config(args.config, args.overrides + [f"train.max_steps={total}", "train.log_every=1000000",
                                                     "train.val_every=1000000", "train.save_every=1000000",
                                                     "train.image_every=1000000"])
    from wagi.training import Trainer
    from wagi.training import data as D

    t = Trainer(cfg, progress=False)
    sampler = D.StepBatchSampler(len(t.train_set), cfg.train.batch_size, cfg.experiment.seed, t.dist.rank,
                                 t.dist.world_size)
    it = iter(D.train_loader(t.train_set, sampler, cfg.data.workers))
    sync = torch.cuda.synchronize if t.device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        t.train_step(next(it))
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        t.train_step(next(it))
    sync()
    dt = time.perf_counter() - t0
    if t.dist.is_main:
        imgs = args.steps * cfg.train.batch_size * t.dist.world_size
        print("DDP_BENCH " + json.dumps({"world_size": t.dist.world_size, "batch_per_process": cfg.train.batch_size,
                                         "steps": args.steps, "seconds": dt, "images_per_s": imgs / dt,
                                         "stage": cfg.train.stage, "size": cfg.generator.size,
                                         "device": torch.cuda.get_device_name() if t.device.type == "cuda" else "cpu"}))
    if t.dist.enabled:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    run_main(main)
