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


def test_batch_size_is_bounded():
    from wagi.cli import MAX_BATCH, batch_size
    from wagi.config import MAX_BATCH as CONFIG_MAX_BATCH

    assert batch_size("8") == 8 and batch_size(str(MAX_BATCH)) == MAX_BATCH == CONFIG_MAX_BATCH
    for text, message in (("0", ">= 1"), ("1000000000", f"<= {MAX_BATCH}"), ("x", "expected an integer")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            batch_size(text)
