#!/usr/bin/env python
"""Fit an InterFaceGAN boundary for the project's own generator from labelled W+ codes.

    python scripts/train_boundary.py --demo --n 1000 --attribute has_glasses --output outputs/glasses.npy
    python scripts/train_boundary.py --ckpt M.pt --images data/demo_test --attribute smile --output boundaries/smile.npy
    python scripts/train_boundary.py --latents inv/latents.pt --labels data/demo_test/labels.jsonl \\
        --attribute hair_colour=blonde --output boundaries/blonde.npy

Boundaries published for StyleGAN2 do not transfer to a separately trained SWAGAN, so they are fitted
here on codes of the model's own W+ space. Label sources:
  --demo          render --n held-out demo faces (their attribute dicts are the labels) and invert them;
  --images DIR    a folder of images with labels.jsonl (make_demo_dataset.py --labels) or --labels FILE
                  (.jsonl/.json/.csv, one record per file name), inverted with the model;
  --latents FILE  codes already inverted (invert.py --save-latents) with --labels FILE; the model or
                  --generator only fixes n_latent and D.
--attribute NAME takes a bool field (has_glasses) or a numeric one used as a score (smile: the top and
bottom --chosen-ratio of the codes are positives / negatives); NAME=VALUE picks a category
(hair_colour=blonde). The boundary is fitted on the mean of each code's W+ entries, giving (1, D);
--per-layer fits one per entry, giving (n_latent, D) with unit-norm rows.

How many codes: the linear SVM works in D dimensions (256 for the demo models); with fewer training
codes per class than D it separates any labels perfectly, so train acc 1.000 says nothing (read val
acc, and a warning says when a class is that small). At least D training codes per class, better two
or three times that: a bool attribute of frequency p needs --n >= D / (split-ratio min(p, 1-p)), about
1000 for has_glasses (p = 0.4); a score attribute keeps only the top and bottom --chosen-ratio, so it
needs --n >= D / (split-ratio chosen-ratio), about 18000 at 0.02 (or raise --chosen-ratio). --demo
renders and inverts each face, about 0.6 s a face on 2 CPU cores, so the default --n 1000 takes about
10 minutes there (a GPU: seconds).

Writes --output (.npy) and a JSON report (accuracies, counts; default: --output with .json).
Exit status: 0 written; 1 written, but some inputs failed (each named on one line); 2 nothing written
(bad arguments, missing checkpoint, too few labelled codes, existing output without --overwrite).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, add_trust_flag, batch_size, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

import numpy as np
import torch
from tqdm import tqdm

from wagi.checkpoint import load_generator
from wagi.data.demo_faces import (
    SUPPORTED_SIZES,
    TEST_SEED_OFFSET,
    face_tensor,
    render_from_attributes,
    sample_attributes,
)
from wagi.devices import DEVICE_CHOICES, resolve_device
from wagi.editing import (
    LatentFileError,
    attribute_value,
    fit_boundary,
    labels_array,
    load_latents,
    name_key,
    read_labels,
    save_boundary,
)
from wagi.fileio import atomic_write
from wagi.imageio import POLICIES, ImageIOError, LoadReport, find_images, iter_batches
from wagi.inference import DEMO_CKPT, resolve_checkpoint, shown_path
from wagi.models.wagi import WaGI

DEFAULT_CKPT = DEMO_CKPT
DEFAULT_DEMO_FACES = 1000  # enough for a bool attribute as frequent as has_glasses (see the docstring)
MIN_CODES_PER_DIM = 1  # fewer training codes per class than D: any labels are separable, the fit is noise


def build_parser() -> argparse.ArgumentParser:
    head, _, rest = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(description=head, epilog=rest, formatter_class=DefaultsHelpFormatter)
    model = p.add_mutually_exclusive_group()
    model.add_argument("--ckpt", type=Path, default=None,
                       help=f"WaGI model checkpoint (default {shown_path(DEFAULT_CKPT)})")
    model.add_argument("--generator", type=Path, default=None,
                       help="generator checkpoint; only with --latents (fixes n_latent and D)")
    add_trust_flag(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--demo", action="store_true", help="render and invert --n labelled demo faces")
    src.add_argument("--images", type=Path, metavar="DIR", help="labelled image folder")
    src.add_argument("--latents", nargs="+", metavar="FILE", help="saved W+ codes (.pt/.npy/.npz)")
    p.add_argument("--labels", type=Path, default=None, help="labels file (default DIR/labels.jsonl with --images)")
    p.add_argument("--attribute", required=True, help="NAME (bool or score) or NAME=VALUE (category)")
    p.add_argument("--n", type=int, default=DEFAULT_DEMO_FACES,
                   help=f"demo faces to render with --demo (default {DEFAULT_DEMO_FACES}: about 10 min on 2 CPU cores, "
                        "enough for has_glasses; see 'How many codes' below)")
    p.add_argument("--demo-seed-offset", type=int, default=None, help="first demo seed (default: the held-out range)")
    p.add_argument("--output", type=Path, required=True, help="boundary file (.npy)")
    p.add_argument("--report", type=Path, default=None, help="JSON report (default: --output with .json)")
    p.add_argument("--classifier", choices=["svm", "logistic"], default="svm",
                   help="linear SVM or logistic regression (scikit-learn)")
    p.add_argument("--per-layer", action="store_true", help="one boundary per W+ entry: (n_latent, D)")
    p.add_argument("--chosen-ratio", type=float, default=0.02, help="score attributes: top/bottom fraction used")
    p.add_argument("--split-ratio", type=float, default=0.7, help="training fraction of each class")
    p.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength")
    p.add_argument("--seed", type=int, default=0, help="seed of the train / validation split and the solver")
    p.add_argument("--batch-size", type=batch_size, default=16, help="images per model call")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to run")
    p.add_argument("--policy", choices=POLICIES, default="center_crop", help="how non-square images are fitted")
    p.add_argument("--overwrite", action="store_true", help="replace existing --output / --report files")
    return p


def _positive_rule(attribute: str, labels: np.ndarray, chosen_ratio: float) -> str:
    name, eq, value = attribute.partition("=")
    if eq:
        return f"{name} == {value}"
    if labels.dtype == bool:
        return f"{name} is true"
    return f"{name}: highest scores (top {chosen_ratio:g}) vs lowest"


class Inverter:
    """Batched W+ codes of images through the WaGI encoder."""

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        _, w, _ = self.model.invert(images.to(self.device), fuse=False)
        return w.float().cpu()


def _demo_codes(args, invert: Inverter, image_size: int, log) -> Tuple[List[str], List[torch.Tensor], List[Any]]:
    if args.n < 4:
        raise ValueError(f"--n must be >= 4, got {args.n}")
    size = next((s for s in SUPPORTED_SIZES if s >= image_size), SUPPORTED_SIZES[-1])
    first = TEST_SEED_OFFSET if args.demo_seed_offset is None else args.demo_seed_offset
    names, codes, values = [], [], []
    batch: List[torch.Tensor] = []
    bar = tqdm(total=args.n, unit="face", desc="demo faces", disable=None)
    for seed in range(first, first + args.n):
        attrs = sample_attributes(seed)
        values.append(attribute_value(attrs, args.attribute, f"demo seed {seed}"))
        names.append(f"seed{seed}")
        batch.append(face_tensor(render_from_attributes(attrs, size)))
        if len(batch) == args.batch_size or seed == first + args.n - 1:
            codes += list(invert(torch.stack(batch)))
            bar.update(len(batch))
            batch = []
    bar.close()
    return names, codes, values


def _image_codes(args, invert: Inverter, image_size: int, log) -> Tuple[List[str], List[torch.Tensor], List[Any]]:
    labels_path = args.labels or args.images / "labels.jsonl"
    labels = read_labels(labels_path)
    items = find_images([args.images])
    unlabelled = [it.rel for it in items if name_key(it.rel) not in labels]
    if unlabelled:
        print(f"{len(unlabelled)} image(s) have no record in {labels_path} and are skipped: "
              f"{', '.join(unlabelled[:5])}{' ...' if len(unlabelled) > 5 else ''}", file=sys.stderr)
    wanted, values = [], {}
    for it in items:
        key = name_key(it.rel)
        if key not in labels:
            continue
        try:
            values[it.rel] = attribute_value(labels[key], args.attribute, f"{labels_path} [{it.rel}]")
        except (KeyError, ValueError) as err:
            log(str(err.args[0]) if isinstance(err, KeyError) else str(err))
            continue
        wanted.append(it)
    report = LoadReport(log=log)
    names, codes = [], []
    for batch, batch_items in iter_batches(wanted, image_size, args.batch_size, args.policy, report=report):
        codes += list(invert(batch))
        names += [it.rel for it in batch_items]
    return names, codes, [values[n] for n in names]


def _latent_codes(args, n_latent: int, style_dim: int, log) -> Tuple[List[str], List[torch.Tensor], List[Any]]:
    if args.labels is None:
        raise ValueError("--latents needs --labels FILE")
    labels = read_labels(args.labels)
    names, codes, values = [], [], []
    for path in args.latents:
        try:
            entries = load_latents(path, n_latent, style_dim)
        except (LatentFileError, FileNotFoundError) as err:
            log(str(err))
            continue
        for name, code in entries:
            key = name_key(name)
            if key not in labels:
                log(f"{path}[{name}]: no record in {args.labels}")
                continue
            try:
                values.append(attribute_value(labels[key], args.attribute, f"{args.labels} [{name}]"))
            except (KeyError, ValueError) as err:
                log(str(err.args[0]) if isinstance(err, KeyError) else str(err))
                continue
            names.append(name)
            codes.append(code)
    return names, codes, values


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    report_path = args.report or args.output.with_suffix(".json")
    if args.output.suffix.lower() != ".npy":
        return fail(f"--output {args.output}: boundaries are written as .npy files")
    for path in (args.output, report_path):
        if path.exists() and not args.overwrite:
            return fail(f"{path} exists; pass --overwrite to replace it")
    if args.generator is not None and not args.latents:
        return fail("--generator only fixes shapes for --latents; inverting images needs a WaGI model (--ckpt)")
    if args.batch_size < 1:
        return fail(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        return fail(str(err))

    failures: List[str] = []

    def log(message: str) -> None:
        failures.append(message)
        print(message, file=sys.stderr, flush=True)

    t0 = time.time()
    try:
        if args.generator is not None:
            generator, _, _ = load_generator(args.generator, trust=args.trust_checkpoint)
            model, n_latent, style_dim, source = None, generator.n_latent, generator.style_dim, str(args.generator)
        else:
            ckpt = resolve_checkpoint(args.ckpt, DEFAULT_CKPT)
            model = WaGI.load(ckpt).to(device).eval()
            n_latent, style_dim, source = model.n_latent, model.generator.style_dim, str(ckpt)
    except Exception as err:  # missing or unreadable checkpoint: one line, exit 2
        return fail(str(err))

    try:
        if args.latents:
            names, codes, values = _latent_codes(args, n_latent, style_dim, log)
        elif args.demo:
            names, codes, values = _demo_codes(args, Inverter(model, device), model.image_size, log)
        else:
            names, codes, values = _image_codes(args, Inverter(model, device), model.image_size, log)
        if not codes:
            raise ValueError("no labelled code to fit on")
        latents = torch.stack(codes)  # (N, n_latent, D)
        labels = labels_array(values)
        direction, fit = fit_boundary(latents if args.per_layer else latents.mean(1), labels, method=args.classifier,
                                      chosen_ratio=args.chosen_ratio, split_ratio=args.split_ratio, seed=args.seed,
                                      C=args.C)
        save_boundary(args.output, direction, overwrite=args.overwrite)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, ImageIOError) as err:
        return fail(str(err.args[0]) if isinstance(err, KeyError) else str(err))

    report = {"attribute": args.attribute, "positive": _positive_rule(args.attribute, labels, args.chosen_ratio),
              "boundary": str(args.output), "shape": list(direction.shape), "per_layer": args.per_layer,
              "model": source, "n_latent": n_latent, "style_dim": style_dim, "n_codes": len(codes),
              "source": "demo" if args.demo else ("images" if args.images else "latents"),
              "chosen_ratio": args.chosen_ratio, "split_ratio": args.split_ratio, "C": args.C, "seed": args.seed,
              "failed": failures, "seconds": round(time.time() - t0, 2), **fit}
    atomic_write(report_path, json.dumps(report, indent=2, sort_keys=True) + "\n")
    val = f"{fit['val_acc']:.3f}" if fit["val_acc"] is not None else "n/a"
    print(f"boundary {tuple(direction.shape)} for {report['positive']} from {len(codes)} codes "
          f"({fit['n_pos']} positive, {fit['n_neg']} negative): train acc {fit['train_acc']:.3f}, val acc {val} "
          f"-> {args.output}, report {report_path}")
    n_train_min = min(fit["n_pos"], fit["n_neg"]) * args.split_ratio
    if n_train_min < MIN_CODES_PER_DIM * style_dim:
        print(f"warning: about {n_train_min:.0f} training codes in the smaller class for a {style_dim}-dim boundary; "
              f"below {style_dim} the classes separate by chance and the direction is mostly noise (more codes: "
              "--n, more images, or a larger --chosen-ratio)", file=sys.stderr)
    if not fit["converged"]:
        print("warning: the solver did not converge; try a smaller --C or more codes", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    run_main(main)
