#!/usr/bin/env python
"""Fit and ship InterFaceGAN directions for the bundle's generator, labelled by the attribute judge.

    python scripts/fit_directions.py                       # every binary demo attribute -> pretrained/demo/directions/
    python scripts/fit_directions.py --attribute has_glasses --n 20000 --tune-n 100 --strengths 2,3,4,6,8

The standard recipe (Shen et al. 2020): sample --n codes z, map them to W, render them with the
generator, score each image with the judge (its logit for the attribute), keep the top and bottom
--chosen-ratio of the codes by score and fit a linear SVM in W; the unit normal of its hyperplane is
the direction (1, D), applied to every W+ entry (or the entries [START, END) of --layers START:END).

The documented strength is then chosen on --tune-n held-out *real* faces (seeds 1,006,000+, never used by
the benchmark), inverted without fusion by --tune-model: the smallest --strengths value at which the
judge sees the attribute added on >= --target of the faces without it and removed on >= --target of the
faces with it, while no other attribute's decision changes on more than --max-leakage of the faces; if no
value reaches that, the one with the best worst-case success that keeps the leakage bound (or, failing
that, the best worst-case success) is shipped and the manifest says the target was missed.

Writes BUNDLE/directions/NAME.npy (NAME: the attribute without its 'has_' prefix) and a manifest entry
per direction (kind 'direction': attribute, strength, SVM accuracies, the tuning table, the generator's
and the judge's sha256). Existing directions are replaced only with --overwrite.
Exit status: 0 written; 2 bad arguments or missing files.
"""
import argparse
import sys
import time
from pathlib import Path

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

import torch
from tqdm import tqdm

from wagi.bundle import BundleError, file_entry, read_manifest, sha256_file, write_manifest
from wagi.cli import positive_int
from wagi.data.demo_faces import BINARY_ATTRIBUTES
from wagi.devices import DEVICE_CHOICES, resolve_device
from wagi.editing import fit_boundary, save_boundary
from wagi.editing.benchmark import EDIT_TUNE_SEED_OFFSET, EditBenchmark, prepare_faces
from wagi.editing.directions import parse_layer_range, restrict_layers
from wagi.editing.shipped import DEMO_BUNDLE, DIRECTION_KIND, DIRECTIONS_DIR, ShippedDirection, generator_fingerprint
from wagi.inference import shown_path
from wagi.models.judge import load_judge
from wagi.models.wagi import WaGI

DEFAULT_STRENGTHS = "1,1.5,2,3,4,5,6,8,10,12"
SAMPLE_SEED = 20_000  # z of the labelled samples: torch.Generator seed (documented in the manifest)


def direction_name(attribute: str) -> str:
    return attribute[4:] if attribute.startswith("has_") else attribute


def _floats(text: str):
    try:
        values = sorted(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of numbers, got {text!r}") from None
    if not values or values[0] <= 0:
        raise argparse.ArgumentTypeError(f"positive numbers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    head, _, rest = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(description=head, epilog=rest, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--bundle", type=Path, default=DEMO_BUNDLE)
    p.add_argument("--tune-model", default="wagi", help="bundled model name or checkpoint path (default wagi)")
    p.add_argument("--judge", type=Path, default=None, help="default: BUNDLE/judge.pt")
    p.add_argument("--attribute", action="append", default=[], choices=BINARY_ATTRIBUTES,
                   help="repeatable; default: every binary attribute")
    p.add_argument("--n", type=positive_int, default=20_000, help="generated samples to label")
    p.add_argument("--chosen-ratio", type=float, default=0.1, help="top / bottom fraction by judge logit")
    p.add_argument("--layers", default=None, metavar="START:END",
                   help="restrict the directions to the W+ entries [START, END), e.g. 2:8")
    p.add_argument("--truncation", type=float, default=1.0, help="psi of the labelled samples (1: none)")
    p.add_argument("--tune-n", type=positive_int, default=100, help="real faces for the strength choice")
    p.add_argument("--strengths", type=_floats, default=_floats(DEFAULT_STRENGTHS))
    p.add_argument("--target", type=float, default=0.9, help="success wanted at the shipped strength")
    p.add_argument("--max-leakage", type=float, default=0.1)
    p.add_argument("--batch-size", type=positive_int, default=100)
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    return p


@torch.no_grad()
def label_samples(model, judge, attributes, n, batch, device, truncation=1.0, progress=True):
    """``(w (n, D), scores {attribute: (n,) judge logits})`` for ``n`` generated samples."""
    g = model.generator
    gen = torch.Generator().manual_seed(SAMPLE_SEED)
    ws, scores = [], {a: [] for a in attributes}
    for i in tqdm(range(0, n, batch), desc="label samples", unit="batch", disable=not progress):
        z = torch.randn(min(batch, n - i), g.style_dim, generator=gen).to(device)
        w = g.style(z)
        if truncation != 1.0:
            avg = model.latent_avg.reshape(-1, g.style_dim).mean(0, keepdim=True)  # (1, D)
            w = avg + truncation * (w - avg)
        img = model.decode(w.unsqueeze(1).expand(-1, g.n_latent, -1))
        logits = judge(img.clamp(-1, 1))
        ws.append(w.float().cpu())
        for a in attributes:
            scores[a].append(logits[a].float().cpu())
    return torch.cat(ws), {a: torch.cat(v) for a, v in scores.items()}


def choose_strength(table, target, max_leakage):
    """The smallest strength meeting the target (see the module doc); ``(strength, met)``. A class with no
    tuning face counts as a success of 0: the target is never met untested."""
    def worst(r):
        return min(0.0 if v is None else v for v in (r["success_add"], r["success_remove"]))
    for r in table:
        if worst(r) >= target and r["leakage_max"] <= max_leakage:
            return r["strength"], True
    ok = [r for r in table if r["leakage_max"] <= max_leakage] or table
    best = max(ok, key=worst)
    return best["strength"], False


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    if not 0 < args.chosen_ratio <= 0.5:
        return fail(f"--chosen-ratio must be in (0, 0.5], got {args.chosen_ratio}")
    attributes = args.attribute or list(BINARY_ATTRIBUTES)
    try:
        device = resolve_device(args.device)
        manifest = read_manifest(args.bundle)
        entries = manifest["models"]
        tune_path = Path(args.tune_model)
        if args.tune_model in entries:
            tune_path = args.bundle / entries[args.tune_model]["file"]
        if not tune_path.is_file():
            raise FileNotFoundError(f"--tune-model {args.tune_model}: {tune_path} not found")
        judge_path = args.judge or args.bundle / "judge.pt"
        judge = load_judge(judge_path).to(device).eval()
        try:
            model = WaGI.load(tune_path).to(device).eval()
        except Exception as err:  # unreadable or foreign checkpoint: one line
            raise ValueError(f"--tune-model {args.tune_model}: {err}") from None
        gen_entry = next((e for e in entries.values() if e.get("kind") == "generator"), None)
        layer_range = parse_layer_range(args.layers) if args.layers else None
        names = {a: direction_name(a) for a in attributes}
        for name in names.values():
            if name in entries and not args.overwrite:
                raise BundleError(f"{args.bundle} already ships {name!r}; pass --overwrite to replace it")
    except (BundleError, ValueError, FileNotFoundError) as err:
        return fail(str(err))

    t0 = time.time()
    w, scores = label_samples(model, judge, attributes, args.n, args.batch_size, device, args.truncation)
    fitted = {}
    for a in attributes:
        frac = float((scores[a] > 0).float().mean())
        # the chosen top / bottom sets stay inside the judge's two classes when the attribute is rare
        ratio = max(min(args.chosen_ratio, frac, 1 - frac), 20 / args.n)
        d, fit = fit_boundary(w, scores[a].numpy(), chosen_ratio=ratio, seed=args.seed)
        d = d.reshape(1, -1).float()
        if layer_range is not None:
            d = restrict_layers(d, model.n_latent, layer_range)
        fitted[a] = (d, fit)
        print(f"{a}: judge positive on {frac:.1%} of samples; SVM val acc {fit['val_acc']:.3f}", file=sys.stderr)

    # strengths: on real held-out faces, inverted without fusion
    faces = prepare_faces(range(EDIT_TUNE_SEED_OFFSET, EDIT_TUNE_SEED_OFFSET + args.tune_n), attributes, progress=True)
    bench = EditBenchmark(judge, faces, device, batch_size=args.batch_size)
    unit = {names[a]: ShippedDirection(names[a], a, Path(), 1.0, d) for a, (d, _) in fitted.items()}
    rows = bench.run_model("tune", model, unit, args.strengths, fuse_modes=(False,))
    new_entries = {}
    fingerprint = generator_fingerprint(model.generator)  # the W space these directions belong to
    out_dir = args.bundle / DIRECTIONS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    for a, (d, fit) in fitted.items():
        name = names[a]
        table = [{k: r[k] for k in ("strength", "success_add", "success_remove", "leakage_max", "n_add",
                                    "n_remove")} for r in rows if r["direction"] == name]
        strength, met = choose_strength(table, args.target, args.max_leakage)
        save_boundary(out_dir / f"{name}.npy", d, overwrite=True)
        r = next(t for t in table if t["strength"] == strength)

        def pct(v):
            return "n/a" if v is None else f"{v:.2f}"
        print(f"{name}: strength {strength:g} (add {pct(r['success_add'])}, remove {pct(r['success_remove'])}, "
              f"leakage max {pct(r['leakage_max'])}){'' if met else '  TARGET MISSED'}")
        new_entries[name] = file_entry(
            args.bundle, f"{DIRECTIONS_DIR}/{name}.npy", DIRECTION_KIND, attribute=a, strength=strength,
            target_met=met, layers=list(layer_range) if layer_range else None,
            fit={"method": "svm", "n_samples": args.n, "sample_seed": SAMPLE_SEED, "truncation": args.truncation,
                 "chosen_ratio": fit["chosen_num"] / args.n, "train_acc": fit["train_acc"], "val_acc": fit["val_acc"],
                 "judge_positive_fraction": float((scores[a] > 0).float().mean())},
            tuning={"model": shown_path(tune_path), "faces": args.tune_n, "seed_offset": EDIT_TUNE_SEED_OFFSET,
                    "target": args.target, "max_leakage": args.max_leakage, "table": table},
            generator_fingerprint=fingerprint, style_dim=int(d.shape[-1]),
            generator_sha256=gen_entry["sha256"] if gen_entry else None, judge_sha256=sha256_file(judge_path))
    write_manifest(args.bundle, read_manifest(args.bundle), new_entries)
    print(f"{len(new_entries)} directions in {time.time() - t0:.0f} s -> {out_dir}")
    return 0


if __name__ == "__main__":
    run_main(main)
