"""Helpers shared by the test modules: the project's scripts as modules, the tiny WaGI model.

The tiny model is ``configs/tiny_test.yaml`` (32 px SWAGAN, small backbone, ReStyle x2) built with
seed 0, so every test that builds it gets the same weights.
"""
import importlib.util
from pathlib import Path
from types import ModuleType

import torch

from wagi.config import load_config
from wagi.models.wagi import WaGI

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "tiny_test.yaml"
TINY_SEED = 0


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as a module (its ``main(argv)`` runs in this process)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_wagi(*overrides: str) -> WaGI:
    """The tiny WaGI model (eval mode) with ``section.key=value`` config overrides."""
    torch.manual_seed(TINY_SEED)
    return WaGI.from_config(load_config(TINY_CONFIG, list(overrides))).eval()
