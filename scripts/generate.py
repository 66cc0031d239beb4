"""Sample a grid of images from a SWAGAN generator checkpoint.

    python scripts/generate.py                                   # the bundled demo generator -> outputs/samples.png
    python scripts/generate.py --ckpt pretrained/demo/wagi.pt    # the generator inside a WaGI model
    python scripts/generate.py --ckpt g.pt --n 16 --truncation 0.7 --output outputs/g.png

Without ``--ckpt`` the bundled demo generator (``pretrained/demo/swagan128.pt``) is sampled;
``--random`` samples a randomly initialised small generator instead (a smoke test of the pipeline;
its images are noise-like patterns). Truncation uses the checkpoint's ``latent_avg`` or, when it
has none, the mean of 4096 mapped samples. Usage errors exit 2, failures while running exit 1.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, add_trust_flag, batch_size, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

import torch
from torchvision.utils import save_image

from wagi.checkpoint import LATENT_AVG_SAMPLES, LATENT_AVG_SEED, CheckpointError, load_generator
from wagi.devices import DEVICE_CHOICES, resolve_device
from wagi.fileio import atomic_write
from wagi.inference import PROJECT_ROOT, resolve_checkpoint
from wagi.models.swagan import Generator

DEMO_GENERATOR = PROJECT_ROOT / "pretrained" / "demo" / "swagan128.pt"  # bundled with the repository
DEFAULT_OUT = Path("outputs") / "samples.png"  # relative to the working directory, like any output

RANDOM_GENERATOR_SIZE = 64
RANDOM_GENERATOR_CHANNEL_MAX = 64  # small enough to build and run on a CPU in a second
BATCH = 16  # images per generator call


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", type=Path, default=None,
                     help="generator checkpoint (WaGI generator or model, or rosinality format); "
                          "default: the bundled demo generator pretrained/demo/swagan128.pt")
    src.add_argument("--random", action="store_true",
                     help=f"sample a randomly initialised {RANDOM_GENERATOR_SIZE}px generator (a pipeline smoke test)")
    p.add_argument("--size", type=int, default=None,
                   help=f"output size; checked against the checkpoint (random generator: {RANDOM_GENERATOR_SIZE})")
    p.add_argument("--n", type=batch_size, default=16, help="number of images, 1 to 4096 (one grid image)")
    p.add_argument("--truncation", type=float, default=0.7, help="truncation psi (1 = none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled z")
    p.add_argument("--output", type=Path, default=DEFAULT_OUT, help="grid image (.png or .jpg)")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to run")
    add_trust_flag(p)
    args = p.parse_args(argv)
    if not 0 <= args.truncation <= 1:
        p.error("--truncation must be in [0, 1]")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.output.exists() and not args.overwrite:
        print(f"error: {args.output} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    if args.output.is_dir():
        print(f"error: --output {args.output} is a folder, not an image file", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
        ckpt = None if args.random else resolve_checkpoint(args.ckpt, DEMO_GENERATOR)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if ckpt is not None:
        try:
            generator, latent_avg, info = load_generator(ckpt, size=args.size, map_location="cpu",
                                                         trust=args.trust_checkpoint)
        except (CheckpointError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"loaded a {generator.size}x{generator.size} SWAGAN from {ckpt} ({info['format']} format)")
    else:
        size = args.size or RANDOM_GENERATOR_SIZE
        torch.manual_seed(args.seed)
        generator = Generator(size, channel_max=RANDOM_GENERATOR_CHANNEL_MAX).eval()
        latent_avg = None
        print(f"--random: sampling a randomly initialised {size}x{size} SWAGAN "
              f"(channels <= {RANDOM_GENERATOR_CHANNEL_MAX}); its images are not meaningful")
    generator.to(device)

    rng = torch.Generator().manual_seed(args.seed)
    if args.truncation < 1 and latent_avg is None:
        latent_avg = generator.mean_latent(LATENT_AVG_SAMPLES, generator=torch.Generator().manual_seed(LATENT_AVG_SEED))
    if latent_avg is not None:
        latent_avg = latent_avg.to(device)

    images = []
    with torch.no_grad():
        for start in range(0, args.n, BATCH):
            z = torch.randn(min(BATCH, args.n - start), generator.style_dim, generator=rng).to(device)
            img, _ = generator([z], truncation=args.truncation, truncation_latent=latent_avg, randomize_noise=False)
            images.append(img.cpu())
    grid = torch.cat(images)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(args.output.suffix.lower(), "PNG")
    try:
        atomic_write(args.output, lambda f: save_image(grid, f, format=fmt, nrow=math.ceil(math.sqrt(args.n)),
                                                    normalize=True, value_range=(-1, 1)))
    except OSError as err:  # wagi.fileio.WriteError: a file in the way, a full disk, a read-only folder
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.n} samples ({generator.size}x{generator.size}, truncation {args.truncation}) to {args.output}")
    return 0


if __name__ == "__main__":
    run_main(main)
