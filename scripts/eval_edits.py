#!/usr/bin/env python
"""Edit-fidelity benchmark: edit success, preservation, ghosting and leakage of each model's edits.

    python scripts/eval_edits.py                                    # bundled models x shipped directions
    python scripts/eval_edits.py --model wagi --model l2_restyle --direction glasses --n 200 --factors 0.5,1
    python scripts/eval_edits.py --model mine=runs/x/checkpoints/best.pt --bundle pretrained/demo

Held-out demo faces (seeds from --seed-offset, default the benchmark's own range 1,003,000+) are inverted
by every model, then each shipped direction of --bundle moves each face towards the other state of its
attribute at the direction's documented strength times each --factors value: faces without the attribute
get +strength ("add"), faces with it -strength ("remove"). Models with a fusion are run with the fusion
off and on (--fusion). Measures (wagi/editing/benchmark.py): success (the attribute judge's decision after
the edit), leakage (other attributes' decisions that change), preservation (per-band L2 against the input
outside the edited attribute's dilated mask) and ghosting (high-band energy left where a removed
attribute was, against the renderer's image without it).

Writes --output/edits.md, edits.csv, edits.json and edits_figure.png (input and each model's edit, fusion on
where the model has one, each with a zoomed crop of the attribute's region). A model whose generator is not
the one the directions were fitted for, or that cannot be read, is skipped with one line.
Exit status: 0 written; 1 written, but a model was skipped; 2 bad arguments, a missing judge or direction.
"""
import argparse
import sys
import time
from pathlib import Path

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

import torch

from wagi.bundle import BundleError, resolve_model_specs
from wagi.cli import add_edit_fusion_flags, apply_edit_fusion_flags, fail, parse_refusing_existing, positive_int  # noqa: E501
from wagi.data.demo_faces import check_seed_range
from wagi.devices import DEVICE_CHOICES, resolve_device
from wagi.editing.benchmark import (
    EDIT_TEST_SEED_OFFSET,
    EDIT_TUNE_SEED_OFFSET,
    EditBenchmark,
    csv_text,
    edit_figure,
    json_text,
    markdown_tables,
    prepare_faces,
    summary_markdown,
)
from wagi.editing.shipped import DEMO_BUNDLE, check_direction_fits, load_shipped
from wagi.fileio import atomic_write
from wagi.models.judge import load_judge
from wagi.models.wagi import WaGI

OUTPUTS = ("edits.md", "edits.csv", "edits.json", "edits_figure.png")


def _floats(text: str):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"positive numbers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    head, _, rest = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(description=head, epilog=rest, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--bundle", type=Path, default=DEMO_BUNDLE, help="bundle with models, judge and directions")
    p.add_argument("--model", action="append", default=[], metavar="NAME[=PATH]",
                   help="a bundled model name or NAME=checkpoint (repeatable; default: every bundled model)")
    p.add_argument("--direction", action="append", default=[], metavar="NAME",
                   help="a shipped direction (repeatable; default: all)")
    p.add_argument("--judge", type=Path, default=None, help="attribute judge (default: BUNDLE/judge.pt)")
    p.add_argument("--n", type=positive_int, default=200, help="held-out faces (default 200)")
    p.add_argument("--seed-offset", type=int, default=EDIT_TEST_SEED_OFFSET)
    p.add_argument("--factors", type=_floats, default=[1.0], help="multiples of each documented strength")
    p.add_argument("--fusion", choices=("both", "on", "off"), default="both")
    add_edit_fusion_flags(p)
    p.add_argument("--batch-size", type=positive_int, default=25)
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--output", type=Path, default=Path("outputs") / "edit_benchmark")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true")
    return p


def _models(args):
    return resolve_model_specs(args.bundle, args.model)


def main(argv=None) -> int:
    args = parse_refusing_existing(build_parser(), argv, OUTPUTS)
    if args is None:
        return 2
    try:
        check_seed_range(args.seed_offset, args.n)
        if args.seed_offset < EDIT_TUNE_SEED_OFFSET < args.seed_offset + args.n:
            raise ValueError(f"faces {args.seed_offset}..{args.seed_offset + args.n - 1} include the strength-tuning "
                             f"faces ({EDIT_TUNE_SEED_OFFSET}+): use --n <= {EDIT_TUNE_SEED_OFFSET - args.seed_offset}")
        device = resolve_device(args.device)
        models = _models(args)
        directions = load_shipped(args.bundle, args.direction or None)
        if not directions:
            raise BundleError(f"{args.bundle} ships no editing direction (scripts/fit_directions.py makes them)")
        judge = load_judge(args.judge or args.bundle / "judge.pt").to(device).eval()
        for name, path in models.items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"--model {name}: {path} not found")
    except (BundleError, ValueError, FileNotFoundError) as err:
        return fail(str(err))
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.fusion]
    t0 = time.time()
    progress = not args.no_progress
    attrs = sorted({d.attribute for d in directions.values()})
    seeds = list(range(args.seed_offset, args.seed_offset + args.n))
    faces = prepare_faces(seeds, attrs, progress=progress)
    bench = EditBenchmark(judge, faces, device, batch_size=args.batch_size, progress=progress)
    rows, loaded, skipped = [], {}, []
    for name, path in models.items():
        try:
            model = WaGI.load(path)
            for dname, d in directions.items():
                check_direction_fits(d.entry, model.generator, dname)
        except Exception as err:  # one line per unusable model; the others still run
            print(f"--model {name}: skipped: {err}", file=sys.stderr)
            skipped.append(name)
            continue
        if modes == (True,) and model.fusion is None:
            print(f"--model {name}: has no fusion; --fusion on runs it without", file=sys.stderr)
        apply_edit_fusion_flags(model, args)
        loaded[name] = model
        rows += bench.run_model(name, model, directions, args.factors, modes if model.fusion is not None
                                else (False,))
    if not rows:
        return fail("no model could be evaluated")
    meta = {"n_faces": args.n, "seed_offset": args.seed_offset, "factors": args.factors,
            "models": {k: str(v) for k, v in models.items()},
            "directions": {k: {"attribute": d.attribute, "strength": d.strength, "file": str(d.path)}
                           for k, d in directions.items()},
            "judge": str(args.judge or args.bundle / "judge.pt"), "device": str(device),
            "seconds": round(time.time() - t0, 1)}
    md = (f"# Edit-fidelity benchmark\n\n{args.n} held-out demo faces (seeds {seeds[0]}..{seeds[-1]}), "
          f"strength factors {args.factors}.\n\nMeans over directions\n\n{summary_markdown(rows)}\n"
          f"{markdown_tables(rows)}")
    args.output.mkdir(parents=True, exist_ok=True)
    atomic_write(args.output / "edits.md", md)
    atomic_write(args.output / "edits.csv", csv_text(rows))
    atomic_write(args.output / "edits.json", json_text(rows, meta))
    atomic_write(args.output / "edits_figure.png", edit_figure(loaded, directions, faces, device))
    print(summary_markdown(rows))
    print(f"{len(rows)} rows in {time.time() - t0:.0f} s -> {args.output}/edits.md, .csv, .json, _figure.png")
    return 1 if skipped else 0


if __name__ == "__main__":
    with torch.no_grad():
        run_main(main)
