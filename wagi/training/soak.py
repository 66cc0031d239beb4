"""Kill -9 soak test of a training run: crash-consistency of checkpoints and exact resumption.

:func:`soak` trains one reference run of a (tiny, CPU) config without interruption, then trains the same
config in a second run folder as ``scripts/train.py --resume auto`` subprocesses that it kills with
SIGKILL, restarting each time, until a restart finishes the run: every other kill comes at a random
moment (seeded delay), the others the instant a checkpoint write is in flight (its temporary file
appears in ``checkpoints/``). After every
kill it checks what a crash may leave: ``latest.pt`` must load (``weights_only``, integrity hash
verified) or not exist yet; temporary files may be left (they are counted and must be gone after the
next start). At the end the model of the killed-and-resumed run must equal the reference bit for bit.

The result (:class:`SoakReport`) counts kills, kills that left a temporary file (a checkpoint write in
flight), corrupt checkpoints, temporary files the next start did not remove, tracebacks printed by any
run, and whether the final weights match. ``scripts/soak.py`` is the command line.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..checkpoint import CheckpointError, load_checkpoint, payload_digest
from ..fileio import TEMP_NAME

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = PROJECT_ROOT / "scripts" / "train.py"
LATEST = "checkpoints/latest.pt"
# Every step writes a checkpoint, so a kill at a random moment often lands inside a write.
SOAK_OVERRIDES = ("train.save_every=1", "train.keep_checkpoints=2", "train.log_every=1", "train.val_every=1000000",
                  "train.image_every=1000000")
RUN_TIMEOUT_S = 600.0
POLL_S = 0.002           # how often a kill aimed at a write looks for a temporary file
WRITE_WAIT_S = 60.0      # a kill aimed at a write fires anyway after this long
MAX_WRITES_BEFORE_KILL = 6  # a kill aimed at a write cuts one of the next 1..6 (so the run still advances)


@dataclasses.dataclass
class SoakReport:
    kills: int = 0
    kills_during_write: int = 0      # a temporary file was left: the kill interrupted a write
    corrupt_checkpoints: int = 0     # latest.pt present but unreadable or failing its hash after a kill
    stale_temps_after_restart: int = 0
    tracebacks: int = 0
    restarts: int = 0
    final_step: Optional[int] = None
    final_matches_reference: Optional[bool] = None
    seconds: float = 0.0
    notes: List[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.corrupt_checkpoints == 0 and self.stale_temps_after_restart == 0 and self.tracebacks == 0
                and bool(self.final_matches_reference))

    def lines(self) -> List[str]:
        rows = [("kills (SIGKILL)", self.kills), ("  of them during a write", self.kills_during_write),
                ("restarts", self.restarts), ("corrupt checkpoints", self.corrupt_checkpoints),
                ("temporary files left after a restart", self.stale_temps_after_restart),
                ("tracebacks", self.tracebacks), ("final step", self.final_step),
                ("final weights equal the uninterrupted run", self.final_matches_reference),
                ("seconds", f"{self.seconds:.0f}"), ("result", "PASS" if self.ok else "FAIL")]
        width = max(len(k) for k, _ in rows)
        return [f"{k.ljust(width)}  {v}" for k, v in rows] + [f"note: {n}" for n in self.notes]


def _temps(run_dir: Path) -> List[Path]:
    if not run_dir.is_dir():
        return []
    return [Path(d) / n for d, _, names in os.walk(run_dir) for n in names if TEMP_NAME.match(n)]


def _weights_digest(ckpt_path: Path) -> str:
    return payload_digest(load_checkpoint(ckpt_path)["state_dict"])


def _command(config: str, out_dir: Path, name: str, overrides: Sequence[str]) -> List[str]:
    cmd = [sys.executable, str(TRAIN_SCRIPT), "--config", config, "--resume", "auto", "--no-progress",
           "--set", f"experiment.out_dir={out_dir}", "--set", f"experiment.name={name}"]
    for o in (*SOAK_OVERRIDES, *overrides):
        cmd += ["--set", o]
    return cmd


def _env() -> Dict[str, str]:
    # one thread: bit-identical CPU arithmetic between the reference and the resumed run
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run_to_end(cmd: List[str], report: SoakReport) -> int:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=RUN_TIMEOUT_S)
    if "Traceback" in proc.stderr:
        report.tracebacks += 1
        report.notes.append(f"traceback: {proc.stderr.strip().splitlines()[-1][:200]}")
    return proc.returncode


def soak(config: str, out_dir: Path, kills: int, seed: int = 0, max_delay_s: float = 8.0,
         overrides: Sequence[str] = (), log: Callable[[str], None] = logger.info) -> SoakReport:
    """Run the soak test (module docstring) in ``out_dir`` (runs ``reference`` and ``soaked``) with up to
    ``kills`` SIGKILLs: half at delays drawn uniformly from ``[0, max_delay_s]`` seconds after a start, half
    as soon as a temporary file shows a write in flight."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    report = SoakReport()
    rng = random.Random(seed)

    log("reference run (no interruption) ...")
    if _run_to_end(_command(config, out_dir, "reference", overrides), report) != 0:
        report.notes.append("the reference run failed")
        report.seconds = time.perf_counter() - start
        return report
    reference = _weights_digest(out_dir / "reference" / LATEST)

    run_dir = out_dir / "soaked"
    cmd = _command(config, out_dir, "soaked", overrides)
    finished = False
    while report.kills < kills and not finished:
        temps_before = set(_temps(run_dir))
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
        report.restarts += 1
        # every other kill waits for a write to be in flight (a temporary file appears), the others come at
        # a random moment (start-up, a training step, a write)
        aim_at_write = report.kills % 2 == 1
        delay = rng.uniform(0.0, max_delay_s)
        nth_write = rng.randint(1, MAX_WRITES_BEFORE_KILL)  # which of the coming checkpoint writes to cut
        writes_seen: set = set()
        t0 = time.perf_counter()
        while proc.poll() is None:
            waited = time.perf_counter() - t0
            if aim_at_write:
                writes_seen |= set(_temps(run_dir / "checkpoints")) - temps_before
                if len(writes_seen) >= nth_write or waited > WRITE_WAIT_S:
                    break
            elif waited >= delay:
                break
            time.sleep(POLL_S)
        delay = time.perf_counter() - t0
        if proc.poll() is not None:
            err = proc.communicate()[1]
            finished = proc.returncode == 0
            if "Traceback" in err:
                report.tracebacks += 1
                report.notes.append(f"traceback: {err.strip().splitlines()[-1][:200]}")
            if not finished:
                report.notes.append(f"a run exited with status {proc.returncode} before its kill")
                break
            continue
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        report.kills += 1
        temps = _temps(run_dir)
        if set(temps) - temps_before:
            report.kills_during_write += 1
        latest = run_dir / LATEST
        if latest.exists():
            try:
                step = load_checkpoint(latest)["training"]["step"]
            except (CheckpointError, KeyError, TypeError) as err:
                report.corrupt_checkpoints += 1
                report.notes.append(f"kill {report.kills}: {err}")
                step = None
        else:
            step = None
        log(f"kill {report.kills} after {delay:.2f} s: latest step {step}, {len(temps)} temporary file(s) "
            f"(before this start: {len(temps_before)})")
    if not finished:
        report.restarts += 1
        code = _run_to_end(cmd, report)
        if code != 0:
            report.notes.append(f"the final resumed run exited with status {code}")
    report.stale_temps_after_restart = len(_temps(run_dir))
    try:
        final = load_checkpoint(run_dir / LATEST)
        report.final_step = int(final["training"]["step"])
        report.final_matches_reference = payload_digest(final["state_dict"]) == reference
    except (CheckpointError, FileNotFoundError, KeyError) as err:
        report.corrupt_checkpoints += 1
        report.notes.append(f"final checkpoint: {err}")
        report.final_matches_reference = False
    report.seconds = time.perf_counter() - start
    return report


__all__ = ["SoakReport", "soak"]
