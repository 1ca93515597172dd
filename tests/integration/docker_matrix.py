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
OLD_BASE_IMAGE = "tf-load-matrix/base:bullseye"  # Python 3.9, the newest TF 2.5 supports

MATRIX_YAML = f"""
tf: ["2.21"]
python: ["3.11"]
base_images:
  "3.11": {BASE_IMAGE}
  "3.8": python:3.8-slim
"""


# Four TF minors that span what compat.yaml must keep working: Python 3.9 (TF 2.5, on Debian
# bullseye) and 3.11, Keras 2 (TF <= 2.15) and Keras 3 (TF >= 2.16). A small slice of formats
# and repeats: what is tested is that every environment builds and completes. Its 2.21
# environment is MATRIX_YAML's, so that image is shared with the other container tests.
FOUR_TF = ["tf2.5-py3.9-cpu", "tf2.15-py3.11-cpu", "tf2.16-py3.11-cpu", "tf2.21-py3.11-cpu"]
FOUR_TF_YAML = f"""
models: [dense-10k]
formats: [h5, savedmodel, tflite]
cache: [warm]
repeats: 1
warmup: 0
inference_runs: 5
tf: ["2.5", "2.15", "2.16", "2.21"]
python: ["3.9", "3.11"]
only: [{", ".join(FOUR_TF)}]
backend: docker
base_images:
  "3.9": {OLD_BASE_IMAGE}
  "3.11": {BASE_IMAGE}
"""


def matrix(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 1800):
    """`matrix ARGS` run in `cwd` as a user would, in a wide terminal so no line is wrapped."""
    return subprocess.run(
        [sys.executable, "-m", "matrix", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def records(run_dir: Path, env_id: str) -> list[dict]:
    """Every record of one environment of a run, in file order."""
    return [json.loads(line) for line in (run_dir / f"{env_id}.jsonl").read_text().splitlines()]
