"""Helpers shared by the test modules: the project's scripts as modules, the tiny WaGI model.

The tiny model is ``configs/tiny_test.yaml`` (32 px SWAGAN, small backbone, ReStyle x2) built with
seed 0, so every test that builds it gets the same weights.
"""
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

from wagi.config import load_config
from wagi.models.wagi import WaGI

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "tiny_test.yaml"
TINY_SEED = 0


def _import_file(module_name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as a module (its ``main(argv)`` runs in this process).

    A script's first import, ``_require_wagi``, is found beside it when Python runs the script; imported from
    here, it is registered under its name first (no edit of ``sys.path``)."""
    if "_require_wagi" not in sys.modules:
        sys.modules["_require_wagi"] = _import_file("_require_wagi", ROOT / "scripts" / "_require_wagi.py")
    return _import_file(f"script_{name.replace('/', '_')}", ROOT / "scripts" / f"{name}.py")


def tiny_wagi(*overrides: str) -> WaGI:
    """The tiny WaGI model (eval mode) with ``section.key=value`` config overrides."""
    torch.manual_seed(TINY_SEED)
    return WaGI.from_config(load_config(TINY_CONFIG, list(overrides))).eval()
