"""The unit tests' promise: no TensorFlow and no Docker engine, so the folder runs in seconds.

A test that needs either belongs in tests/integration/; this check fails the session that breaks
the promise in-process (a subprocess that imports TensorFlow is for the reviewer to catch).
"""

from __future__ import annotations

import sys

import pytest

FORBIDDEN = ("tensorflow", "keras", "docker")


@pytest.fixture(autouse=True, scope="session")
def _no_heavy_parts() -> object:
    # `make test` runs this folder in a process of its own; in one session after
    # tests/integration/ (`pytest tests`), what those loaded is theirs and cannot be checked.
    before = {name for name in FORBIDDEN if name in sys.modules}
    yield
    loaded = [name for name in FORBIDDEN if name in sys.modules and name not in before]
    assert not loaded, f"unit tests imported {loaded}: move the test to tests/integration/"
