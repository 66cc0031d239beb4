"""argparse value types shared by the scripts (one definition each, one clear message on bad values)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Tuple


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def named_path(text: str) -> Tuple[str, Path]:
    """``NAME=PATH`` -> ``(NAME, Path(PATH))``; NAME names outputs, so it may not contain a path separator."""
    name, sep, path = text.partition("=")
    name = name.strip()
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    if "/" in name or os.sep in name or name in (".", ".."):
        raise argparse.ArgumentTypeError(f"name {name!r} must not contain a path separator")
    return name, Path(path)
