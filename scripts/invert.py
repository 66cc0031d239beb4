#!/usr/bin/env python
"""Invert images with a WaGI model: reconstructions, optional latents and input|reconstruction strips.

    python scripts/invert.py                                   # bundled examples/ with the demo model
                                                               # (implies --side-by-side --overwrite)
    python scripts/invert.py --input photos/ extra.jpg "more/*.png" --output out/ --ckpt run/wagi.pt \\
        --save-latents pt --side-by-side

Inputs: files (any extension), folders (recursive) and glob patterns. Each image is brought to the
model's resolution S x S by --policy: center_crop (default: short side to S, centre square), resize
(to S x S, distorts non-square images) or pad (long side to S, padded with white). Odd colour modes
(L, LA, P, CMYK, I;16, RGBA...) are converted, EXIF rotation is applied.

Outputs under --output keep each input's path relative to the folder (or glob) it was found under
and its name, as .png at S x S:
  <rel>.png                         the reconstruction
  latents/<rel>.pt|.npy             w+ (n_latent, D) float32          (--save-latents pt|npy)
  latents.pt | latents.npz          all w+ with their names, one file (--save-latents ... --latents-bundle)
  side_by_side/<rel>.png            input | reconstruction             (--side-by-side)
Inputs are never overwritten. An image whose outputs already exist is skipped with one line (so a
re-run finishes an interrupted one) unless --overwrite is given; skipped images make the exit status 1.

Exit status: 0 every image done; 1 some input unreadable, skipped or not written (one line each, the
others are processed); 2 usage error (checkpoint missing or unreadable, no input images, bad option).
"""
import argparse
import logging
import os
import sys
from pathlib import Path

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, batch_size, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

from wagi.cli import positive_int
from wagi.devices import DEVICE_CHOICES, describe_device, resolve_device
from wagi.imageio import POLICIES, ImageIOError, InputNotFoundError, LoadReport, OutputExistsError, find_images
from wagi.inference import (
    DEFAULT_OUTPUT,
    DEMO_CKPT,
    EXAMPLES_DIR,
    LATENT_FORMATS,
    invert_folder,
    resolve_checkpoint,
    shown_path,
)
from wagi.precision import PRECISIONS

logger = logging.getLogger("wagi.scripts.invert")

DEFAULT_CKPT = DEMO_CKPT
DEFAULT_INPUT = EXAMPLES_DIR
DEFAULT_BATCH = 8


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)




def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--input", nargs="+", default=None, metavar="PATH",
                   help=f"image files, folders or glob patterns (default: the bundled {DEFAULT_INPUT})")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, metavar="DIR",
                   help=f"output folder (default: {DEFAULT_OUTPUT})")
    p.add_argument("--ckpt", type=Path, default=None, metavar="PATH",
                   help=f"WaGI model checkpoint (default: the bundled demo model {shown_path(DEFAULT_CKPT)})")
    p.add_argument("--batch-size", type=batch_size, default=DEFAULT_BATCH, metavar="N",
                   help=f"images per model call (default {DEFAULT_BATCH}; the last batch may be smaller)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                   help="auto: CUDA when available, else CPU")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32: the model as it is; bf16 / fp16: every model call under autocast (GPU; see "
                        "docs/performance.md for their accuracy)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="CPU threads for PyTorch (default: PyTorch's choice)")
    p.add_argument("--policy", choices=POLICIES, default="center_crop",
                   help="how an image of another size or shape becomes S x S (default center_crop)")
    p.add_argument("--save-latents", choices=LATENT_FORMATS, default="none",
                   help="also save w+: one .pt (torch tensor) or .npy file per image under latents/")
    p.add_argument("--latents-bundle", action="store_true",
                   help="save all latents in one file (latents.pt, or latents.npz for npy) with their names")
    p.add_argument("--side-by-side", action="store_true",
                   help="also write input | reconstruction strips under side_by_side/")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (default: skip those images, one line each, exit status 1)")
    p.add_argument("--no-fusion", action="store_true",
                   help="skip the wavelet fusion: write the plain generator image G(w+)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.latents_bundle and args.save_latents == "none":
        p.error("--latents-bundle needs --save-latents pt or npy")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    try:
        ckpt = resolve_checkpoint(args.ckpt, DEFAULT_CKPT)
        device = resolve_device(args.device)
    except (FileNotFoundError, ValueError) as err:
        _error(str(err))
        return 2

    input_problems = []  # paths, folders or globs without images: reported, the others are processed
    inputs = args.input if args.input is not None else [os.fspath(DEFAULT_INPUT)]
    if args.input is None:
        # The quickstart run (bundled examples): show input | reconstruction, and a re-run refreshes its own
        # outputs instead of skipping them (they are regenerated from files shipped with the project).
        args.side_by_side = True
        args.overwrite = True
    try:
        items = find_images(inputs, missing="warn", log=input_problems.append, exclude=[args.output])
    except InputNotFoundError as err:
        _error("; ".join(input_problems) if input_problems else str(err))
        return 2
    for problem in input_problems:
        logger.warning(problem)
    if args.output.exists() and not args.output.is_dir():
        _error(f"--output {args.output} is a file, not a folder")
        return 2

    from wagi.checkpoint import CheckpointError
    from wagi.models.wagi import WaGI

    try:
        model = WaGI.load(ckpt, map_location="cpu")
    except (CheckpointError, ValueError, KeyError, FileNotFoundError) as err:
        _error(f"cannot load the model: {err}")
        return 2
    model = model.to(device).eval()
    fuse = not args.no_fusion
    fusion = "none in this model" if model.fusion is None else ("on" if fuse else "off (--no-fusion)")
    print(f"model {ckpt}: {model.image_size}x{model.image_size}, {model.encoder_kind} encoder, "
          f"n_latent {model.n_latent}, fusion {fusion}; {describe_device(device)}", flush=True)
    print(f"{len(items)} image(s) -> {args.output}", flush=True)

    report = LoadReport(log=logger.warning)
    try:
        summary = invert_folder(model, items, args.output, batch_size=args.batch_size, policy=args.policy, fuse=fuse,
                                save_latents=args.save_latents, latents_bundle=args.latents_bundle,
                                side_by_side=args.side_by_side, overwrite=args.overwrite,
                                progress=False if args.no_progress else None, report=report,
                                precision=args.precision)
    except OutputExistsError as err:
        _error(str(err))
        return 2
    except ImageIOError as err:
        _error(str(err))
        return 1
    except OSError as err:  # a refused write (wagi.fileio.WriteError): disk full, read-only, permission
        _error(f"{err}; the outputs written before it are complete files")
        return 1
    except KeyboardInterrupt:
        _error("interrupted; the outputs written so far are complete files; "
               "re-run to finish (existing ones are skipped)")
        return 130
    if summary.bundle:
        print(f"latents: {summary.bundle}")
    print(summary.line(), flush=True)
    return 0 if summary.ok and not input_problems else 1


if __name__ == "__main__":
    run_main(main)
