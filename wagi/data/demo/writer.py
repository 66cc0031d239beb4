"""Demo faces as files: :func:`write_demo_dataset` (``DIR/{i:06d}.png`` and ``labels.jsonl``, in parallel)
and :func:`demo_grid` (a contact sheet of seeds).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

from PIL import Image
from tqdm import tqdm

from wagi.demo_seeds import TEST_SEED_OFFSET
from wagi.fileio import atomic_write

from .attributes import sample_attributes
from .datasets import check_seed_range
from .render import check_size, render_face, render_from_attributes

LABELS_FILE = "labels.jsonl"


def demo_file_name(index: int) -> str:
    return f"{index:06d}.png"


def _write_one(job: Tuple[str, int, int, int]) -> Dict[str, Any]:
    out_dir, index, seed, size = job
    attrs = sample_attributes(random.Random(seed))
    img = render_from_attributes(attrs, size)
    # Atomic: a killed run never leaves a truncated PNG under the final name. Not fsync'ed: the
    # files are cheap to regenerate and a dataset holds many of them.
    atomic_write(os.path.join(out_dir, demo_file_name(index)), lambda f: img.save(f, format="PNG"), durable=False)
    return {"file": demo_file_name(index), "seed": seed, "size": size, **attrs}


def write_demo_dataset(
    out_dir: Union[str, Path],
    n: int,
    size: int = 128,
    seed_offset: int = TEST_SEED_OFFSET,
    workers: int = 1,
    labels: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> List[Path]:
    """Write faces ``seed_offset + i`` as ``out_dir/{i:06d}.png`` for ``i < n``, plus
    ``labels.jsonl`` (one JSON object per file: ``file``, ``seed``, ``size`` and the attributes)
    when ``labels``. Existing files are never replaced unless ``overwrite``: the check happens
    before anything is written. Returns the written PNG paths.
    """
    check_size(size)
    check_seed_range(seed_offset, n)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / demo_file_name(i) for i in range(n)]
    targets = paths + ([out / LABELS_FILE] if labels else [])
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{len(existing)} output file(s) already exist in {out} (first: {existing[0].name}); "
            "pass overwrite=True (--overwrite) to replace them"
        )
    jobs = [(str(out), i, seed_offset + i, size) for i in range(n)]
    records: List[Dict[str, Any]] = []
    bar = tqdm(total=n, desc=f"demo faces -> {out}", unit="img", disable=not progress)
    if workers == 1:
        for job in jobs:
            records.append(_write_one(job))
            bar.update(1)
    else:
        with multiprocessing.Pool(workers) as pool:
            for rec in pool.imap(_write_one, jobs, chunksize=max(1, min(64, n // (4 * workers)))):
                records.append(rec)
                bar.update(1)
    bar.close()
    if labels:
        atomic_write(out / LABELS_FILE, "".join(json.dumps(rec, sort_keys=True) + "\n" for rec in records),
                     durable=False)
    return paths


def demo_grid(seeds: Sequence[int], size: int = 128, nrow: int = 8, padding: int = 2) -> Image.Image:
    """One RGB image showing the faces of ``seeds`` in rows of ``nrow``, on a white background."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("demo_grid needs at least one seed")
    rows = -(-len(seeds) // nrow)
    cols = min(nrow, len(seeds))
    step = size + padding
    grid = Image.new("RGB", (cols * step + padding, rows * step + padding), (255, 255, 255))
    for k, seed in enumerate(seeds):
        grid.paste(render_face(seed, size), (padding + (k % nrow) * step, padding + (k // nrow) * step))
    return grid
