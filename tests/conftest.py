"""Fixtures shared by the test modules (helpers they import live in ``tests/helpers.py``), and the ``soak``
marker: tests marked ``@pytest.mark.soak`` (the kill -9 soak) run only with ``pytest --run-soak``. The markers
are declared in pyproject.toml ([tool.pytest.ini_options])."""
import pytest

from tests.helpers import tiny_wagi
from wagi.cli import setup_logging


def pytest_addoption(parser):
    parser.addoption("--run-soak", "--run-slow", action="store_true", default=False, dest="run_soak",
                     help="also run tests marked soak (--run-slow: the older name)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("run_soak"):
        return
    skip = pytest.mark.skip(reason="soak: run with --run-soak")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def script_logging():
    """The logging every script sets up (``run_main``): library diagnostics as plain lines on stderr, so
    tests that call a script's ``main`` or a library function read them from ``capsys``."""
    setup_logging()


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A saved tiny WaGI model (``tests.helpers.tiny_wagi()``): the checkpoint the script tests run."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    tiny_wagi().save(path)
    return path
