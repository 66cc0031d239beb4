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


def test_setup_logging_sends_plain_diagnostics_to_stderr_once(capsys):
    import logging

    from wagi.cli import StderrHandler, setup_logging

    log = logging.getLogger("wagi.training.trainer")
    try:
        setup_logging()
        setup_logging()  # a second call replaces the handler: no line twice
        assert sum(isinstance(h, StderrHandler) for h in logging.getLogger("wagi").handlers) == 1
        log.info("resumed from x.pt at step 4")
        log.debug("hidden without verbose")
        out = capsys.readouterr()
        assert out.err == "resumed from x.pt at step 4\n" and out.out == ""
        setup_logging(verbose=True)
        log.debug("shown with verbose")
        assert capsys.readouterr().err == "shown with verbose\n"
    finally:
        setup_logging()  # the tests' default (conftest)


def test_library_modules_take_no_private_names_and_print_nothing():
    """No ``from wagi.x import _name`` / ``module._name`` across wagi/, and no bare ``print`` outside
    wagi/cli.py (the scripts' own helpers) and the trainer's validation result line."""
    import ast

    root = Path(__file__).resolve().parents[1] / "wagi"
    private, prints = [], []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("ops/"):  # the ops' own package: its _plugin is internal to it
            continue
        tree = ast.parse(path.read_text())
        modules = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private += [f"{rel}: {a.name}" for a in node.names
                            if a.name.startswith("_") and a.name != "__version__"]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in modules and node.attr.startswith("_") and not node.attr.startswith("__"):
                private.append(f"{rel}: {node.value.id}.{node.attr}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                prints.append(f"{rel}:{node.lineno}")
    assert private == []
    assert [p for p in prints if not p.startswith(("cli.py:", "training/trainer.py:"))] == []
    assert len([p for p in prints if p.startswith("training/trainer.py:")]) <= 1  # "step N: val mse ..." (stdout)
