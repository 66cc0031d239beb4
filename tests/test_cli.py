import argparse
from pathlib import Path

import pytest

from wagi.cli import named_path, positive_int


def test_positive_int():
    assert positive_int("3") == 3
    for bad in ("0", "-2", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)


def test_named_path():
    assert named_path(" wagi =runs/a=b.pt") == ("wagi", Path("runs/a=b.pt"))
    for bad in ("wagi", "=x", "wagi=", "a/b=x", "..=x"):
        with pytest.raises(argparse.ArgumentTypeError):
            named_path(bad)
