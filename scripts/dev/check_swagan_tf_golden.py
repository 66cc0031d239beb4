"""Convert every ``swagan_r{R}.pkl`` in a folder and print its error against the official outputs.

    python scripts/dev/check_swagan_tf_golden.py /tmp/swagan_golden

The folder is what ``scripts/dev/make_swagan_tf_golden.py --output`` wrote (any resolutions); this side
needs WaGI only, no TensorFlow. Prints one line per resolution: the max abs error of the mapped W and
of the images for psi 1, psi 0.5 (the official default) and a given W+, all with the stored noise.
"""
import argparse
import re
import runpy
import sys
from pathlib import Path

import numpy as np

runpy.run_path(str(Path(__file__).resolve().parents[1] / "_require_wagi.py"))  # one line, exit 2 without wagi

from wagi.swagan_tf import compare_with_golden, convert_generator, read_official_pickle  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    found = sorted((int(m.group(1)), p) for p in args.folder.glob("swagan_r*.pkl")
                   for m in [re.fullmatch(r"swagan_r(\d+)(_trap)?\.pkl", p.name)] if m)
    if not found:
        print(f"error: no swagan_r<R>.pkl in {args.folder}", file=sys.stderr)
        return 1
    worst = 0.0
    for res, path in found:
        generator, latent_avg, info = convert_generator(read_official_pickle(path), where=str(path))
        errors = compare_with_golden(generator, latent_avg, dict(np.load(args.folder / f"swagan_r{res}_golden.npz")))
        worst = max(worst, *errors.values())
        kwargs = info["generator_kwargs"]
        channels = kwargs["channels"] or f"channel_multiplier {kwargs['channel_multiplier']}"
        print(f"{path.name}: {res} px, channels {channels}: "
              + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    print(f"max abs error over all: {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
