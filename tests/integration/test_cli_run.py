"""`matrix run --backend local` end to end: the real CLI, the real harness, real TensorFlow.

A tiny model keeps the orchestration checks quick; MobileNetV2 goes through the whole default
format set once, as the user's own `make run` does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from matrix.build.venvs import uv_command
from matrix.results.runs import run_dirs
from tests.integration.harness_helpers import ABORTING_TFLITE, FLOAT_FORMATS, ROOT

MATRIX = [sys.executable, "-m", "matrix"]


def matrix_run(cwd: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [*MATRIX, "run", "--backend", "local", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def only_run_dir(results: Path) -> Path:
    (run_dir,) = run_dirs(results)  # beside it: the results folder's run lock file
    return run_dir


def records_of(run_dir: Path) -> list[dict]:
    (jsonl,) = run_dir.glob("*.jsonl")
    return [json.loads(line) for line in jsonl.read_text().splitlines()]


def test_a_run_shows_progress_and_a_table_and_keeps_records(tmp_path: Path) -> None:
    proc = matrix_run(
        tmp_path,
        "--models",
        "dense-10k",
        "--formats",
        "h5,tflite",
        "--cache",
        "warm",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--results-dir",
        "elsewhere",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = only_run_dir(tmp_path / "elsewhere")
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", run_dir.name)
    assert "4/4" in proc.stdout  # the progress bar counted every trial record
    for fmt in ("h5", "tflite"):
        assert re.search(rf"dense-10k\s+{fmt}\s+warm\s+2\s", proc.stdout), proc.stdout
    trials = [r for r in records_of(run_dir) if r["kind"] == "trial"]
    assert len(trials) == 4 and {r["status"] for r in trials} == {"ok"}
    assert (run_dir / f"{trials[0]['env_id']}.log").exists()
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_cell_error_exits_1_and_every_other_record_is_written(tmp_path: Path) -> None:
    """The TFLite save aborts (a test double calling the real os.abort in the save worker)."""
    proc = matrix_run(
        tmp_path,
        "--models",
        "dense-10k",
        "--formats",
        "h5,tflite",
        "--cache",
        "warm",
        "--repeats",
        "1",
        "--warmup",
        "0",
        env=ABORTING_TFLITE,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "SIGABRT" in proc.stdout
    records = records_of(only_run_dir(tmp_path / "results"))
    assert records[-1]["kind"] == "done"
    assert {(r["format"], r["status"]) for r in records if r["kind"] == "trial"} == {
        ("h5", "ok"),
        ("tflite", "error"),
    }


def test_without_tensorflow_the_local_backend_says_how_to_install(tmp_path: Path) -> None:
    """A real virtual environment with the orchestrator's dependencies but no TensorFlow (made
    by uv, as the venv backend makes its environments: pip takes a minute longer)."""
    env_dir = tmp_path / "no-tf"
    python = env_dir / "bin" / "python"
    for args in (
        ["venv", "-q", "--python", sys.executable, str(env_dir)],
        ["pip", "install", "-q", "--python", str(python), "-e", str(ROOT)],
    ):
        made = subprocess.run([*uv_command(), *args], capture_output=True, text=True)
        assert made.returncode == 0, made.stderr[-2000:]
    proc = subprocess.run(
        [str(python), "-m", "matrix", "run", "--backend", "local"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "pip install 'tf-load-matrix[tf]'" in proc.stderr
    assert not (tmp_path / "results").exists()  # failed before anything was created


@pytest.mark.slow
def test_mobilenetv2_every_format_cold_end_to_end(tmp_path: Path) -> None:
    """The user's main job, on the real network: every format, whole page cache dropped."""
    proc = matrix_run(
        tmp_path,
        "--models",
        "MobileNetV2",
        "--cache",
        "cold",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--inference-runs",
        "2",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    records = records_of(only_run_dir(tmp_path / "results"))
    artifacts = {r["format"]: r for r in records if r["kind"] == "artifact"}
    assert artifacts["h5"]["params"] == 3_538_984  # MobileNetV2 with its ImageNet head
    trials = {r["format"]: r for r in records if r["kind"] == "trial"}
    assert trials["weights-ckpt"]["status"] == "unsupported"
    measured = {f: r for f, r in trials.items() if f != "weights-ckpt"}
    assert {r["status"] for r in measured.values()} == {"ok"}, measured
    for fmt, r in measured.items():
        runtime = r["import_libs_checked"][0]  # tensorflow, or ai_edge_litert for TFLite
        assert r["resident_before"] <= 0.01 and r["import_libs_resident"][runtime] <= 0.01, fmt
        assert r["load_read_bytes"] > 0, fmt  # the cold load read its artifact from storage
        if fmt in FLOAT_FORMATS:
            assert r["parity_status"] == "pass", fmt
    # TFLite's interpreter maps a flatbuffer: it must load far faster than Keras parses HDF5.
    assert measured["tflite"]["load_s"] * 5 < measured["h5"]["load_s"]
    assert re.search(r"MobileNetV2\s+tflite\s+cold\s+1\s", proc.stdout), proc.stdout
