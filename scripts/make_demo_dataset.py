#!/usr/bin/env python
"""Write demo-domain faces to PNG files (and their attributes to labels.jsonl), or one sample grid.

    python scripts/make_demo_dataset.py --output data/demo_test --n 500 --size 128 --seed-offset 1001000 --labels
    python scripts/make_demo_dataset.py --grid docs/img/demo_faces_grid.png --n 32 --size 128

File ``DIR/{i:06d}.png`` is the face of seed ``seed-offset + i``. Training seeds are [0, 1000000);
seeds from 1000000 (the default offset) on are never trained on, but the first data.demo_test_size of
them (64 by default) are the validation faces of training runs: a test set that validation never saw
starts higher (docs/results.md uses 1001000). Existing files are never replaced without --overwrite.
Exit status: 0 on success, 2 on bad arguments or when outputs exist.
"""
import argparse
import sys
from pathlib import Path

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

from wagi.data.demo_faces import SUPPORTED_SIZES, TEST_SEED_OFFSET, demo_grid, write_demo_dataset


def write_cache(args) -> None:
    """Render seeds [0, n) once, in parallel, into the file that ``data.preload`` + ``data.cache_file`` read."""
    import time

    from wagi.builders import dataset_source
    from wagi.checkpoint import save_checkpoint
    from wagi.config import DataConfig
    from wagi.data.demo_faces import DemoFaceDataset
    from wagi.training.data import preload_images, read_image_cache

    source = dataset_source(DataConfig(demo=True), args.n, args.size)
    if args.cache.exists() and not args.overwrite and read_image_cache(args.cache, source) is not None:
        print(f"{args.cache} already holds these {args.n} faces")
        return
    t0 = time.perf_counter()
    images = preload_images(DemoFaceDataset(args.n, args.size, seed_offset=0), args.workers, progress=False)
    dt = time.perf_counter() - t0
    save_checkpoint({"source": source, "images": images}, args.cache)
    print(f"wrote {args.cache}: {args.n} faces at {args.size} px in {dt:.1f} s ({args.n / dt:.0f} faces/s, "
          f"{args.workers} workers)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", type=Path, metavar="DIR", help="output folder for DIR/000000.png, ...")
    where.add_argument("--grid", type=Path, help="write one PNG grid of the n faces instead of files")
    where.add_argument("--cache", type=Path,
                       help="write the preload cache of the first n TRAINING faces (seeds 0..n-1) that "
                            "data.cache_file of both trainers reads (uint8 tensor + source record)")
    ap.add_argument("--n", type=int, default=500, help="number of faces")
    ap.add_argument("--size", type=int, default=128, choices=SUPPORTED_SIZES, help="resolution")
    ap.add_argument("--seed-offset", type=int, default=TEST_SEED_OFFSET,
                    help=f"seed of the first face (default {TEST_SEED_OFFSET}: never trained on, but its first 64 "
                         "are the trainers' validation faces; docs/results.md's test set starts at "
                         f"{TEST_SEED_OFFSET + 1000})")
    ap.add_argument("--workers", type=int, default=1, help="processes rendering in parallel")
    ap.add_argument("--labels", action="store_true", help="also write labels.jsonl with the attributes of each file")
    ap.add_argument("--overwrite", action="store_true", help="replace existing output files")
    ap.add_argument("--nrow", type=int, default=8, help="faces per row of --grid")
    args = ap.parse_args(argv)

    try:
        if args.cache is not None:
            write_cache(args)
        elif args.grid is not None:
            if args.grid.exists() and not args.overwrite:
                raise FileExistsError(f"{args.grid} already exists; pass --overwrite to replace it")
            from wagi.fileio import atomic_write

            grid = demo_grid(range(args.seed_offset, args.seed_offset + args.n), args.size, args.nrow)
            atomic_write(args.grid, lambda f: grid.save(f, format="PNG", optimize=True))
            print(f"wrote {args.grid}")
        else:
            paths = write_demo_dataset(args.output, args.n, args.size, args.seed_offset, args.workers,
                                       labels=args.labels, overwrite=args.overwrite)
            print(f"wrote {len(paths)} images to {args.output}" + (" and labels.jsonl" if args.labels else ""))
    except (OSError, ValueError) as e:  # OSError: an existing output, a full disk, a read-only folder
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run_main(main)
