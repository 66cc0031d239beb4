#!/usr/bin/env python
"""Per-sub-band comparison of inversion methods against ground truth (the paper's Figure 2 analysis).

    python scripts/eval_subbands.py --gt data/test --method e4e=results/e4e --method hfgi=results/hfgi \\
        --model wagi=runs/wagi/checkpoints/best.pt --levels 2 --output outputs/eval

Files are matched by relative path without extension (ground truth a/b.jpg <-> method a/b.png).
GT images without a reconstruction, method files without GT and names held by two files (a.jpg and
a.png) are listed, never silently dropped; every pair is evaluated (no dropped last batch).

Both images of a pair are loaded at --size x --size (--policy for non-square images) in [-1, 1].
The default size follows the data: the --model checkpoints' image size; without --model, the ground
truth's size when all its images share one square size; else 256, the protocol of pSp/e4e/HFGI. The size used
is printed, so a 128-px model is never silently evaluated upsampled. Per image: the mean squared error
of the Haar coefficients of every band (LL; LH, HL, HH of each level), each band's share of the total
squared error, MSE, PSNR, SSIM (11x11 Gaussian window, sigma 1.5), and LPIPS and ID similarity when
their weights exist (LPIPS: torchvision's AlexNet weights in the torch hub cache or --lpips-weights;
ID: --id-weights, default pretrained/model_ir_se50.pth; a missing default only skips the metric, with a
line saying so).

--model NAME=CKPT first inverts the --gt images with that WaGI checkpoint into <output>/recon/NAME/
(existing reconstructions are reused unless --overwrite) and evaluates them as method NAME. With
--precision bf16|fp16 the inversions run under that autocast (wagi.precision) into <output>/recon/NAME-bf16/
(so they never reuse fp32 ones), the way to measure the fast path's per-band error against fp32.

Outputs in --output: results.md (tables), results.csv (one row per image and method), results.json
(means, std, counts, mismatches, settings), subbands_bar.png (per band, per method) and
subbands_example.png (sub-bands of one image, GT vs each method). Existing ones are replaced only
with --overwrite.

Exit status: 0 every GT image compared for every method; 1 a file was unreadable, a GT image had no
reconstruction or a name was ambiguous (one line each); 2 usage error.
"""
import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, batch_size, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

from wagi.cli import add_comparison_flags, named_path, positive_int
from wagi.devices import DEVICE_CHOICES, describe_device, resolve_device
from wagi.evaluation import DEFAULT_EVAL_SIZE, evaluate_folders
from wagi.fileio import printable, remove_stale_temps
from wagi.imageio import POLICIES, InputNotFoundError, LoadReport, OutputExistsError, find_images
from wagi.inference import PROJECT_ROOT, invert_folder
from wagi.metrics import PerceptualMetrics
from wagi.precision import PRECISIONS
from wagi.reports import check_report_outputs, markdown_report, write_report

logger = logging.getLogger("wagi.scripts.eval_subbands")

DEFAULT_OUT = Path("outputs") / "eval"
RECON_DIR = "recon"


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)






def ground_truth_size(gt_dir: Path) -> Optional[int]:
    """The side of the images under ``gt_dir`` when every readable one is square and of one size, else None."""
    from PIL import Image

    sizes = set()
    for item in find_images(gt_dir):
        try:
            with Image.open(item.path) as img:  # reads the header only
                sizes.add(img.size)
        except (OSError, ValueError):  # an unreadable file is reported by the evaluation itself
            continue
        if len(sizes) > 1:
            return None
    if len(sizes) == 1:
        (w, h), = sizes
        return w if w == h else None
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    add_comparison_flags(p, "a method's reconstruction folder (repeatable)")
    p.add_argument("--model", type=named_path, action="append", default=[], metavar="NAME=CKPT",
                   help="invert --gt with this WaGI checkpoint first, then evaluate it as NAME (repeatable)")
    p.add_argument("--levels", type=positive_int, default=1, metavar="L", help="Haar levels")
    p.add_argument("--size", type=positive_int, default=None, metavar="S",
                   help="evaluation size S x S (default: the --model checkpoints' size, else the ground truth's "
                        f"when all its images share one square size, else {DEFAULT_EVAL_SIZE})")
    p.add_argument("--policy", choices=POLICIES, default="center_crop",
                   help="how images of another size or shape become S x S")
    p.add_argument("--output", type=Path, default=DEFAULT_OUT, metavar="DIR", help="output folder")
    p.add_argument("--lpips-weights", type=Path, default=None, metavar="P",
                   help="torchvision trunk weights for LPIPS (default: the torch hub cache; skipped when absent)")
    p.add_argument("--lpips-net", choices=["alex", "vgg", "squeeze"], default="alex", help="LPIPS trunk")
    p.add_argument("--id-weights", type=Path, default=None, metavar="P",
                   help="IR-SE50 model_ir_se50.pth for ID similarity (default pretrained/model_ir_se50.pth if present)")
    p.add_argument("--batch-size", type=batch_size, default=8, metavar="N", help="images per model call")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to run")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="--model inversions: fp32 (as the model is) or bf16 / fp16 autocast (usually slow on a CPU)")
    p.add_argument("--overwrite", action="store_true", help="replace existing report files and reconstructions")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.method and not args.model:
        p.error("give at least one --method NAME=DIR or --model NAME=CKPT")
    names = [n for n, _ in args.method + args.model]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        p.error(f"method name(s) used twice: {', '.join(duplicates)}")
    if args.size is not None and args.size % (2 ** args.levels):
        p.error(f"--size {args.size} must be divisible by 2^levels = {2 ** args.levels}")
    if not args.gt.is_dir():
        _error(f"--gt {args.gt}: folder not found")
        return 2
    for name, path in args.method:
        if not path.is_dir():
            _error(f"--method {name}={path}: folder not found")
            return 2
    for name, path in args.model:
        if not path.is_file():
            _error(f"--model {name}={path}: checkpoint not found")
            return 2
    try:
        check_report_outputs(args.output, args.overwrite)
        device = resolve_device(args.device)
    except (OutputExistsError, ValueError) as err:
        _error(str(err))
        return 2
    progress = False if args.no_progress else None

    from wagi.losses import ID_WEIGHTS_SUGGESTED_PATH

    try:
        perceptual = PerceptualMetrics.from_weights(args.lpips_weights, args.id_weights, args.lpips_net,
                                                    default_id_weights=PROJECT_ROOT / ID_WEIGHTS_SUGGESTED_PATH)
    except (FileNotFoundError, ImportError, ValueError) as err:
        _error(str(err))
        return 2
    flags = {"LPIPS": "--lpips-weights", "ID": "--id-weights"}
    for metric, reason in perceptual.skipped.items():
        print(f"{metric} skipped (pass {flags[metric]} PATH to compute it): {reason}", file=sys.stderr, flush=True)
    print(describe_device(device), flush=True)

    report = LoadReport(log=logger.warning)
    methods = {name: path for name, path in args.method}
    size_source = "--size"
    if args.model:
        from wagi.checkpoint import CheckpointError
        from wagi.models.wagi import WaGI

        try:
            gt_items = find_images(args.gt)
        except InputNotFoundError as err:
            _error(str(err))
            return 2
        models = {}
        for name, ckpt in args.model:
            try:
                models[name] = WaGI.load(ckpt, map_location="cpu").eval()
            except (CheckpointError, ValueError, KeyError) as err:
                _error(f"cannot load --model {name}={ckpt}: {err}")
                return 2
        if args.size is None:
            sizes = {m.image_size for m in models.values()}
            if len(sizes) > 1:
                _error(f"the --model checkpoints have different image sizes {sorted(sizes)}; pass --size S")
                return 2
            args.size, size_source = sizes.pop(), "the --model checkpoints' image size"
    if args.size is None:
        try:
            args.size, size_source = ground_truth_size(args.gt), "the ground truth's image size"
        except InputNotFoundError as err:
            _error(str(err))
            return 2
        if args.size is None:
            args.size, size_source = DEFAULT_EVAL_SIZE, "the ground truth has no single square size"
    if args.size % (2 ** args.levels):
        _error(f"size {args.size} ({size_source}) is not divisible by 2^levels = {2 ** args.levels}; pass --size S")
        return 2
    print(f"evaluating at {args.size}x{args.size} ({size_source})", file=sys.stderr, flush=True)

    for name, ckpt in args.model:
        model = models.pop(name).to(device)
        recon_dir = args.output / RECON_DIR / (name if args.precision == "fp32" else f"{name}-{args.precision}")
        print(f"inverting {len(gt_items)} image(s) with {ckpt} into {recon_dir}", flush=True)
        try:
            summary = invert_folder(model, gt_items, recon_dir, batch_size=args.batch_size, policy=args.policy,
                                    overwrite=args.overwrite, progress=progress, report=report,
                                    precision=args.precision,
                                    log=lambda _line: None)  # per-file skip lines: one summary line below
        except OSError as err:  # wagi.fileio.WriteError: the reconstructions' folder cannot be written
            _error(str(err))
            return 1
        if summary.skipped:
            print(f"{name}: reused {len(summary.skipped)} existing reconstruction(s) in {recon_dir} "
                  "(pass --overwrite to recompute them)", file=sys.stderr, flush=True)
        print(f"{name}: {summary.line()}", flush=True)
        methods[name] = recon_dir
        del model

    try:
        evaluation = evaluate_folders(args.gt, methods, size=args.size, levels=args.levels, policy=args.policy,
                                      batch_size=args.batch_size, device=device, perceptual=perceptual,
                                      report=report, progress=progress)
    except (InputNotFoundError, ValueError) as err:
        _error(str(err))
        return 2
    evaluation.settings.update({"methods": {n: os.fspath(d) for n, d in methods.items()},
                                "checkpoints": {n: os.fspath(c) for n, c in args.model},
                                "batch_size": args.batch_size, "device": str(device),
                                "precision": args.precision})
    print(printable(markdown_report(evaluation)), flush=True)  # the numbers are on screen whatever the disk does
    for stale in remove_stale_temps(args.output):  # report writes of a killed run, unchanged for minutes
        print(f"{stale}: removed, a temporary file of an interrupted earlier run", file=sys.stderr)
    try:
        written = write_report(evaluation, args.output, overwrite=args.overwrite)
    except OutputExistsError as err:
        _error(str(err))
        return 2
    except OSError as err:  # wagi.fileio.WriteError: disk full, read-only folder, permission
        _error(f"{err}; the report above was not saved completely")
        return 1
    print("wrote " + ", ".join(written.values()), flush=True)
    n_bad = len(report.failures)
    n_missing = sum(len(m.matching.missing) for m in evaluation.methods.values())
    n_ambiguous = len(evaluation.gt_ambiguous) + sum(len(m.matching.ambiguous) for m in evaluation.methods.values())
    if n_bad or n_missing or n_ambiguous:
        print(f"incomplete comparison: {n_bad} unreadable file(s), {n_missing} missing reconstruction(s), "
              f"{n_ambiguous} ambiguous name(s); listed above and in results.json", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
