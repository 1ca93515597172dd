"""Real harness runs for the dataset, compare and history tests, made once per test session.

Two pairs of runs of the real harness (real TensorFlow, warm cache):

- `mixed`: the tiny `dense-10k` in h5, TFLite and weights-ckpt (unsupported under Keras 3: a
  real problem cell), three measured loads per cell, as a short `matrix run` makes them;
- `gate`: the default model (MobileNetV2) in h5 and TFLite at the project's default `repeats`
  and `warmup` (read from the built-in matrix, not written here): what `matrix compare` judges
  when a user keeps the defaults, with the spread of real ~1 s loads (h5) and of ~15 ms ones
  that stall now and then (TFLite), not a tuned fixture.

The two runs of a pair run side by side: a test machine is shared (other test sessions,
containers), and two runs made one after the other can see a different machine — the loads
would really differ, and "two runs of the same code" would not be the same experiment.

Every module that needs a pair calls `real_pair` from a session fixture; the pair is made once
under pytest's session folder and found there by the next caller.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from matrix.plan.config import load_config
from tests.integration.harness_helpers import ROOT, harness_cmd

DEFAULTS = load_config()  # the built-in matrix: what a user gets without a matrix file
GATE_MODEL = str(DEFAULTS.models[0])  # MobileNetV2
PAIRS = {
    "mixed": (
        [
            "--models",
            "dense-10k",
            "--formats",
            "h5,tflite,weights-ckpt",
            "--repeats",
            "3",
            "--warmup",
            "0",
        ],
        ("20261101-010000-aaaa", "20261102-010000-bbbb"),
    ),
    "gate": (
        [
            "--models",
            GATE_MODEL,
            "--formats",
            "h5,tflite",
            "--repeats",
            str(DEFAULTS.repeats),
            "--warmup",
            str(DEFAULTS.warmup),
        ],
        ("20261103-010000-cccc", "20261104-010000-dddd"),
    ),
}
COMMON = ["--cache", "warm"]


def real_pair(factory: pytest.TempPathFactory, name: str) -> tuple[Path, Path]:
    """The run folders of pair `name` (see PAIRS), running the harness the first time."""
    args, run_ids = PAIRS[name]
    base = factory.getbasetemp() / "real-runs" / name
    dirs = (base / run_ids[0], base / run_ids[1])
    if (base / "done").exists():
        return dirs
    shutil.rmtree(base, ignore_errors=True)
    procs = [
        subprocess.Popen(
            harness_cmd(run_dir, *COMMON, *args, run_id=run_id),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for run_dir, run_id in zip(dirs, run_ids)
    ]
    for proc in procs:
        output = proc.communicate(timeout=900)[0]
        assert proc.returncode == 0, output[-3000:]
    (base / "done").touch()
    return dirs


def read_lines(run_dir: Path) -> list[dict[str, Any]]:
    """The records of the run's one environment file, in file order."""
    (path,) = run_dir.glob("*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_lines(run_dir: Path, records: list[dict[str, Any]]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "test-env.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def is_measured(record: dict[str, Any], fmt: str) -> bool:
    """A trial that may enter the statistics of format `fmt`: one load per process, forked or
    fresh (matrix.results.dataset.measured picks one of the two per cell)."""
    return (
        record["kind"] == "trial"
        and record["format"] == fmt
        and record["status"] == "ok"
        and record["phase"] == "measure"
        and record["process"] in ("fresh", "forked")
    )


def planted(
    source: Path,
    dest: Path,
    fmt: str,
    factor: float,
    loads_from: Path | None = None,
    run_id: str | None = None,
) -> Path:
    """A copy of run `source` whose `fmt` cell loads `factor` times slower: its measured load_s
    become `factor` × those of `loads_from` (default: its own), trial by trial.

    Every other field and every other cell stays the real record. `run_id` relabels the copy
    as another run (for a history); `dest` is the new run folder.
    """
    donor = iter([r["load_s"] for r in read_lines(loads_from or source) if is_measured(r, fmt)])
    records = read_lines(source)
    for record in records:
        if is_measured(record, fmt):
            record["load_s"] = next(donor) * factor
        if run_id:
            record["run_id"] = run_id
    write_lines(dest, records)
    return dest
