#!/usr/bin/env python
"""How much of the image the edit augmentation's change mask covers, for candidate thresholds.

    OMP_NUM_THREADS=2 python scripts/dev/edit_aug_mask_calibration.py --n 24 --json out.json

For held-out strength-tuning faces (seeds 1,006,000+) inverted by the bundled `wagi` (fusion off: the latent
w and x̂0 = G(w)), the per-pixel change a = mean over colours |G(w + s·d) − G(w)| (what `fusion.edit_aug.mask`
thresholds, before its dilation) is measured for
* the shipped directions at their documented strengths (towards the other state of the attribute), split into
  the pixels inside the attribute's renderer mask (dilated 3 px) and outside it: a good `hi` is reached inside
  and not outside;
* the generator's top SeFa components and random unit directions at |s| = 2, 4, 6 (what the augmentation draws):
  the share of pixels with a > t for each candidate t.
"""
import argparse
import json
import random
import runpy
import sys
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[1] / "_require_wagi.py"))  # one line, exit 2 without wagi

import numpy as np  # noqa: E402
import torch  # noqa: E402

from wagi.data.demo.attributes import sample_attributes  # noqa: E402
from wagi.data.demo.labels import attribute_mask  # noqa: E402
from wagi.data.demo_faces import face_tensor, render_face  # noqa: E402
from wagi.editing.factorization import sefa_directions  # noqa: E402
from wagi.editing.shipped import DEMO_BUNDLE, load_shipped  # noqa: E402
from wagi.models.wagi import WaGI  # noqa: E402

THRESHOLDS = (0.02, 0.06, 0.1, 0.15, 0.2, 0.3)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--seed-offset", type=int, default=1_006_000)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = WaGI.load(DEMO_BUNDLE / "wagi.pt").eval()
    seeds = list(range(args.seed_offset, args.seed_offset + args.n))
    attrs = [sample_attributes(random.Random(s)) for s in seeds]
    x = torch.stack([face_tensor(render_face(s, 128)) for s in seeds])
    with torch.no_grad():
        w = model.encode(x)
        base = model.decode(w)

    def change(shift):  # shift (N or 1, n_latent or 1, D)
        with torch.no_grad():
            return (model.decode(w + shift) - base).abs().mean(1)  # (N, S, S)

    out = {"n": args.n, "seed_offset": args.seed_offset, "thresholds": THRESHOLDS, "shipped": {}, "draws": {}}
    print("shipped direction | strength | a inside mask: median / 25th pct | outside: median / 95th pct")
    for name, d in load_shipped(DEMO_BUNDLE, n_latent=model.n_latent, style_dim=w.shape[-1]).items():
        has = torch.tensor([bool(a.get(d.attribute)) for a in attrs], dtype=torch.float32)
        sign = (1 - 2 * has).view(-1, 1, 1)  # add where absent, remove where present
        direction = d.direction.view(1, -1, w.shape[-1]) if d.direction.dim() == 2 else d.direction
        a = change(sign * d.strength * direction.to(w))
        inside, outside = [], []
        for i, at in enumerate(attrs):
            m = torch.from_numpy(attribute_mask(at, d.attribute, size=128, dilate=3))
            inside.append(a[i][m])
            outside.append(a[i][~m])
        ins, outs = torch.cat(inside), torch.cat(outside)
        row = {"strength": d.strength, "inside_median": float(ins.median()), "inside_p25": float(ins.quantile(0.25)),
               "outside_median": float(outs.median()), "outside_p95": float(outs.quantile(0.95)),
               "share_above": {t: [float((ins > t).float().mean()), float((outs > t).float().mean())]
                               for t in THRESHOLDS}}
        out["shipped"][name] = row
        print(f"{name} | {d.strength} | {row['inside_median']:.3f} / {row['inside_p25']:.3f} | "
              f"{row['outside_median']:.3f} / {row['outside_p95']:.3f}")
    sefa, _ = sefa_directions(model.generator, n_components=8)
    g = torch.Generator().manual_seed(0)
    print("\ndraw | |s| | share of pixels with a > " + " / ".join(str(t) for t in THRESHOLDS))
    for s in (2.0, 4.0, 6.0):
        for source in ("sefa", "random"):
            shares = []
            for k in range(8):
                if source == "sefa":
                    d = sefa[k]
                else:
                    d = torch.randn(w.shape[-1], generator=g)
                    d = d / d.norm()
                sign = 1.0 if k % 2 == 0 else -1.0
                a = change(sign * s * d.view(1, 1, -1).to(w))
                shares.append([float((a > t).float().mean()) for t in THRESHOLDS])
            mean = np.mean(shares, axis=0).tolist()
            out["draws"][f"{source}_{s}"] = mean
            print(f"{source} | {s} | " + " / ".join(f"{v:.2f}" for v in mean))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
