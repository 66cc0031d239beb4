"""Fixtures shared by the test modules (helpers they import live in ``tests/helpers.py``), and the ``slow``
marker: tests marked ``@pytest.mark.slow`` (the kill -9 soak) run only with ``pytest --run-slow``."""
import pytest

from tests.helpers import tiny_wagi
from wagi.cli import setup_logging


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes-long test (kill -9 soak); skipped without --run-slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
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
