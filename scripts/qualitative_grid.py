#!/usr/bin/env python
"""Qualitative comparison figure: ground truth and each method's reconstruction, with zoomed detail crops.

    python scripts/qualitative_grid.py --gt data/demo_test --method l2=recon/l2 --method wagi=recon/wagi \\
        --output docs/img/results_qualitative.png [--n 4] [--names 000003,000010] [--crops auto|text,eyes,ears] \\
        [--zoom 3] [--labels data/demo_test/labels.jsonl]

Rows: test images; columns: ground truth, then each method (files matched by relative path without
extension, as in eval_subbands.py). Each full image is followed by nearest-neighbour crops of the
regions with fine detail (crop names: text, eyes, ears, necklace; 'auto' takes text, eyes and the
earring, or the necklace when the face wears no earrings), outlined on the full image in the crop's
colour. Under each crop of a method: the MSE against the ground truth inside the outlined box, pixel
values in [-1, 1].

Crop boxes come from the face attributes: --labels, else GT/labels.jsonl when present, else for
files named 000123.png the demo seed --seed-offset + 123 (kept only when it re-renders the file).
Without attributes the fixed boxes of wagi.figures.FIXED_BOXES are used. Without --names, --n images
are chosen: visible text first, then glasses, then earrings or a necklace.

The crop errors are also printed as a Markdown table. The PNG is at most --max-width pixels wide;
the same inputs give the same bytes. An existing --output is replaced only with --overwrite.
Exit status: 0 written; 1 an image could not be read; 2 bad arguments or inputs.
"""
import argparse
import sys
from pathlib import Path

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

from wagi.cli import add_comparison_flags, positive_int
from wagi.data.demo_faces import TEST_SEED_OFFSET
from wagi.figures import AUTO_CROPS, MAX_WIDTH, FigureInputError, parse_crops, qualitative_grid
from wagi.fileio import atomic_write
from wagi.imageio import ImageLoadError, OutputIsInputError, check_output_not_input

DEFAULT_OUT = Path("docs") / "img" / "results_qualitative.png"


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)




def _zoom(text: str) -> float:
    value = float(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value




def _crops(text: str):
    try:
        parse_crops(text)
    except FigureInputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    add_comparison_flags(p, "a method's reconstruction folder (repeatable; columns in this order)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUT, metavar="PNG", help="output PNG")
    p.add_argument("--n", type=positive_int, default=4, help="images chosen automatically without --names")
    p.add_argument("--names", default=None, metavar="A,B",
                   help="comma-separated GT names without extension (e.g. 000003,000010), in this order")
    p.add_argument("--crops", type=_crops, default=AUTO_CROPS, metavar="auto|text,eyes,ears",
                   help="crop names (text, eyes, ears, necklace) or auto (default)")
    p.add_argument("--zoom", type=_zoom, default=3.0, help="crop magnification (default 3)")
    p.add_argument("--labels", type=Path, default=None, metavar="JSONL",
                   help="labels.jsonl of make_demo_dataset.py (default: GT/labels.jsonl when present)")
    p.add_argument("--seed-offset", type=int, default=TEST_SEED_OFFSET,
                   help=f"seed of 000000.png when attributes come from the seed (default {TEST_SEED_OFFSET})")
    p.add_argument("--max-width", type=positive_int, default=MAX_WIDTH, help=f"PNG width limit (default {MAX_WIDTH})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.method:
        p.error("give at least one --method NAME=DIR")
    names = [n for n, _ in args.method]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        p.error(f"method name(s) used twice: {', '.join(duplicates)}")
    if args.output.suffix.lower() != ".png":
        p.error(f"--output {args.output}: the figure is written as PNG, give a .png path")
    if args.output.is_dir() or (args.output.exists() and not args.overwrite):
        _error(f"{args.output}: output file exists; pass --overwrite to replace it")
        return 2
    chosen = [s.strip() for s in args.names.split(",") if s.strip()] if args.names else None
    try:
        fig = qualitative_grid(args.gt, dict(args.method), names=chosen, n=args.n, crops=args.crops,
                               zoom=args.zoom, labels=args.labels, seed_offset=args.seed_offset,
                               max_width=args.max_width)
        inputs = [r.gt_path for r in fig.rows] + [path for r in fig.rows for path in r.method_paths.values()]
        check_output_not_input(args.output, inputs)
    except (FigureInputError, OutputIsInputError) as err:
        _error(str(err))
        return 2
    except ImageLoadError as err:
        _error(str(err))
        return 1
    atomic_write(args.output, fig.png)
    print(fig.error_table())
    print(f"wrote {args.output} ({fig.layout.width}x{fig.layout.height} px, {len(fig.rows)} image(s): "
          f"{', '.join(r.key for r in fig.rows)})", flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
