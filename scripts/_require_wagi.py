"""Imported first by every script: without the installed ``wagi`` package, one line and exit status 2
instead of a traceback. (``python scripts/NAME.py`` puts scripts/ on the import path, so this module is
found without any path edits; it imports nothing heavy.)"""
import importlib.util
import sys

NOT_INSTALLED = "error: wagi is not installed: run pip install -e . from the repository root"

if importlib.util.find_spec("wagi") is None:
    print(NOT_INSTALLED, file=sys.stderr)
    sys.exit(2)
