"""Real harness runs for the dataset, compare and history tests, made once per test session.

Two pairs of runs of the real harness (real TensorFlow, the tiny `dense-10k` model, warm cache):

- `mixed`: h5, TFLite and weights-ckpt (unsupported under Keras 3: a real problem cell), three
  measured loads per cell, as a short `matrix run` makes them;
- `many`: TFLite only, 100 measured loads per cell. A TFLite load of this model takes ~1.5 ms
  and a trial ~0.5 s, so many trials are cheap, and a busy test machine needs them: while
  other processes run (or drop the page cache for their own cold trials), 40-50 % of these
  loads stall (4-20 ms instead of 1.5 ms), and only enough samples let the Mann-Whitney test
  see a 30 % shift through that.

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

from tests.harness_helpers import ROOT, harness_cmd

PAIRS = {
    "mixed": (["--formats", "h5,tflite,weights-ckpt", "--repeats", "3"],
              ("20261101-010000-aaaa", "20261102-010000-bbbb")),
    "many": (["--formats", "tflite", "--repeats", "100"],
             ("20261103-010000-cccc", "20261104-010000-dddd")),
}
COMMON = ["--models", "dense-10k", "--cache", "warm", "--warmup", "0"]


def real_pair(factory: pytest.TempPathFactory, name: str) -> tuple[Path, Path]:
    """The run folders of pair `name` (see PAIRS), running the harness the first time."""
    args, run_ids = PAIRS[name]
    base = factory.getbasetemp() / "real-runs" / name
    dirs = (base / run_ids[0], base / run_ids[1])
    if (base / "done").exists():
        return dirs
    shutil.rmtree(base, ignore_errors=True)
    procs = [
        subprocess.Popen(harness_cmd(run_dir, *COMMON, *args, run_id=run_id), cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
    """A trial that enters the statistics of format `fmt` (see matrix.dataset.measured)."""
    return (record["kind"] == "trial" and record["format"] == fmt and record["status"] == "ok"
            and record["phase"] == "measure" and record["process"] == "fresh")


def planted(source: Path, dest: Path, fmt: str, factor: float, loads_from: Path | None = None,
            run_id: str | None = None) -> Path:
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
