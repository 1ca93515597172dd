"""Stopping a run for real: SIGTERM as Ctrl-C, SIGKILL leaving no process, resumes keeping
every attempt, and the containers of killed runs removed by the next run.

Each test starts the real `matrix run` (local backend, tiny model, many repeats so it is still
running), signals it mid-trial and looks at what is left: exit code, records, processes (in
/proc), the lock, containers on the real engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker.errors
import pytest

from matrix.execute.backends.docker import HOLDER_LABEL, RUN_LABEL
from matrix.execute.lock import holder_token, run_lock
from matrix.execute.stopping import set_aside
from matrix.results.reader import read_run
from tests.integration.docker_matrix import MATRIX_YAML
from tests.integration.harness_helpers import ROOT

TINY = (
    "--models",
    "dense-10k",
    "--formats",
    "h5",
    "--cache",
    "warm",
    "--warmup",
    "0",
    "--inference-runs",
    "2",
    "--no-report",
)
ENDLESS = ("--repeats", "200")  # far more than a test waits for: still running when signalled


def start_run(cwd: Path, *args: str, backend: str = "local") -> subprocess.Popen:
    """`matrix run` as a job runner starts it: its own process, output to a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "matrix", "run", "--backend", backend, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def wait_for_trials(proc: subprocess.Popen, pattern: str, cwd: Path, count: int = 2) -> Path:
    """The records file matching `pattern` under `cwd`, once it holds `count` trial records."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        for path in cwd.glob(pattern):
            if path.read_text().count('"kind": "trial"') >= count:
                return path
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    raise AssertionError(f"no {count} trials within 600 s")


def processes_mentioning(text: str) -> list[str]:
    """Command lines of the live processes naming `text` (a zombie's is empty: it is gone)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended while we looked
            continue
        if text in argv and str(os.getpid()) != cmdline.parent.name:
            found.append(argv)
    return found


def eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Whether `check()` comes true within `seconds` (a process takes a moment to go)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def trials_in(path: Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == "trial"]


def assert_lock_free(results: Path) -> None:
    with run_lock(results):  # ResultsBusy if anything still held it
        pass


def test_sigterm_stops_a_local_run_like_ctrl_c(tmp_path: Path) -> None:
    proc = start_run(tmp_path, *TINY, *ENDLESS)
    records = wait_for_trials(proc, "results/*/*.jsonl", tmp_path)
    proc.send_signal(signal.SIGTERM)  # what systemd, a timeout or a CI cancel sends
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output
    assert "interrupted" in output and "Traceback" not in output
    assert processes_mentioning(str(tmp_path)) == []  # harness and trial worker stopped
    assert_lock_free(tmp_path / "results")
    kinds = [json.loads(line)["kind"] for line in records.read_text().splitlines()]
    assert kinds.count("trial") >= 2 and "done" not in kinds  # every line parses, kept
    assert "harness: interrupted" in records.with_suffix(".log").read_text()


def test_after_sigkill_no_harness_process_is_left(tmp_path: Path) -> None:
    proc = start_run(tmp_path, *TINY, *ENDLESS)
    wait_for_trials(proc, "results/*/*.jsonl", tmp_path)

    def running() -> list[str]:
        return processes_mentioning(str(tmp_path))

    assert eventually(lambda: any("harness.trial_worker" in argv for argv in running()), 60)
    proc.kill()  # mid-trial; nothing of `matrix` runs: only the kernel can stop its children
    proc.communicate(timeout=30)
    assert eventually(lambda: not running()), running()
    assert_lock_free(tmp_path / "results")


def test_a_second_interrupted_resume_keeps_the_first_ones_records(tmp_path: Path) -> None:
    attempts: list[list[dict]] = []
    run_dir = tmp_path / "results" / "twice"
    for flags in (("--run-id", "twice"), ("--resume", "twice")):
        proc = start_run(tmp_path, *TINY, *ENDLESS, *flags)
        # The attempt before this one's is set aside before this one writes its own records.
        assert eventually(lambda: len(list(run_dir.glob("*.partial*"))) == len(attempts), 120)
        records = wait_for_trials(proc, "results/twice/*.jsonl", tmp_path)
        proc.send_signal(signal.SIGTERM)
        assert proc.communicate(timeout=120) and proc.returncode == 143
        attempts.append(trials_in(records))
    proc = start_run(tmp_path, *TINY, "--repeats", "1", "--resume", "twice")
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert trials_in(run_dir / f"{records.name}.partial") == attempts[0]
    assert trials_in(run_dir / f"{records.name}.partial-2") == attempts[1]
    counted = [r for r in read_run(run_dir).records if r["kind"] == "trial"]
    assert len(counted) == 1  # the report reads the attempt that finished, once


def test_setting_aside_never_replaces_an_earlier_attempt(tmp_path: Path) -> None:
    """Plain files (no run): a name planted at the next free slot is skipped, not followed."""
    records = tmp_path / "env.jsonl"
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    (tmp_path / "env.jsonl.partial-2").symlink_to(target)
    for attempt in ("first", "second"):
        records.write_text(attempt)
        set_aside(records)
    assert not records.exists()
    assert (tmp_path / "env.jsonl.partial").read_text() == "first"
    assert (tmp_path / "env.jsonl.partial-3").read_text() == "second"
    assert target.read_text() == "keep me"
    set_aside(records)  # nothing to set aside: nothing happens


# ---- Docker -------------------------------------------------------------------------------------


@pytest.fixture
def labelled_containers(docker_engine) -> Iterator[dict[str, object]]:
    """Two sleeping containers of a test run: one whose `matrix` has ended, one whose is alive
    (this very process)."""
    ended = subprocess.run(
        [
            sys.executable,
            "-c",
            "from matrix.execute.lock import holder_token; print(holder_token())",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    containers = {
        holder: docker_engine.containers.run(
            "tf-load-matrix/base:bookworm",
            ["sleep", "600"],
            detach=True,
            labels={RUN_LABEL: f"test-{os.getpid()}-{name}", HOLDER_LABEL: holder},
        )
        for name, holder in (("ended", ended), ("alive", holder_token()))
    }
    yield {"ended": containers[ended], "alive": containers[holder_token()]}
    for container in containers.values():
        with contextlib.suppress(docker.errors.NotFound):  # the ended one should be gone
            container.remove(force=True)


def test_a_docker_run_removes_the_containers_of_killed_runs(
    tmp_path: Path, docker_engine, labelled_containers
) -> None:
    """The run itself fails fast (its base image cannot be pulled here): the cleanup happens
    when it takes the lock, before anything is built."""
    (tmp_path / "matrix.yaml").write_text(
        MATRIX_YAML.replace('["2.21"]', '["2.3"]').replace('["3.11"]', '["3.8"]')
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "matrix",
            "run",
            "--backend",
            "docker",
            "--build-dir",
            str(tmp_path / "build"),
            *TINY,
            "--repeats",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    ended, alive = labelled_containers["ended"], labelled_containers["alive"]
    said = next(line for line in proc.stdout.splitlines() if "left by ended run(s)" in line)
    assert ended.labels[RUN_LABEL] in said and alive.labels[RUN_LABEL] not in said
    left = {c.id for c in docker_engine.containers.list(all=True)}
    assert ended.id not in left and alive.id in left


def test_sigterm_stops_a_docker_run_and_removes_its_container(
    tmp_path: Path, cpu_image, image_build_root: Path, docker_engine
) -> None:
    (tmp_path / "matrix.yaml").write_text(MATRIX_YAML)
    proc = start_run(
        tmp_path, "--build-dir", str(image_build_root), *TINY, *ENDLESS, backend="docker"
    )
    records = wait_for_trials(proc, "results/*/tf2.21-py3.11-cpu.jsonl", tmp_path)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output
    run_id = records.parent.name
    assert docker_engine.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}) == []
    assert_lock_free(tmp_path / "results")
    kinds = [json.loads(line)["kind"] for line in records.read_text().splitlines()]
    assert kinds.count("trial") >= 2 and "done" not in kinds


def test_a_killed_docker_runs_container_goes_with_the_next_run(
    tmp_path: Path, cpu_image, image_build_root: Path, docker_engine
) -> None:
    (tmp_path / "matrix.yaml").write_text(MATRIX_YAML)
    proc = start_run(
        tmp_path, "--build-dir", str(image_build_root), *TINY, *ENDLESS, backend="docker"
    )
    records = wait_for_trials(proc, "results/*/tf2.21-py3.11-cpu.jsonl", tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    label = {"label": f"{RUN_LABEL}={records.parent.name}"}
    assert docker_engine.containers.list(filters=label), "the killed run's container runs on"
    proc = start_run(
        tmp_path, "--build-dir", str(image_build_root), *TINY, "--repeats", "1", backend="docker"
    )
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert f"removed the containers left by ended run(s) {records.parent.name}" in output
    assert docker_engine.containers.list(all=True, filters=label) == []
