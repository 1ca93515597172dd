"""Run the real harness in a subprocess and read back what it wrote (no fakes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOAT_FORMATS = ("savedmodel", "savedmodel-keras", "h5", "keras", "weights-h5", "tflite")
# The environment of a run whose TFLite save aborts its process (tests/integration/faults/).
ABORTING_TFLITE = {
    "PYTHONPATH": os.pathsep.join(
        p
        for p in (str(ROOT / "tests" / "integration" / "faults"), os.environ.get("PYTHONPATH"))
        if p
    )
}


def harness_cmd(out: Path, *args: str, run_id: str = "test") -> list[str]:
    return [
        sys.executable,
        "-m",
        "harness",
        "run",
        "--out",
        str(out),
        "--run-id",
        run_id,
        "--env-id",
        "test-env",
        *args,
    ]


def run_harness(
    out: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: int = 900,
    run_id: str = "test",
) -> subprocess.CompletedProcess:
    return subprocess.run(
        harness_cmd(out, *args, run_id=run_id),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def read_records(out: Path) -> list[dict]:
    """Every record of the run; fails the test on any line that does not parse."""
    lines = (out / "test-env.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def of_kind(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r["kind"] == kind]
