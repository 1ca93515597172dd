"""How harness workers end: `leave` skips the interpreter's teardown but loses no output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Buffered output not yet written, an exit handler that must not run, then leave(3).
LEAVER = """
import atexit, sys
from harness.lifetime import leave
atexit.register(lambda: print("teardown ran"))
sys.stdout.write("result line")
sys.stderr.write("last words")
leave(3)
"""


def test_leave_keeps_buffered_output_and_its_code_and_runs_no_teardown() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LEAVER], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 3
    assert proc.stdout == "result line" and proc.stderr == "last words"
