"""Fixtures shared by the test modules (helpers they import live in ``tests/helpers.py``)."""
import pytest

from tests.helpers import tiny_wagi


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A saved tiny WaGI model (``tests.helpers.tiny_wagi()``): the checkpoint the script tests run."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    tiny_wagi().save(path)
    return path
