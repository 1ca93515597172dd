"""The results folder's run lock, between real processes: the lock alone, then two `matrix run`s."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matrix.errors import ExitCode, ResultsBusy
from matrix.execute.lock import LOCK_FILE, run_lock
from tests.lock_helpers import HELD_RUN_ID, lock_held, start_holder


def _can_lock(results: Path) -> bool:
    try:
        with run_lock(results):
            return True
    except ResultsBusy:
        return False


def test_a_held_lock_refuses_another_process_naming_the_holder(tmp_path: Path) -> None:
    with lock_held(tmp_path) as holder, pytest.raises(ResultsBusy) as refused, run_lock(tmp_path):
        pass
    message = str(refused.value)
    assert re.fullmatch(
        rf"another `matrix run` \(pid {holder.pid}, started at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d "
        rf"UTC, run {HELD_RUN_ID}\) is using {re.escape(str(tmp_path))}/; wait for it or use "
        r"--results-dir",
        message,
    ), message
    assert refused.value.exit_code == ExitCode.RESULTS_BUSY == 4
    assert _can_lock(tmp_path)  # released when the holder left its `with` block


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = start_holder(tmp_path)
    assert not _can_lock(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / LOCK_FILE).exists()  # the file stays; only the flock matters
    assert _can_lock(tmp_path)


def test_child_processes_do_not_inherit_the_lock(tmp_path: Path) -> None:
    """The harness runs in subprocesses: one that outlives `matrix` must not keep the lock."""
    with run_lock(tmp_path):
        child = subprocess.Popen(["sleep", "30"])
    try:
        assert _can_lock(tmp_path)
    finally:
        child.kill()
        child.wait()


MATRIX_RUN = [
    sys.executable,
    "-m",
    "matrix",
    "run",
    "--backend",
    "local",
    "--models",
    "dense-10k",
    "--formats",
    "h5",
    "--cache",
    "warm",
    "--repeats",
    "1",
    "--warmup",
    "0",
    "--no-report",
]


def _first_run_dir(results: Path, proc: subprocess.Popen, timeout: float = 300) -> Path:
    """The run folder of `proc` once it has records (it holds the lock from before that)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(results.glob("*/*.jsonl")) if results.is_dir() else []
        if found:
            return found[0].parent
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.1)
    raise AssertionError("the first run wrote no records in time")


def test_a_second_matrix_run_on_the_same_results_refuses_and_the_first_completes(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    first = subprocess.Popen(
        MATRIX_RUN,
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        run_dir = _first_run_dir(tmp_path / "results", first)
        started = time.monotonic()
        second = subprocess.run(
            MATRIX_RUN, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        refused_in = time.monotonic() - started
        assert first.poll() is None, "the first run ended before the second was refused"
        output = first.communicate(timeout=900)[0]
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == ExitCode.RESULTS_BUSY, second.stdout + second.stderr
    assert re.fullmatch(
        rf"error: another `matrix run` \(pid {first.pid}, started at [^)]+, "
        rf"run {run_dir.name}\) is using results/; wait for it or use "
        r"--results-dir\n",
        second.stderr,
    ), second.stderr
    assert refused_in < 30, refused_in  # at once: no TensorFlow, no waiting on the first
    assert first.returncode == 0, output
    assert [
        d.name
        for d in (tmp_path / "results").iterdir()
        if d.is_dir() and not d.name.startswith(".")
    ] == [run_dir.name]
    (records_file,) = run_dir.glob("*.jsonl")
    records = [json.loads(line) for line in records_file.read_text().splitlines()]
    assert records[-1]["kind"] == "done"
    assert {r["run_id"] for r in records} == {run_dir.name}
    trials = [r for r in records if r["kind"] == "trial"]
    assert [(t["format"], t["status"]) for t in trials] == [("h5", "ok")]
