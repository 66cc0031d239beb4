"""CPU inversion speed of the demo WaGI model with its generator widened (``wagi.models.widen``), beside the original.

    OMP_NUM_THREADS=2 python scripts/dev/widen_speed.py --threads 2 --batch 8 --runs 9 \\
        --table 4:160,8:160,16:160,32:96,64:96 --table 4:128,8:128,16:128,32:96,64:96

Loads ``pretrained/demo/wagi.pt`` as ``scripts/benchmark.py --only demo`` does (``WaGI.load``, fp32, eval),
makes one copy per ``--table`` whose generator is ``widen_generator(generator, table)``, checks that each
copy inverts the same held-out demo faces as the original (max abs difference: the widening preserves the
function), then times ``model.invert`` at ``--batch``: one warm-up call per model, then ``--runs`` rounds
that call every model once in turn (interleaved, so that load from other jobs on a shared machine hits all
of them alike). Prints the median ms/img and img/s per model with the spread of the rounds; ``--json`` writes
the rows.
"""
import argparse
import copy
import json
import runpy
import statistics
import sys
import time
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[1] / "_require_wagi.py"))  # one line, exit 2 without wagi

import torch  # noqa: E402

from wagi.data.demo_faces import TEST_SEED_OFFSET, DemoFaceDataset  # noqa: E402
from wagi.models.wagi import WaGI  # noqa: E402
from wagi.models.widen import channel_table, widen_generator  # noqa: E402

DEMO_MODEL = Path(__file__).resolve().parents[2] / "pretrained" / "demo" / "wagi.pt"
IMAGE_SIZE = 128  # the demo domain


def parse_table(text: str) -> dict:
    """``'4:160,8:160'`` -> ``{4: 160, 8: 160}``."""
    try:
        return {int(r): int(c) for r, c in (item.split(":") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected resolution:channels,... e.g. 4:160,8:160; got {text!r}") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEMO_MODEL, help="a WaGI model file (default: the demo wagi.pt)")
    ap.add_argument("--table", type=parse_table, action="append", required=True,
                    help="channel table of one widened copy, resolution:channels,... (repeat for several)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=9, help="timed rounds (each calls every model once)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of the widened channels' initialisation")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    base = WaGI.load(args.model).eval()
    models = {"original": base}
    for table in args.table:
        wide = copy.deepcopy(base)
        wide.generator = widen_generator(base.generator, {**channel_table(base.generator), **table}, seed=args.seed)
        models[" ".join(f"{r}:{c}" for r, c in channel_table(wide.generator).items())] = wide
    faces = DemoFaceDataset(args.batch, IMAGE_SIZE, seed_offset=TEST_SEED_OFFSET)
    x = torch.stack([faces[i] for i in range(len(faces))])

    with torch.no_grad():
        reference = base.invert(x)[0]  # also the original's warm-up call
        differences = {name: float((m.invert(x)[0] - reference).abs().max()) for name, m in models.items()
                       if m is not base}  # the widened models' warm-up calls
        times = {name: [] for name in models}
        for _ in range(args.runs):
            for name, m in models.items():
                start = time.perf_counter()
                m.invert(x)
                times[name].append(time.perf_counter() - start)

    rows = []
    print(f"{args.model}: invert at batch {args.batch}, {torch.get_num_threads()} threads, median of {args.runs} "
          "interleaved rounds")
    for name, ts in times.items():
        median = statistics.median(ts)
        row = {"generator": "original " + " ".join(f"{r}:{c}" for r, c in channel_table(base.generator).items())
               if name == "original" else name, "batch": args.batch, "threads": torch.get_num_threads(),
               "runs": args.runs, "ms_per_img": 1000 * median / args.batch, "images_per_s": args.batch / median,
               "ms_per_img_min": 1000 * min(ts) / args.batch, "ms_per_img_max": 1000 * max(ts) / args.batch,
               "max_abs_diff_vs_original": differences.get(name, 0.0)}
        rows.append(row)
        print(f"{row['generator']:<40} {row['ms_per_img']:6.1f} ms/img ({row['ms_per_img_min']:.1f}-"
              f"{row['ms_per_img_max']:.1f})  {row['images_per_s']:5.1f} img/s  "
              f"max |diff| vs original {row['max_abs_diff_vs_original']:.1e}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
