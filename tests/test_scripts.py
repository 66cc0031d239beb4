"""What every script shares: ``--help`` with defaults, one flag vocabulary, usage errors exit 2, the one-line
message when the package is not installed; and the project's habits (no ``sys.path`` edits, every package in
pyproject.toml)."""
import argparse
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT, load_script
from wagi.cli import DefaultsHelpFormatter

SCRIPTS = sorted(p.stem for p in (ROOT / "scripts").glob("*.py") if not p.name.startswith("_"))
RETIRED_FLAGS = ("--out", "--checkpoint")  # now --output and --ckpt everywhere


def _help_parser(name, monkeypatch, capsys):
    """Run ``scripts/<name>.py --help`` in this process; return its parser and the printed help."""
    parsers = []
    print_help = argparse.ArgumentParser.print_help

    def record(self, file=None):
        parsers.append(self)
        print_help(self, file)

    monkeypatch.setattr(argparse.ArgumentParser, "print_help", record)
    script = load_script(name)
    with pytest.raises(SystemExit) as info:
        script.main(["--help"])
    assert info.value.code == 0
    assert len(parsers) == 1
    return parsers[0], capsys.readouterr().out


def _documented(parser):
    return [a for a in parser._actions if a.help != argparse.SUPPRESS and a.option_strings]


def test_every_script_is_listed():
    assert len(SCRIPTS) >= 20 and {"invert", "edit", "train", "eval_subbands", "generate"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_shows_every_default_in_the_shared_vocabulary(name, monkeypatch, capsys):
    parser, text = _help_parser(name, monkeypatch, capsys)
    assert issubclass(parser.formatter_class, DefaultsHelpFormatter), name
    assert text.startswith("usage: ")
    for action in _documented(parser):
        flags = set(action.option_strings)
        assert not flags & set(RETIRED_FLAGS), (name, action.option_strings)
        if "--ckpt" in flags:  # one checkpoint path, never NAME=CKPT (that is --model)
            assert isinstance(action, argparse._StoreAction) and "=" not in (action.metavar or ""), name
        if "--method" in flags:  # one meaning: a method's result folder NAME=DIR
            assert action.metavar == "NAME=DIR", name
        if action.default not in (None, False, [], argparse.SUPPRESS) and action.nargs != 0:
            formatter = parser._get_formatter()
            formatter.add_argument(action)
            shown = formatter.format_help()
            assert "default" in shown, (name, shown)
    assert " --out " not in text and "--checkpoint" not in text
    options = [o for a in parser._actions for o in a.option_strings]
    if "--output" in options:  # the README's promise: an old --out is read as the prefix of --output
        assert parser.allow_abbrev and [o for o in options if o.startswith("--out")] == ["--output"], name


@pytest.mark.parametrize("name", ["invert", "eval_subbands", "train_boundary", "make_demo_dataset"])
def test_usage_errors_exit_2(name, capsys):
    with pytest.raises(SystemExit) as info:
        load_script(name).main(["--no-such-flag"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("usage: ") and "error: " in err


def test_defaults_formatter_keeps_layout_and_does_not_repeat_a_stated_default():
    p = argparse.ArgumentParser(description="line one\n    indented example", formatter_class=DefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=7, help="count")
    p.add_argument("--size", type=int, default=8, help="size (default 8, the demo models)")
    p.add_argument("--flag", action="store_true", help="a switch")
    p.add_argument("--maybe", default=None, help="optional")
    text = p.format_help()
    assert "line one\n    indented example" in text
    assert "count (default: 7)" in text and text.count("default") == 2
    assert "a switch\n" in text and "optional\n" in text


def test_a_script_without_the_installed_package_says_how_to_install_it():
    # -E -s -S: no PYTHONPATH, no site-packages, so wagi cannot be imported; scripts/ is still on the path
    proc = subprocess.run([sys.executable, "-E", "-s", "-S", str(ROOT / "scripts" / "invert.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "error: wagi is not installed: run pip install -e . from the repository root\n"


def test_no_script_or_test_edits_sys_path():
    edit = re.compile(r"sys\.path\.(insert|append|extend)\(|sys\.path\s*(\+=|=[^=])")
    files = sorted((ROOT / "scripts").rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    assert len(files) > 40
    offenders = [str(f.relative_to(ROOT)) for f in files if edit.search(f.read_text(encoding="utf-8"))]
    assert offenders == []


def test_pyproject_lists_every_package():
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.search(r"^packages = \[(.*?)\]", text, re.M | re.S).group(1).replace('"', "").replace(" ", "")
                 .replace("\n", "").split(","))
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "wagi").rglob("__init__.py")
             if "ops" not in p.relative_to(ROOT).parts}
    assert found >= {"wagi", "wagi.models", "wagi.training"}
    assert listed == found | {"wagi.ops"}
    assert re.search(r'^package-dir = \{ "wagi.ops" = "ops" \}', text, re.M)
