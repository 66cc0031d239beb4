"""Convert foreign generator weights into a WaGI generator checkpoint.

    python scripts/convert_weights.py --format swagan-tf --input network-snapshot.pkl --output G.pt

``--format swagan-tf``: an official TensorFlow SWAGAN pickle (rinongal/swagan, ``(G, D, Gs)``); its
``Gs`` becomes a SWAGAN generator with 3x3 ToWavelet convs (``to_rgb_kernel: 3``), the official
``dlatent_avg`` as ``latent_avg`` and the official noise maps in its noise buffers. Neither TensorFlow nor
any code stored in the pickle runs (:mod:`wagi.swagan_tf`). The output loads with
``wagi.checkpoint.load_generator`` and serves as ``generator.ckpt`` in a config that sets the keys this
script prints. The official ``Gs.run`` truncates with psi 0.5 unless told otherwise (the script prints
the value the file's kwargs give).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

from wagi.checkpoint import CheckpointError
from wagi.swagan_tf import FORMAT_NAME, OFFICIAL_TRUNCATION_PSI, convert_official_pickle

FORMATS = (FORMAT_NAME,)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter)
    p.add_argument("--format", choices=FORMATS, required=True, help="format of --input")
    p.add_argument("--input", type=Path, required=True, help="the file to convert (swagan-tf: the official .pkl)")
    p.add_argument("--output", type=Path, required=True, help="WaGI generator checkpoint to write (.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.output.exists() and not args.overwrite:
        print(f"error: {args.output} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    try:
        generator, latent_avg, info = convert_official_pickle(args.input, args.output)
    except (CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    kw = info["generator_kwargs"]
    keys = {"size": kw["size"], "style_dim": kw["style_dim"], "n_mlp": kw["n_mlp"],
            "to_rgb_kernel": kw["to_rgb_kernel"]}
    if kw.get("channels") is None:
        keys["channel_multiplier"] = kw["channel_multiplier"]
    print(f"converted {args.input} (official Gs, {info['resolution']} px SWAGAN) to {args.output}: "
          f"{generator.n_latent} W+ rows, latent_avg from dlatent_avg, {generator.num_layers} noise maps")
    print("config: generator: {" + ", ".join(f"{k}: {v}" for k, v in keys.items()) + f", ckpt: {args.output}}}")
    cutoff = "" if info["truncation_cutoff"] is None else f" on the first {info['truncation_cutoff']} W+ rows"
    print(f"note: this file's Gs.run truncates with psi {info['truncation_psi']}{cutoff} by default (the official "
          f"default is {OFFICIAL_TRUNCATION_PSI}); to match it pass --truncation {info['truncation_psi']} to "
          "scripts/generate.py, whose default is 0.7")
    return 0


if __name__ == "__main__":
    run_main(main)
