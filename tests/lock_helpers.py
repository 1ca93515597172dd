"""Another real process holding a results folder's run lock, for the lock and prune tests."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.integration.harness_helpers import ROOT

HELD_RUN_ID = "20261127-183000-ab12"
# Takes the lock, starts writing a run folder, says so, and holds on until stdin closes.
HOLDER = f"""
import sys
from pathlib import Path
from matrix.execute.lock import run_lock
with run_lock(Path(sys.argv[1]), run_id="{HELD_RUN_ID}"):
    (Path(sys.argv[1]) / "{HELD_RUN_ID}").mkdir(exist_ok=True)
    print("held", flush=True)
    sys.stdin.read()
"""


def start_holder(results: Path) -> subprocess.Popen:
    """A process holding the lock of `results` (and writing run HELD_RUN_ID in it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(results)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


@contextlib.contextmanager
def lock_held(results: Path) -> Iterator[subprocess.Popen]:
    """The lock of `results` held by another process for the block; released after it."""
    proc = start_holder(results)
    try:
        yield proc
    finally:
        proc.communicate("")
