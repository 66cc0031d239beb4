"""The WaGI test suite (a package, so that test modules share ``tests.helpers`` and ``tests.badfiles``)."""
