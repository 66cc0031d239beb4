#!/usr/bin/env python
"""Kill -9 soak test of a CPU training run (wagi.training.soak): SIGKILL a resumed training run again and
again, check every checkpoint a kill leaves, and compare the final weights with an uninterrupted run.

    python scripts/soak.py                          # 20 kills of configs/tiny_test.yaml (300 steps), in a temp folder
    python scripts/soak.py --kills 50 --seed 3 --output /tmp/soak --json soak.json

Exit status: 0 when no checkpoint was corrupt, no temporary file outlived a restart, no run printed a
traceback and the final weights equal the uninterrupted run's; 1 otherwise.
"""
import argparse
import json
import tempfile
from pathlib import Path

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

from wagi.cli import positive_int
from wagi.fileio import atomic_write
from wagi.training.soak import PROJECT_ROOT, soak

DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "tiny_test.yaml"
DEFAULT_KILLS = 20
DEFAULT_MAX_DELAY_S = 6.0  # about start-up plus a few steps of the tiny config on one CPU thread
DEFAULT_STEPS = 300  # long enough that the kills land in training, not after its end


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="training config (default: the tiny CPU config)")
    p.add_argument("--kills", type=positive_int, default=DEFAULT_KILLS, help=f"SIGKILLs (default {DEFAULT_KILLS})")
    p.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS,
                   help=f"train.max_steps of both runs (default {DEFAULT_STEPS})")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    p.add_argument("--max-delay", type=float, default=DEFAULT_MAX_DELAY_S, metavar="S",
                   help=f"kill delays are uniform in [0, S] seconds after each start (default {DEFAULT_MAX_DELAY_S})")
    p.add_argument("--output", type=Path, default=None, help="folder for the two runs (default: a temporary folder)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config overrides for both runs, e.g. --set train.max_steps=40")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    args = p.parse_args(argv)
    if args.max_delay <= 0:
        p.error("--max-delay must be > 0")
    with tempfile.TemporaryDirectory(prefix="wagi_soak_") as tmp:
        out = args.output if args.output is not None else Path(tmp)
        report = soak(args.config, out, args.kills, seed=args.seed, max_delay_s=args.max_delay,
                      overrides=[f"train.max_steps={args.steps}", *args.overrides])  # progress: stderr
    print("\n".join(report.lines()))
    if args.json is not None:
        atomic_write(args.json, json.dumps({**report.__dict__, "ok": report.ok}, indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    run_main(main)
