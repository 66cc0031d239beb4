#!/usr/bin/env python
"""FD-judge: Fréchet distance between generator samples and real demo faces in the attribute judge's features.

    python scripts/fd_judge.py                                          # the bundled generator, 5000 vs 5000
    python scripts/fd_judge.py --generator old=pretrained/demo/swagan128.pt --generator new=runs/g.pt --n 5000

Not FID: the features are the demo attribute judge's (wagi.models.judge, 512-D: the global mean and max
of its last stage), not Inception's, so the numbers compare generators of the demo domain with each
other and nothing else. Real faces are held-out seeds FD_REAL_SEED_OFFSET + i (1,100,000+, used by
nothing else); samples are g_ema(z) with z ~ N(0, I) from torch seed --seed, no truncation unless
--truncation is given; z and the noise maps come from torch seed --seed, the same for every generator.
Prints one line per generator (with its pixel statistics: RGB std and the share of values outside [-1, 1]
before the clamp, beside the real faces' line) and a second one with the judge's decisions that differ most
from the real faces' (share of faces with each binary attribute, class frequencies of the others; the gap of
an attribute is the total variation distance between the two decision distributions), and writes --json.
Exit status: 0 done; 2 bad arguments or unreadable files.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

import torch
from tqdm import tqdm

from wagi.checkpoint import load_generator
from wagi.cli import add_trust_flag, named_path, positive_int
from wagi.data.demo_faces import TEST_SEED_OFFSET, face_tensor, render_face
from wagi.devices import DEVICE_CHOICES, resolve_device
from wagi.editing.shipped import DEMO_BUNDLE
from wagi.fileio import atomic_write
from wagi.metrics import feature_statistics, frechet_distance
from wagi.models.judge import load_judge

FD_REAL_SEED_OFFSET = TEST_SEED_OFFSET + 100_000  # real faces of FD-judge: a held-out range nothing else uses


class PixelStats:
    """Running per-channel mean / std of images in [-1, 1] and the share of values outside that range
    (generator samples are measured before the clamp the judge sees)."""

    def __init__(self):
        self.n, self.out = 0, 0
        self.s = torch.zeros(3, dtype=torch.float64)
        self.ss = torch.zeros(3, dtype=torch.float64)

    def add(self, img: torch.Tensor) -> None:
        x = img.detach().double().cpu().transpose(0, 1).reshape(3, -1)
        self.n += x.shape[1]
        self.s += x.sum(1)
        self.ss += x.square().sum(1)
        self.out += int((x.abs() > 1).sum())

    def summary(self) -> dict:
        mean = self.s / self.n
        std = (self.ss / self.n - mean.square()).clamp_min(0).sqrt()
        return {"mean": [round(v, 4) for v in mean.tolist()], "std": [round(v, 4) for v in std.tolist()],
                "out_of_range": round(self.out / (3 * self.n), 5)}


class DecisionRates:
    """Running frequencies of the judge's decisions: share of images with each binary attribute, class
    frequencies of the categorical ones."""

    def __init__(self, judge):
        self.binary, self.n = set(judge.binary), 0
        self.counts = {}

    def add(self, logits: dict) -> None:
        for name, v in logits.items():
            v = v.detach().float().cpu()
            c = (v > 0).sum().reshape(1) if name in self.binary else torch.bincount(v.argmax(1), minlength=v.shape[1])
            self.counts[name] = self.counts.get(name, 0) + c.double()
        self.n += next(iter(logits.values())).shape[0]

    def summary(self) -> dict:
        """``{attribute: [rate]}`` (binary) or ``{attribute: [frequency of each class]}``."""
        return {k: [round(float(x) / self.n, 5) for x in c] for k, c in self.counts.items()}


def decision_gaps(rates: dict, real: dict) -> dict:
    """Total variation distance per attribute between two :meth:`DecisionRates.summary` results."""
    gaps = {}
    for k, r in real.items():
        g = rates[k]
        gaps[k] = abs(g[0] - r[0]) if len(r) == 1 else 0.5 * sum(abs(a - b) for a, b in zip(g, r))
    return {k: round(v, 5) for k, v in sorted(gaps.items(), key=lambda kv: -kv[1])}


def _embed(judge, img, rates):
    if rates is None:
        return judge.features(img).float().cpu()
    feats, logits = judge.features_and_logits(img)
    rates.add(logits)
    return feats.float().cpu()


@torch.no_grad()
def real_features(judge, n, batch, device, progress=True, stats=None, rates=None):
    feats, chunk = [], []
    for seed in tqdm(range(FD_REAL_SEED_OFFSET, FD_REAL_SEED_OFFSET + n), desc="real faces", unit="face",
                     disable=not progress):
        chunk.append(face_tensor(render_face(seed, 128)))
        if stats is not None:
            stats.add(chunk[-1][None])
        if len(chunk) == batch:
            feats.append(_embed(judge, torch.stack(chunk).to(device), rates))
            chunk = []
    if chunk:
        feats.append(_embed(judge, torch.stack(chunk).to(device), rates))
    return torch.cat(feats)


@torch.no_grad()
def sample_features(judge, g, latent_avg, n, batch, device, seed=0, truncation=1.0, progress=True, stats=None,
                    rates=None):
    gen = torch.Generator().manual_seed(seed)
    feats = []
    for i in tqdm(range(0, n, batch), desc="samples", unit="batch", disable=not progress):
        z = torch.randn(min(batch, n - i), g.style_dim, generator=gen).to(device)
        img, _ = g([z], truncation=truncation, truncation_latent=latent_avg, randomize_noise=True)
        if stats is not None:
            stats.add(img)
        feats.append(_embed(judge, img.clamp(-1, 1), rates))
    return torch.cat(feats)


def _pixel_line(summary: dict) -> str:
    std = "/".join(f"{v:.3f}" for v in summary["std"])
    return f"RGB std {std}, {100 * summary['out_of_range']:.2f} % of values outside [-1, 1]"


def _gap_line(gaps: dict, decisions: dict, name: str, top: int = 4) -> str:
    parts = []
    for k in list(gaps)[:top]:
        g, r = decisions[name][k], decisions["real"][k]
        detail = f"{g[0]:.2f} of the samples vs {r[0]:.2f}" if len(r) == 1 else "classes " + "/".join(
            f"{x:.2f}" for x in g) + " vs " + "/".join(f"{x:.2f}" for x in r)
        parts.append(f"{k} {gaps[k]:.2f} ({detail})")
    return "; ".join(parts)


def main(argv=None) -> int:
    head, _, rest = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(description=head, epilog=rest, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--generator", action="append", default=[], type=named_path, metavar="NAME=PATH")
    p.add_argument("--judge", type=Path, default=DEMO_BUNDLE / "judge.pt")
    p.add_argument("--n", type=positive_int, default=5000, help="samples and real faces each")
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=100)
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    add_trust_flag(p)
    args = p.parse_args(argv)
    gens = args.generator or [("swagan128", DEMO_BUNDLE / "swagan128.pt")]
    try:
        device = resolve_device(args.device)
        judge = load_judge(args.judge).to(device).eval()
        loaded = {}
        for name, path in gens:
            g, avg, _ = load_generator(path, compute_latent_avg=True, trust=args.trust_checkpoint)
            loaded[name] = (g.to(device).eval(), avg.to(device) if avg is not None else None, str(path))
    except Exception as err:  # one line: missing judge / generator, foreign file
        print(f"error: {err}", file=sys.stderr)
        return 2
    t0 = time.time()
    real_stats, real_rates = PixelStats(), DecisionRates(judge)
    mu_r, sig_r = feature_statistics(real_features(judge, args.n, args.batch_size, device, stats=real_stats,
                                                   rates=real_rates))
    results = {"n": args.n, "real_seed_offset": FD_REAL_SEED_OFFSET, "judge": str(args.judge), "seed": args.seed,
               "truncation": args.truncation, "device": str(device), "fd_judge": {}, "generators": {},
               "pixels": {"real": real_stats.summary()}, "decisions": {"real": real_rates.summary()},
               "decision_gaps": {}}
    print(f"pixels real: {_pixel_line(results['pixels']['real'])}")
    for name, (g, avg, path) in loaded.items():
        torch.manual_seed(args.seed)  # the noise maps (randomize_noise): the same stream for every generator
        stats, rates = PixelStats(), DecisionRates(judge)
        mu, sig = feature_statistics(sample_features(judge, g, avg, args.n, args.batch_size, device, args.seed,
                                                     args.truncation, stats=stats, rates=rates))
        fd = frechet_distance(mu, sig, mu_r, sig_r)
        results["fd_judge"][name] = fd
        results["generators"][name] = path
        results["pixels"][name] = stats.summary()
        results["decisions"][name] = rates.summary()
        gaps = results["decision_gaps"][name] = decision_gaps(results["decisions"][name], results["decisions"]["real"])
        print(f"FD-judge {name}: {fd:.4f}  ({args.n} samples vs {args.n} real faces); "
              f"pixels {_pixel_line(results['pixels'][name])}")
        print(f"  decisions of {name} farthest from the real faces': " + _gap_line(gaps, results["decisions"], name))
    results["seconds"] = round(time.time() - t0, 1)
    if args.json:
        atomic_write(args.json, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
