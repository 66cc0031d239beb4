#!/usr/bin/env python
"""A local interactive page: pick or upload an image, invert it, edit it with sliders, see the sub-bands.

    pip install -e ".[app]"
    python scripts/app.py                       # http://127.0.0.1:7860, the bundled demo models
    python scripts/app.py --port 8000 --model run/wagi.pt --model other=run2/wagi.pt

The page serves on 127.0.0.1 (this machine only) unless --host says otherwise, and never through a
public share link. Its functions are also API endpoints for gradio_client: /invert and /edit (see
wagi/app.py). Exit status: 0 after Ctrl-C, 2 usage error (Gradio missing, checkpoint missing).
"""
import argparse
import sys
from pathlib import Path

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.app import DEFAULT_HOST, DEFAULT_PORT, AppEngine, build_app, bundled_models, example_images, launch
from wagi.bundle import BundleError, parse_named_path
from wagi.cli import DefaultsHelpFormatter, positive_int


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"interface to listen on (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]PATH",
                   help="a WaGI checkpoint to offer besides the bundled models, named NAME or after the file "
                        "(repeatable)")
    p.add_argument("--ckpt", action="append", dest="model", help=argparse.SUPPRESS)  # the older name of --model
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="CPU threads for PyTorch (default: PyTorch's choice)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        print('error: the page needs Gradio: pip install -e ".[app]"', file=sys.stderr)
        return 2
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    models = {}
    for spec in args.model:
        try:
            name, path = parse_named_path(spec, "--model") if "=" in spec else (Path(spec).stem, Path(spec))
        except BundleError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if not path.is_file():
            print(f"error: --model {path}: file not found", file=sys.stderr)
            return 2
        models[name] = path
    models.update({n: p for n, p in bundled_models().items() if n not in models})
    try:
        engine = AppEngine(models)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    launch(build_app(engine, example_images()), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
