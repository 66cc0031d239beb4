"""Compile the wagi.ops CUDA sources (or load them from the build cache) and print OK.

    CUDA_HOME=/usr/local/cuda TORCH_CUDA_ARCH_LIST=9.0 python -m wagi.ops.compile_check [--verbose]

Needs nvcc, a supported host compiler and ninja; no GPU. Without a visible GPU and without
``TORCH_CUDA_ARCH_LIST`` it targets ``DEFAULT_ARCH`` (the H100). The build lands where the first CUDA op
call would look for it (see ``wagi.ops._plugin``), so a later run with the same target reuses it.
Exit status 1 and the compiler output on failure.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

DEFAULT_ARCH = "9.0"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="show the ninja/nvcc command lines")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH)
    from . import _plugin

    start = time.time()
    try:
        module, source, build_dir = _plugin.build(verbose=args.verbose)
    except Exception as error:  # report every kind of build failure the same way
        print(f"FAILED after {time.time() - start:.0f} s: {error}", file=sys.stderr)
        return 1
    missing = [name for name in ("upfirdn2d", "bias_act", "bias_act_grad") if not hasattr(module, name)]
    if missing:
        print(f"FAILED: the built module lacks {missing}", file=sys.stderr)
        return 1
    print(f"build dir: {build_dir} ({source}, {time.time() - start:.0f} s, "
          f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '<visible GPUs>')})")
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
