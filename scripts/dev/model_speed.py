#!/usr/bin/env python
"""CPU inversion speed of WaGI model files side by side (the quickstart floor: >= 10 img/s at batch 8).

    OMP_NUM_THREADS=2 python scripts/dev/model_speed.py --model A=path/a.pt --model B=path/b.pt [--rounds 9]

Held-out demo faces at the models' size, `invert` at --batch, fp32, torch's threads; after one warm-up call
each, the models are called in turn for --rounds rounds (a shared machine slows them alike) and the median is
printed as ms/img and img/s. --json writes the per-round times.
"""
import argparse
import json
import runpy
import statistics
import sys
import time
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[1] / "_require_wagi.py"))  # one line, exit 2 without wagi

import torch  # noqa: E402

from wagi.cli import named_path  # noqa: E402
from wagi.data.demo_faces import TEST_SEED_OFFSET, DemoFaceDataset  # noqa: E402
from wagi.models.wagi import WaGI  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    p.add_argument("--model", type=named_path, action="append", required=True, metavar="NAME=PATH")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    models = {name: WaGI.load(path).eval() for name, path in args.model}
    size = next(iter(models.values())).image_size
    faces = DemoFaceDataset(args.batch, size, seed_offset=TEST_SEED_OFFSET)
    x = torch.stack([faces[i] for i in range(args.batch)])
    times = {n: [] for n in models}
    with torch.no_grad():
        for m in models.values():
            m.invert(x)
        for _ in range(args.rounds):
            for n, m in models.items():
                t0 = time.perf_counter()
                m.invert(x)
                times[n].append(time.perf_counter() - t0)
    result = {"batch": args.batch, "threads": torch.get_num_threads(), "torch": torch.__version__, "models": {}}
    for n, t in times.items():
        med = statistics.median(t)
        result["models"][n] = {"ms_per_img": 1000 * med / args.batch, "images_per_s": args.batch / med,
                               "round_s": t}
        print(f"{n}: {1000 * med / args.batch:.1f} ms/img, {args.batch / med:.1f} img/s (median of {args.rounds})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
