"""The matrix the container tests run: current TF on the locally built Debian base image.

A plain module (not a pytest plugin) so tests can import it. The image fixture takes its
environment from the planner with this matrix, so `matrix run` with it finds the very image the
fixture built (same content, same tag) and builds nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BASE_IMAGE = "tf-load-matrix/base:bookworm"

MATRIX_YAML = f"""
tf: ["2.21"]
python: ["3.11"]
base_images:
  "3.11": {BASE_IMAGE}
  "3.8": python:3.8-slim
"""


def matrix(cwd: Path, *args: str, env: dict[str, str] | None = None):
    """`matrix ARGS` run in `cwd` as a user would, in a wide terminal so no line is wrapped."""
    return subprocess.run(
        [sys.executable, "-m", "matrix", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def records(run_dir: Path, env_id: str) -> list[dict]:
    """Every record of one environment of a run, in file order."""
    return [json.loads(line) for line in (run_dir / f"{env_id}.jsonl").read_text().splitlines()]
