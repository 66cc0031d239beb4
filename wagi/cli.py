"""What every script shares: argparse value types (one definition each, one clear message on bad values)
and Ctrl-C handling (one line, exit status 130, at any moment).

Each script calls ``quiet_interrupts(__name__)`` before its heavy imports and ends with
``run_main(main)``: a Ctrl-C while PyTorch and the models import exits at once with the line
``interrupted``; from ``main()`` on, a Ctrl-C is a ``KeyboardInterrupt`` that the script may handle
(finishing a checkpoint, naming the outputs written so far) and that ``run_main`` otherwise turns into
the same one line. Either way the exit status is 130 (128 + SIGINT).

Output: a script prints its results on stdout; every diagnostic (skipped files, "resumed from", warnings)
comes from the library's loggers (``logging.getLogger(__name__)`` per module) and goes to stderr through
the one handler that :func:`setup_logging` installs.
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Callable, List, NoReturn, Optional, Tuple

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C
INTERRUPTED_LINE = "interrupted"


def _exit_interrupted(signum, frame) -> None:
    try:
        sys.stderr.write(INTERRUPTED_LINE + "\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_INTERRUPTED)  # nothing is being written yet: no cleanup to run


def quiet_interrupts(module_name: str) -> None:
    """When the calling script runs as ``__main__``: Ctrl-C from now until :func:`run_main` starts ``main()``
    exits 130 with one line instead of a traceback from inside an import. No effect when the script is
    imported (tests call its ``main`` directly)."""
    if module_name == "__main__":
        signal.signal(signal.SIGINT, _exit_interrupted)


def run_main(main: Callable[[], Optional[int]]) -> NoReturn:
    """``sys.exit(main())`` where a Ctrl-C that ``main`` does not handle is one line and exit status 130,
    where printing a file name that is not valid UTF-8 shows it escaped instead of raising, and where the
    library's diagnostics go to stderr (:func:`setup_logging`)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    setup_logging()
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints escaped, never crashes a run
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        code = main()
    except KeyboardInterrupt:
        print(INTERRUPTED_LINE, file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
    sys.exit(code)


class StderrHandler(logging.Handler):
    """Writes each record on the current ``sys.stderr`` (so pytest's capture and a redirected stream see it),
    through ``tqdm.write``, which keeps an active progress bar intact below the line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # a logging call must never take the run down
            self.handleError(record)


def setup_logging(verbose: bool = False) -> logging.Logger:
    """Send the diagnostics of every ``wagi.*`` logger to stderr, one plain line each (the message alone),
    at INFO, or DEBUG with ``verbose``. Idempotent: a second call replaces the handler of the first.
    Records still propagate to the root logger (pytest's ``caplog`` sees them)."""
    log = logging.getLogger("wagi")
    for handler in [h for h in log.handlers if isinstance(h, StderrHandler)]:
        log.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    return log


def fail(message: str, code: int = 2) -> int:
    """Print ``error: message`` on stderr and return ``code`` (a script's usage / input error status)."""
    print(f"error: {message}", file=sys.stderr)
    return code


EXIT_STOPPED = 3  # a training run ended on an error; its last complete checkpoint stays
SECONDS_PER_MINUTE = 60.0


def add_training_flags(parser: argparse.ArgumentParser, set_example: str) -> None:
    """``--set``, ``--resume`` and ``--time-limit`` of the training scripts (``set_example``: a KEY=VALUE for
    the ``--set`` help)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one config key, e.g. --set {set_example} (repeatable)")
    parser.add_argument("--resume", default=None, help="a training checkpoint, or 'auto' for the run's latest.pt")
    parser.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                        help="stop after this many minutes of training, writing a checkpoint (for time-sliced "
                             "machines)")
    parser.add_argument("--precision", choices=TRAINING_PRECISIONS, default=None,
                        help="shorthand for --set train.amp=none (fp32) or train.amp=bf16 (the main passes under "
                             "bf16 autocast); default: the config's train.amp")


TRAINING_PRECISIONS = ("fp32", "bf16")


def training_overrides(args: argparse.Namespace) -> List[str]:
    """The ``--set`` overrides of a training script, with ``--precision`` as ``train.amp`` (last, so it wins)."""
    extra = [] if args.precision is None else [f"train.amp={'none' if args.precision == 'fp32' else args.precision}"]
    return list(args.overrides) + extra


def run_training(trainer, time_limit_min: Optional[float], total_steps: int) -> int:
    """``trainer.train()`` for the training scripts (``train.py``, ``train_generator.py``): how it ended, in
    one line and an exit status.

    0: done, or stopped by the time limit (``--time-limit`` minutes); 130: stopped by a signal (finished the
    step and saved) or interrupted at once; 2: the run folder is in use; 3: a non-finite loss, a full disk,
    an unusable cache or checkpoint (the last complete checkpoint stays; ``--resume auto`` continues).
    Other DDP ranks print nothing after training.
    """
    from wagi.checkpoint import CheckpointError
    from wagi.fileio import RunFolderInUse
    from wagi.imageio import ImageIOError
    from wagi.training.common import LATEST, TrainingStopped

    time_limit_s = None if time_limit_min is None else SECONDS_PER_MINUTE * time_limit_min
    try:
        trainer.train(time_limit_s=time_limit_s)
    except TrainingStopped as e:
        return fail(str(e), EXIT_STOPPED)
    except RunFolderInUse as e:
        return fail(str(e))
    except (OSError, ValueError, CheckpointError, ImageIOError) as e:  # e.g. a full disk, a foreign cache file
        return fail(f"{e}; the last complete checkpoint stays in {trainer.ckpt_dir} (--resume auto)", EXIT_STOPPED)
    except KeyboardInterrupt:
        print(f"\ninterrupted at step {trainer.step}; resume with --resume auto "
              f"(continues from the last checkpoint in {trainer.ckpt_dir})", file=sys.stderr)
        return EXIT_INTERRUPTED
    by_signal = (trainer.stop_reason or "").startswith("signal")
    if not trainer.dist.is_main:
        return EXIT_INTERRUPTED if by_signal else 0
    if trainer.stop_reason is not None:
        print(f"stopped ({trainer.stop_reason}) at step {trainer.step} of {total_steps}; checkpoint "
              f"{trainer.ckpt_dir / LATEST}; continue with the same --config/--set options and --resume auto")
        return EXIT_INTERRUPTED if by_signal else 0
    print(f"done: {trainer.step} steps, checkpoints in {trainer.ckpt_dir}")
    return 0


def existing_outputs_error(out_dir: Path, names, overwrite: bool) -> Optional[str]:
    """The refusal line when ``out_dir`` already holds any of ``names`` and ``overwrite`` is off, else None."""
    existing = [f for f in names if (Path(out_dir) / f).exists()]
    if existing and not overwrite:
        return f"{out_dir} already holds {', '.join(existing)}; pass --overwrite to replace them"
    return None


def parse_refusing_existing(parser: argparse.ArgumentParser, argv, outputs) -> Optional[argparse.Namespace]:
    """Parse ``argv``; None, after printing the refusal line, when ``args.output`` already holds any of
    ``outputs`` and ``--overwrite`` is off (the report scripts' first step; their exit status is then 2)."""
    args = parser.parse_args(argv)
    refusal = existing_outputs_error(args.output, outputs, args.overwrite)
    if refusal:
        fail(refusal)
        return None
    return args


def add_comparison_flags(parser: argparse.ArgumentParser, method_help: str) -> None:
    """``--gt DIR`` and the repeatable ``--method NAME=DIR`` of the scripts that compare reconstructions with
    ground truth (one meaning of ``--method`` everywhere)."""
    parser.add_argument("--gt", type=Path, required=True, metavar="DIR", help="ground-truth image folder")
    parser.add_argument("--method", type=named_path, action="append", default=[], metavar="NAME=DIR",
                        help=method_help)


def _edit_gate(text: str):
    if text.strip().lower() in ("none", "null", "off"):
        return "none"
    try:
        lo, hi, dilate = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"LO,HI,DILATE or none, got {text!r}") from None
    if not 0 <= lo < hi or dilate != int(dilate) or dilate < 0:
        raise argparse.ArgumentTypeError(f"needs 0 <= LO < HI and an integer DILATE >= 0, got {text!r}")
    return (lo, hi, int(dilate))


def add_edit_fusion_flags(parser: argparse.ArgumentParser) -> None:
    """``--edit-mode``, ``--edit-gate``, ``--edit-signal``: override a model's fusion settings for edit passes
    (ablations; see ``docs/method.md``, "Fusion for edits")."""
    parser.add_argument("--edit-mode", choices=("reuse", "recompute"), default=None,
                        help="override each model's fusion.edit_mode")
    parser.add_argument("--edit-gate", type=_edit_gate, default=None, metavar="LO,HI,DILATE|none",
                        help="override each model's fusion.edit_gate")
    parser.add_argument("--edit-signal", choices=("high", "pixel"), default=None,
                        help="override each model's fusion.edit_signal")


def apply_edit_fusion_flags(model, args) -> None:
    """Apply the flags of :func:`add_edit_fusion_flags` to ``model.fusion`` when it is a wavelet fusion."""
    fusion = getattr(model, "fusion", None)
    if fusion is None or not hasattr(fusion, "edit_mode"):
        return
    if args.edit_mode:
        fusion.edit_mode = args.edit_mode
    if args.edit_gate:
        fusion.edit_gate = None if args.edit_gate == "none" else args.edit_gate
    if args.edit_signal:
        fusion.edit_signal = args.edit_signal


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Every script's ``--help``: the description and epilog keep their line breaks (usage examples), and each
    option shows its default, except where the default says nothing (None, False, an empty list) or the help
    text already states it ("(default ...")."""

    @staticmethod
    def _says_nothing(default) -> bool:
        return default is None or default is False or default == [] or default is argparse.SUPPRESS

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if self._says_nothing(action.default) or "(default" in text:
            return text
        return super()._get_help_string(action)

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and action.option_strings and not self._says_nothing(action.default):
            action = copy.copy(action)  # an option without help text still shows its default
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


MAX_BATCH = 4096  # images per model call; also the config bound (wagi.config.MAX_BATCH)


def batch_size(text: str) -> int:
    """An integer in [1, MAX_BATCH]: a batch holds its images in memory at once."""
    value = positive_int(text)
    if value > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_BATCH}, got {value}")
    return value


def named_path(text: str) -> Tuple[str, Path]:
    """``NAME=PATH`` -> ``(NAME, Path(PATH))``; NAME names outputs, so it may not contain a path separator."""
    name, sep, path = text.partition("=")
    name = name.strip()
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    if "/" in name or os.sep in name or name in (".", ".."):
        raise argparse.ArgumentTypeError(f"name {name!r} must not contain a path separator")
    return name, Path(path)


def add_trust_flag(parser: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint`` (``args.trust_checkpoint``): the one opt-in to full unpickling of a checkpoint
    that is not plain data, named as in configs (``generator.trust_checkpoint``). ``--trust`` is kept as a
    hidden alias for older command lines."""
    parser.add_argument("--trust-checkpoint", action="store_true", dest="trust_checkpoint",
                        help="allow full unpickling of a checkpoint that is not plain data (it can run code stored "
                             "in the file: only for files you trust)")
    parser.add_argument("--trust", action="store_true", dest="trust_checkpoint", help=argparse.SUPPRESS)

