#!/usr/bin/env python
"""Edit images (or saved latents) along a latent direction and write one strip per image over strengths.

    python scripts/edit.py --input photos/ --direction boundary:smile.npy --strengths -3,0,3 --output outputs/smile/
    python scripts/edit.py --input examples/ --direction boundary:glasses    # a direction shipped with the demo
    python scripts/edit.py --input a.png --direction sefa:0 --layers 0:4
    python scripts/edit.py --input a.png --direction ganspace:54,7,8,20          # HFGI-style GANSpace edit
    python scripts/edit.py --input a.png --direction text:"a smiling face" --neutral "a face" --beta 0.1
    python scripts/edit.py --latents inverted/latents.pt --direction mapper:mapper.pt

Directions (KIND:SPEC): boundary:FILE (.npy/.pt InterFaceGAN boundary; fit one with
scripts/train_boundary.py), sefa:INDEX, ganspace:INDEX or ganspace:INDEX,START,END,STRENGTH,
text:PROMPT (StyleCLIP global direction; needs open_clip or clip with weights), mapper:FILE
(StyleCLIP LevelsMapper checkpoint). --layers START:END limits any of them to W+ entries [START, END).

Images are inverted and edited with the wavelet fusion re-applied through the aligner, so the input's
details land on the edited image (--no-fusion: plain generator images). With --latents there is no
input image, so edits are plain generator images. Outputs: OUTPUT/<input name>.png, the input (as the
model sees it) then one panel per strength, left to right, each captioned ("input", "-3", "+0", "+3");
--plain writes the edit panels alone, without captions; --individual also writes
OUTPUT/<input name>_s<strength>.png.

Exit status: 0 all done, 1 some inputs failed (each named on one line), 2 bad arguments, missing
checkpoint or unusable direction.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, batch_size, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

import torch
from tqdm import tqdm

from wagi.devices import DEVICE_CHOICES, resolve_device
from wagi.editing import EditOptions, build_edit, load_latents, name_key, parse_layer_range, render_edits
from wagi.editing.latents import LatentFileError
from wagi.fileio import remove_stale_temps
from wagi.imageio import (
    POLICIES,
    ImageIOError,
    InputNotFoundError,
    LoadReport,
    ProtectedPaths,
    find_images,
    iter_batches,
    mark_output_folder,
    save_image,
    save_strip,
)
from wagi.inference import DEMO_CKPT, resolve_checkpoint, shown_path
from wagi.models.wagi import WaGI
from wagi.precision import PRECISIONS, precision_context

DEFAULT_CKPT = DEMO_CKPT
DEFAULT_OUTPUT = Path("outputs") / "edits"  # relative to the working directory, inside the ignored outputs/
NUMERIC_LIST_FLAGS = ("--strengths",)


def _join_numeric_lists(argv: Sequence[str]) -> List[str]:
    """argparse reads ``--strengths -3,0,3`` as two flags ("-3,0,3" starts with '-'); glue the value on."""
    out, i = [], 0
    argv = list(argv)
    while i < len(argv):
        if argv[i] in NUMERIC_LIST_FLAGS and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def parse_strengths(text: str) -> Tuple[float, ...]:
    try:
        values = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--strengths must be comma-separated numbers, e.g. -3,0,3; got {text!r}") from None
    if not values:
        raise ValueError("--strengths is empty")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"--strengths must be finite numbers; got {', '.join(map(str, bad))}")
    return values


def build_parser() -> argparse.ArgumentParser:
    head, _, rest = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(description=head, epilog=rest, formatter_class=DefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="PATH", help="image files, folders (recursive) or globs")
    src.add_argument("--latents", nargs="+", metavar="FILE", help="saved W+ codes (.pt/.npy/.npz, see invert.py)")
    p.add_argument("--ckpt", type=Path, default=None, metavar="PATH",
                   help=f"WaGI model checkpoint (default {shown_path(DEFAULT_CKPT)})")
    p.add_argument("--direction", required=True, metavar="KIND:SPEC", help="see the list below")
    p.add_argument("--strengths", default=None,
                   help="comma-separated strengths (default -3,0,3; -s,0,s for a shipped direction of documented "
                        "strength s; 0,0.5,1 for mapper and HFGI GANSpace edits)")
    p.add_argument("--layers", default=None, metavar="START:END", help="apply only to W+ entries [START, END)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"output folder (default {DEFAULT_OUTPUT})")
    p.add_argument("--individual", action="store_true", help="also write each strength as its own image")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32: the model as it is; bf16 / fp16: inversion and edits under autocast (GPU)")
    p.add_argument("--plain", action="store_true",
                   help="strips of the edit panels only: no input panel, no strength captions")
    p.add_argument("--no-fusion", action="store_true", help="do not re-apply the wavelet fusion to edited images")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--batch-size", type=batch_size, default=8)
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--policy", choices=POLICIES, default="center_crop", help="how non-square images are fitted")
    p.add_argument("--seed", type=int, default=0, help="seed of GANSpace / StyleCLIP sampling")
    p.add_argument("--pca-samples", type=int, default=10_000, help="mapped samples for GANSpace PCA")
    p.add_argument("--sefa-to-rgbs", action="store_true", help="SeFa: also factorise the to_rgbs modulation weights")
    p.add_argument("--neutral", default="a face", help="StyleCLIP neutral prompt (default 'a face')")
    p.add_argument("--beta", type=float, default=0.1, help="StyleCLIP relevance threshold (default 0.1)")
    p.add_argument("--clip-model", default="ViT-B-32", help="CLIP model name (open_clip naming)")
    p.add_argument("--clip-weights", default="openai", help="open_clip weights tag or local checkpoint file")
    p.add_argument("--clip-stats", default=None, metavar="FILE",
                   help="StyleCLIP W+ statistics cache: read if it exists, else computed and written there")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(_join_numeric_lists(sys.argv[1:] if argv is None else argv))
    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        strengths = parse_strengths(args.strengths) if args.strengths is not None else None
        layer_range = parse_layer_range(args.layers) if args.layers else None
        device = resolve_device(args.device)
        ckpt = resolve_checkpoint(args.ckpt, DEFAULT_CKPT)
    except (ValueError, FileNotFoundError) as err:
        return fail(str(err))
    try:
        model = WaGI.load(ckpt).to(device).eval()
    except Exception as err:  # any unreadable / mismatched checkpoint: one line, exit 2
        return fail(f"cannot load {ckpt}: {err}")
    options = EditOptions(layer_range=layer_range, seed=args.seed, pca_samples=args.pca_samples,
                          sefa_include_to_rgbs=args.sefa_to_rgbs, neutral=args.neutral, beta=args.beta,
                          clip_model=args.clip_model, clip_weights=args.clip_weights, clip_stats=args.clip_stats,
                          progress=sys.stderr.isatty())
    try:
        with torch.no_grad():
            edit = build_edit(model, args.direction, options)
    except Exception as err:  # bad spec, unreadable direction file, CLIP missing: one line, exit 2
        return fail(str(err))
    strengths = strengths or edit.default_strengths
    for stale in remove_stale_temps(args.output, recursive=True):  # writes of a killed run, unchanged for minutes
        print(f"{stale}: removed, a temporary file of an interrupted earlier run", file=sys.stderr)
    for note in edit.notes:
        print(note)

    n_failed, n_done, t0 = 0, 0, time.time()

    def log_failure(message: str) -> None:
        nonlocal n_failed
        n_failed += 1
        print(message, file=sys.stderr, flush=True)

    def write(name: str, panels: torch.Tensor, protected, source: Optional[torch.Tensor] = None) -> None:
        nonlocal n_done
        if "\x00" in name:  # no file system takes it; say which entry, printably
            log_failure(f"{name!r}: refusing an output name with a NUL byte")
            return
        stem = name_key(name)  # relative path without an image extension
        if os.path.isabs(stem) or ".." in stem.split("/"):
            log_failure(f"{name}: refusing an output name that leaves the output folder")
            return
        if not torch.isfinite(panels).all():
            log_failure(f"{name}: the edit rendered NaN or infinite values (non-finite latent, direction or "
                        "weights); not written")
            return
        try:
            tiles, labels = list(panels), [f"{s:+g}" for s in strengths]
            if source is not None:
                tiles, labels = [source.to(panels.device, panels.dtype)] + tiles, ["input"] + labels
            save_strip(tiles, args.output / f"{stem}.png", args.overwrite, inputs=protected,
                       labels=None if args.plain else labels)
            if args.individual:
                for s, img in zip(strengths, panels):
                    save_image(img, args.output / f"{stem}_s{s:+g}.png", args.overwrite, inputs=protected)
        except (ImageIOError, OSError, ValueError) as err:
            log_failure(str(err))
            return
        n_done += 1

    if args.input is not None:
        fuse = not args.no_fusion
        if fuse and model.fusion is None:
            print("this model has no fusion module: edits are plain generator images")
        try:
            items = find_images(args.input, missing="warn", log=log_failure, exclude=[args.output])
        except InputNotFoundError as err:
            log_failure(str(err))
            items = []
        protected = ProtectedPaths(items)
        report = LoadReport(log=log_failure)
        try:
            mark_output_folder(args.output)  # a later scan of a parent folder leaves these edits out
        except OSError as err:
            return fail(str(err))
        bar = tqdm(total=len(items), unit="img", desc="edit", disable=None)
        for batch, batch_items in iter_batches(items, model.image_size, args.batch_size, args.policy, report=report):
            with precision_context(device, args.precision):
                out = render_edits(model, batch.to(device), edit, strengths, fuse=fuse)  # (S, B, 3, H, W)
            out = out.float()
            for b, item in enumerate(batch_items):
                write(item.rel, out[:, b], protected, source=None if args.plain else batch[b])
            bar.update(len(batch_items))
        bar.close()
    else:
        print("editing saved latents: no wavelet fusion (there is no input image to take details from)")
        codes: List[Tuple[str, torch.Tensor]] = []
        for path in args.latents:
            try:
                codes += load_latents(path, model.n_latent, model.generator.style_dim, on_bad_entry=log_failure)
            except (LatentFileError, FileNotFoundError) as err:
                log_failure(str(err))
        protected = ProtectedPaths([])
        for start in range(0, len(codes), args.batch_size):
            chunk = codes[start:start + args.batch_size]
            w = torch.stack([c for _, c in chunk]).to(device=device, dtype=model.latent_avg.dtype)
            with precision_context(device, args.precision):
                out = render_edits(model, w, edit, strengths, fuse=False).float()
            for b, (name, _) in enumerate(chunk):
                write(name, out[:, b], protected)

    if n_done == 0 and not n_failed:
        print("nothing to edit: the inputs hold no image or latent", file=sys.stderr)
    print(f"edited {n_done} input(s) into {args.output} with {args.direction} at strengths "
          f"{', '.join(f'{s:g}' for s in strengths)}; {n_failed} failed; {time.time() - t0:.1f} s")
    return 1 if n_failed or n_done == 0 else 0


if __name__ == "__main__":
    run_main(main)
