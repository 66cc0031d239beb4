#!/usr/bin/env python
"""Bundle trained demo models into compact fp16 files with a manifest (sha256, config, steps, metrics).

    python scripts/bundle_models.py --output pretrained/demo \\
        --generator swagan128=runs/demo_swagan/checkpoints/latest.pt \\
        --model wagi=runs/demo_wagi/checkpoints/latest.pt --model l2_restyle=runs/demo_l2/checkpoints/latest.pt \\
        [--metrics NAME=path/to/metrics.jsonl] [--note TEXT] [--overwrite]
    python scripts/bundle_models.py --output pretrained/demo --judge judge=runs/judge.pt   # the attribute judge
    python scripts/bundle_models.py --verify pretrained/demo     # exit 0: every file matches its sha256

--model takes an encoder-trainer checkpoint or a WaGI model file (written back as a WaGI model file that
WaGI.load reads); --generator takes a SWAGAN training checkpoint or an exported g_ema file (written as the
fp16 g_ema file that wagi.checkpoint.load_generator reads); --judge takes an attribute judge
(scripts/train_judge.py), copied as it is (fp32: its batch-norm statistics) with its held-out accuracies
in the manifest. Each file must stay under 16 MiB. The
manifest is merged with an existing one, so models can be added one at a time; replacing an entry needs
--overwrite. Validation metrics come from the last 'val' record of <run>/metrics.jsonl beside
<run>/checkpoints/, or from --metrics. See wagi/bundle.py for the manifest's fields.
"""
import argparse
import sys
from pathlib import Path

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

EXIT_VERIFY_FAILED = 1
EXIT_ERROR = 2


def _verify(out_dir: str) -> int:
    from wagi.bundle import BundleError, verify_bundle

    try:
        problems, n = verify_bundle(out_dir)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    for line in problems:
        print(line)
    if problems:
        print(f"{out_dir}: {len(problems)} problem(s) in {n} manifest entries", file=sys.stderr)
        return EXIT_VERIFY_FAILED
    print(f"{out_dir}: all {n} files match the manifest")
    return 0


def _build(args) -> int:
    from wagi.bundle import MANIFEST_NAME, BundleError, BundleItem, bundle, parse_named_path

    try:
        items = []
        for kind, flag, texts in (("generator", "--generator", args.generator), ("wagi", "--model", args.model)):
            for text in texts:
                name, path = parse_named_path(text, flag)
                items.append(BundleItem(name, kind, path))
        by_name = {item.name: item for item in items}
        for text in args.metrics:
            name, path = parse_named_path(text, "--metrics")
            if name not in by_name:
                raise BundleError(f"--metrics {name}: no --model or --generator named {name!r}")
            by_name[name].metrics = path
        entries = bundle(args.output, items, note=args.note, overwrite=args.overwrite) if items else []
        entries += [_add_judge(args.output, text, args.overwrite) for text in args.judge]
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    for e in entries:
        steps = "?" if e.get("steps") is None else e["steps"]
        print(f"wrote {Path(args.output) / e['file']} ({e['kind']}, {e['bytes'] / 2 ** 20:.2f} MiB, "
              f"{steps} steps, sha256 {e['sha256'][:12]}) from {e['source']}")
    print(f"updated {Path(args.output) / MANIFEST_NAME}")
    return 0


def _add_judge(out_dir: str, text: str, overwrite: bool):
    from wagi.bundle import BundleError, file_entry, parse_named_path, read_manifest, write_manifest
    from wagi.fileio import atomic_write
    from wagi.models.judge import JudgeCheckpointError, load_judge

    name, path = parse_named_path(text, "--judge")
    try:
        _, meta = load_judge(path, return_meta=True)
    except JudgeCheckpointError as e:
        raise BundleError(f"--judge {name}: {e}") from None
    manifest = read_manifest(out_dir, missing_ok=True)
    if name in manifest["models"] and not overwrite:
        raise BundleError(f"{out_dir} already has {name!r}; pass --overwrite to replace it")
    target = Path(out_dir) / f"{name}.pt"
    if path.resolve() != target.resolve():
        with open(path, "rb") as f:
            atomic_write(target, f.read())
    keep = ("accuracy", "train_seed_offset", "n_train", "test_seed_offset", "n_test", "epochs", "steps",
            "train_seconds", "device", "demo_faces_version")
    entry = file_entry(out_dir, target.name, "judge", loader="wagi.models.judge.load_judge", source=str(path),
                       **{k: meta.get(k) for k in keep})
    write_manifest(out_dir, manifest, {name: entry})
    return {**entry, "steps": meta.get("steps")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--output", help="bundle folder, e.g. pretrained/demo")
    p.add_argument("--model", action="append", default=[], metavar="NAME=CKPT",
                   help="a WaGI model (encoder-trainer checkpoint or model file) to write as <out>/NAME.pt")
    p.add_argument("--generator", action="append", default=[], metavar="NAME=CKPT",
                   help="a SWAGAN generator (training checkpoint or exported file) to write as <out>/NAME.pt")
    p.add_argument("--judge", action="append", default=[], metavar="NAME=CKPT",
                   help="an attribute judge (scripts/train_judge.py) to copy as <out>/NAME.pt")
    p.add_argument("--metrics", action="append", default=[], metavar="NAME=JSONL",
                   help="the metrics.jsonl whose last 'val' record describes NAME (default: the run's own)")
    p.add_argument("--note", default=None, help="free text stored in the new manifest entries")
    p.add_argument("--overwrite", action="store_true", help="replace existing entries and files of the same name")
    p.add_argument("--verify", default=None, metavar="DIR",
                   help="check every file of DIR's manifest (size, sha256); exit 1 listing problems")
    args = p.parse_args(argv)

    if args.verify is not None:
        if args.output or args.model or args.generator or args.judge or args.metrics or args.note or args.overwrite:
            p.error("--verify takes no other options")
        return _verify(args.verify)
    if not args.output:
        p.error("--output is required (or --verify DIR)")
    if not (args.model or args.generator or args.judge):
        p.error("give at least one --model NAME=CKPT, --generator NAME=CKPT or --judge NAME=CKPT")
    return _build(args)


if __name__ == "__main__":
    run_main(main)
