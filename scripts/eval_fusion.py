#!/usr/bin/env python
"""What the wavelet fusion does to edits, to the pixel grid and to colour, fusion on against off.

    python scripts/eval_fusion.py                                   # bundled wagi, 100 held-out faces + 2 photos
    python scripts/eval_fusion.py --model wagi --model mine=runs/x/checkpoints/best.pt --n 50 --no-photos

For each model with a wavelet fusion (wagi/editing/fidelity.py):
* change kept: for SeFa components 0..2 at +-STRENGTH and each shipped direction at its documented strength,
  the share of the unfused edit's change G(w+sd) - G(w) that the fused edit keeps, on the pixels and on the
  Haar high bands (issue target: >= 90 % of the pixel change, >= 80 % of the high-band change);
* lattice: the reconstruction error folded modulo 4, 8 and 16 px, peak-to-peak over mean, fused and
  unfused (target: fused <= unfused + 0.02), on demo faces and on the two photos scikit-learn ships
  (center-cropped and resized to the model's size);
* colour: the low band (LL) L2 of the reconstruction, fused and unfused, and the mean colour offset of the
  fused image against the unfused one (the drift coarse-level corrections cause); and per region, where a
  face draws each binary attribute (text badge, glasses, necklace, ...), the local colour error against the
  input, fused and unfused (`wagi.editing.fidelity.region_colour_error`: a cast confined to a badge).
Faces are the edit benchmark's held-out range (seeds 1,003,000+) unless --seed-offset says otherwise.
Ablations: --drop-level R, --cascade, --edit-mode, --edit-gate, --edit-signal. Writes --output/fusion.md and
fusion.json.
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, quiet_interrupts, run_main

quiet_interrupts(__name__)

import torch
from tqdm import tqdm

from wagi import wavelets as wv
from wagi.bundle import BundleError, resolve_model_specs
from wagi.cli import add_edit_fusion_flags, apply_edit_fusion_flags, fail, parse_refusing_existing, positive_int  # noqa: E501
from wagi.data.demo_faces import BINARY_ATTRIBUTES, attribute_mask, face_tensor, render_face, sample_attributes
from wagi.devices import DEVICE_CHOICES, resolve_device
from wagi.editing import sefa_directions
from wagi.editing.benchmark import EDIT_TEST_SEED_OFFSET
from wagi.editing.fidelity import LATTICE_PERIODS, change_kept, lattice_amplitude, region_colour_error
from wagi.editing.shipped import DEMO_BUNDLE, check_direction_fits, load_shipped
from wagi.fileio import atomic_write
from wagi.models.fusion import WaveletFusion
from wagi.models.wagi import WaGI
from wagi.tensors import resize

OUTPUTS = ("fusion.md", "fusion.json")


def build_parser() -> argparse.ArgumentParser:
    head, _, rest = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(description=head, epilog=rest, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--bundle", type=Path, default=DEMO_BUNDLE)
    p.add_argument("--model", action="append", default=[], metavar="NAME[=PATH]",
                   help="a bundled model name or NAME=checkpoint (repeatable; default: wagi)")
    p.add_argument("--n", type=positive_int, default=100, help="held-out demo faces (default 100)")
    p.add_argument("--strength", type=float, default=6.0, help="SeFa strength (default 6)")
    p.add_argument("--no-photos", action="store_true", help="skip scikit-learn's two sample photos")
    add_edit_fusion_flags(p)
    p.add_argument("--drop-level", type=positive_int, action="append", default=[], metavar="R",
                   help="leave out the fusion's corrections at feature resolution R (ablation; repeatable)")
    p.add_argument("--cascade", action="store_true",
                   help="ablation: compute each level's corrections from the residual the coarser levels left "
                        "(sets each model's fusion.cascade)")
    p.add_argument("--no-edits", action="store_true", help="lattice and colour only (no change-kept table)")
    p.add_argument("--seed-offset", type=int, default=EDIT_TEST_SEED_OFFSET,
                   help="first demo face seed (default: the edit benchmark's held-out range)")
    p.add_argument("--batch-size", type=positive_int, default=25)
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--output", type=Path, default=Path("outputs") / "fusion_eval")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def _models(args):
    return resolve_model_specs(args.bundle, args.model or ["wagi"])


def sample_photos(size: int) -> torch.Tensor:
    """scikit-learn's two sample photos (china, flower), center-cropped square and area-resized: (2,3,S,S)."""
    from sklearn.datasets import load_sample_images

    out = []
    for img in load_sample_images().images:
        t = torch.tensor(img).permute(2, 0, 1).float() / 127.5 - 1  # a copy: the arrays are read-only
        h, w = t.shape[-2:]
        s = min(h, w)
        t = t[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(torch.nn.functional.interpolate(t[None], size=(size, size), mode="area")[0])
    return torch.stack(out)


def _mean(values):
    values = [float(v) for v in values if v == v]
    return sum(values) / len(values) if values else None


def attribute_regions(seeds, size: int) -> Dict[str, torch.Tensor]:
    """For each binary attribute of the demo faces: ``(N, size, size)`` bool, where a face that has it draws it
    (all False on the faces without it)."""
    regions = {name: torch.zeros(len(seeds), size, size, dtype=torch.bool) for name in BINARY_ATTRIBUTES}
    for i, seed in enumerate(seeds):
        attrs = sample_attributes(seed)
        for name in BINARY_ATTRIBUTES:
            if attrs.get(name):
                regions[name][i] = torch.from_numpy(attribute_mask(attrs, name, size))
    return regions


def evaluate(model: WaGI, faces: torch.Tensor, photos, edits, batch: int, progress: bool,
             regions: Optional[Dict[str, torch.Tensor]] = None):
    sets = {"faces": faces} if photos is None else {"faces": faces, "photos": photos}
    res = {"lattice": {}, "colour": {}, "kept": {}, "regions": {}}
    region_err = {name: {True: [], False: []} for name in (regions or {})}
    for set_name, imgs in sets.items():
        errs = {True: [], False: []}
        ll = {True: [], False: []}
        high = {True: [], False: []}
        offset = []
        for i in range(0, imgs.shape[0], batch):
            x = resize(imgs[i:i + batch], model.image_size)
            fused, w, ex = model.invert(x)
            base = ex["base"]
            for fuse, out in ((True, fused), (False, base)):
                errs[fuse].append(out - x)
                bands = wv.subband_mse(out, x, reduce_batch=False)
                ll[fuse].append(bands["LL"])
                high[fuse].append((bands["LH1"] + bands["HL1"] + bands["HH1"]) / 3)
            offset.append((fused - base).mean((2, 3)).abs().mean(1))
            if set_name == "faces":
                for rname, masks in (regions or {}).items():
                    m = masks[i:i + batch].to(x.device)
                    if m.shape[-1] != x.shape[-1]:  # the model's size: any covered pixel stays in the region
                        m = resize(m.float().unsqueeze(1), x.shape[-1]).squeeze(1) > 0
                    for fuse, out in ((True, fused), (False, base)):
                        region_err[rname][fuse].append(region_colour_error(out, x, m).cpu())
                for name, (d, s) in edits.items():
                    ue = model.render_edit(w, d, s, fuse=False)
                    fe = model.render_edit(w, d, s, x=x, base=base, fuse=True)
                    k = change_kept(base, ue, fused, fe)
                    res["kept"].setdefault(name, {"pixel": [], "high": []})
                    res["kept"][name]["pixel"] += k["pixel"].tolist()
                    res["kept"][name]["high"] += k["high"].tolist()
        lat = {}
        for fuse in (True, False):
            amp = lattice_amplitude(torch.cat(errs[fuse]))
            lat["fused" if fuse else "unfused"] = {p: _mean(amp[p].tolist()) for p in LATTICE_PERIODS}
        lat["margin"] = {p: lat["fused"][p] - lat["unfused"][p] for p in LATTICE_PERIODS}
        res["lattice"][set_name] = lat
        res["colour"][set_name] = {"LL_fused": _mean(torch.cat(ll[True]).tolist()),
                                   "LL_unfused": _mean(torch.cat(ll[False]).tolist()),
                                   "high_fused": _mean(torch.cat(high[True]).tolist()),
                                   "high_unfused": _mean(torch.cat(high[False]).tolist()),
                                   "mean_colour_offset": _mean(torch.cat(offset).tolist())}
    res["kept"] = {n: {k: _mean(v) for k, v in d.items()} for n, d in res["kept"].items()}
    for rname, errs in region_err.items():
        fused_e, base_e = torch.cat(errs[True]), torch.cat(errs[False])
        n = int((~torch.isnan(fused_e)).sum())
        if n:
            res["regions"][rname] = {"faces": n, "fused": _mean(fused_e.tolist()), "unfused": _mean(base_e.tolist()),
                                     "fused_p95": float(fused_e[~torch.isnan(fused_e)].quantile(0.95))}
    return res


def markdown(results, meta) -> str:
    lines = [f"# Fusion on vs off ({meta['n_faces']} held-out faces, seeds {meta['seed_offset']}+"
             f"{', 2 photos' if meta['photos'] else ''}; {meta['device']})", ""]
    for name, r in results.items():
        lines += [f"## {name} (fused resolutions {r['fused_resolutions']}, edit_mode {r['edit_mode']}, "
                  f"edit_gate {r['edit_gate']}{', cascade' if r.get('cascade') else ''})", "",
                  "| edit | strength | pixel change kept | high-band change kept |", "|---|---|---|---|"]
        for e, k in r["kept"].items():
            lines.append(f"| {e} | {r['strengths'][e]:g} | {k['pixel']:.3f} | {k['high']:.3f} |")
        lines += ["", "| images | lattice p | fused | unfused | fused − unfused |", "|---|---|---|---|---|"]
        for s, lat in r["lattice"].items():
            for p in LATTICE_PERIODS:
                lines.append(f"| {s} | {p} | {lat['fused'][p]:.3f} | {lat['unfused'][p]:.3f} "
                             f"| {lat['margin'][p]:+.3f} |")
        lines += ["", "| images | LL L2 fused | LL L2 unfused | high-band L2 fused | high-band L2 unfused | "
                      "mean colour offset fused vs unfused |", "|---|---|---|---|---|---|"]
        for s, c in r["colour"].items():
            lines.append(f"| {s} | {c['LL_fused']:.5f} | {c['LL_unfused']:.5f} | {c['high_fused']:.5f} | "
                         f"{c['high_unfused']:.5f} | {c['mean_colour_offset']:.4f} |")
        if r.get("regions"):
            lines += ["", "| region (faces that have it) | faces | colour error fused | unfused | fused, 95th pct |",
                      "|---|---|---|---|---|"]
            for rname, c in r["regions"].items():
                lines.append(f"| {rname} | {c['faces']} | {c['fused']:.4f} | {c['unfused']:.4f} | "
                             f"{c['fused_p95']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_refusing_existing(build_parser(), argv, OUTPUTS)
    if args is None:
        return 2
    try:
        device = resolve_device(args.device)
        models = _models(args)
        shipped = load_shipped(args.bundle)
    except (BundleError, ValueError, FileNotFoundError) as err:
        return fail(str(err))
    t0 = time.time()
    progress = not args.no_progress
    seeds = range(args.seed_offset, args.seed_offset + args.n)
    faces = torch.stack([face_tensor(render_face(s)) for s in tqdm(seeds, desc="faces", disable=not progress)])
    regions = attribute_regions(seeds, faces.shape[-1])
    results = {}
    for name, path in models.items():
        try:
            model = WaGI.load(path).to(device).eval()
        except Exception as err:  # one line per unusable model
            print(f"--model {name}: skipped: {err}", file=sys.stderr)
            continue
        if not isinstance(model.fusion, WaveletFusion):
            print(f"--model {name}: skipped: it has no wavelet fusion", file=sys.stderr)
            continue
        unknown = [r for r in args.drop_level if r not in model.fusion.resolutions]
        if unknown:
            print(f"--model {name}: skipped: --drop-level {unknown[0]} is not one of its fusion resolutions "
                  f"{model.fusion.resolutions}", file=sys.stderr)
            continue
        if args.cascade and model.fusion.source != "residual":
            print(f"--model {name}: skipped: --cascade needs a fusion on the residual (its source is "
                  f"{model.fusion.source!r})", file=sys.stderr)
            continue
        model.fusion.resolutions = [r for r in model.fusion.resolutions if r not in args.drop_level]
        model.fusion.cascade = model.fusion.cascade or args.cascade
        apply_edit_fusion_flags(model, args)
        photos = None if args.no_photos else sample_photos(model.image_size).to(device)
        comps, _ = sefa_directions(model.generator)
        edits = {}
        for k in range(0 if args.no_edits else 3):
            for sign in (1, -1):
                edits[f"sefa{k}{'+' if sign > 0 else '-'}"] = (comps[k].to(device), sign * args.strength)
        for dname, d in ({} if args.no_edits else shipped).items():
            try:
                check_direction_fits(d.entry, model.generator, dname)
            except ValueError:
                continue
            edits[dname] = (d.direction.to(device), float(d.strength))
        r = evaluate(model, faces.to(device), photos, edits, args.batch_size, progress, regions=regions)
        r["cascade"] = model.fusion.cascade
        r["fused_resolutions"] = list(model.fusion.resolutions)
        r["edit_mode"] = model.fusion.edit_mode
        r["edit_gate"] = list(model.fusion.edit_gate) if model.fusion.edit_gate else None
        r["edit_signal"] = model.fusion.edit_signal
        r["strengths"] = {e: s for e, (_, s) in edits.items()}
        results[name] = r
    if not results:
        return fail("no model with a wavelet fusion could be evaluated")
    meta = {"n_faces": args.n, "seed_offset": args.seed_offset, "photos": not args.no_photos,
            "device": str(device), "torch": torch.__version__, "seconds": round(time.time() - t0, 1)}
    md = markdown(results, meta)
    atomic_write(args.output / "fusion.md", md)
    atomic_write(args.output / "fusion.json", json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(md)
    print(f"{time.time() - t0:.0f} s -> {args.output}/fusion.md, fusion.json")
    return 0


if __name__ == "__main__":
    with torch.no_grad():
        run_main(main)
