"""`matrix prune`: real run folders, reports, a `latest` link and Docker volumes, really removed."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path

import docker
import pytest
from typer.testing import CliRunner

from matrix.cli import app
from matrix.execute.lock import LOCK_FILE
from matrix.report.text import size
from tests.lock_helpers import lock_held

RUNS = [
    "20261101-020000-aaaa",
    "20261102-020000-bbbb",
    "20261103-020000-cccc",
    "20261104-020000-dddd",
    "20261105-020000-eeee",
]
STOPPED_OLD = "20261101-010000-0000"  # stopped before its first record, older than every run
STOPPED_NEW = "20261106-020000-ffff"  # the same, newer: not a run yet, not to be deleted
FOREIGN = "from-laptop"  # a run copied in under a name that tells no age


def _folder(path: Path, files: dict[str, int]) -> None:
    for name, length in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(os.urandom(length))


@pytest.fixture
def workspace(in_tmp: Path) -> Path:
    """results/ with five runs and odd folders, reports/ with each run's report and two merged
    ones, and `latest` pointing at the oldest run's report (someone re-rendered it)."""
    for run in [*RUNS, FOREIGN]:
        _folder(
            in_tmp / "results" / run,
            {"tf2.21-py3.11-cpu.jsonl": 30_000, "artifacts/env/model.h5": 200_000},
        )
        _folder(in_tmp / "reports" / run, {"index.html": 50_000})
    _folder(in_tmp / "results" / STOPPED_OLD, {"env.build.log": 5_000})
    _folder(in_tmp / "results" / STOPPED_NEW, {"env.build.log": 5_000})
    _folder(in_tmp / "reports" / f"merged-{RUNS[1]}-1a2b3c", {"index.html": 40_000})
    _folder(in_tmp / "reports" / f"merged-{RUNS[4]}-4d5e6f", {"index.html": 40_000})
    (in_tmp / "reports" / "latest").symlink_to(RUNS[0], target_is_directory=True)
    (in_tmp / "results" / "nightly.log").write_text("last night\n")
    return in_tmp


def _du(path: Path) -> int:
    """What `du` says the folder takes on disk, in bytes: the figure prune must report."""
    return int(
        subprocess.run(
            ["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )


def _prune(*args: str):
    return CliRunner().invoke(app, ["prune", *args], env={"COLUMNS": "200"})


def _listing(root: Path) -> set[str]:
    """Every path under `root`, but the lock file (taking the lock leaves it behind)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.name != LOCK_FILE}


def test_keeps_the_newest_runs_and_removes_older_folders_and_reports(workspace: Path) -> None:
    going = (
        [Path("results", run) for run in (STOPPED_OLD, *RUNS[:3])]
        + [Path("reports", run) for run in RUNS[1:3]]
        + [Path("reports", f"merged-{RUNS[1]}-1a2b3c")]
    )
    sizes = {path: _du(workspace / path) for path in going}
    result = _prune("--keep", "2")
    assert result.exit_code == 0, result.output
    for path in going:
        assert not (workspace / path).exists(), path
        assert f"removed {path} ({size(sizes[path])})" in result.output
    assert (
        f"4 run(s) pruned, {size(sum(sizes.values()))} freed; kept the newest 2 "
        f"({RUNS[3]} … {RUNS[4]})" in result.output
    )
    assert sorted(p.name for p in (workspace / "results").iterdir()) == sorted(
        [*RUNS[3:], STOPPED_NEW, FOREIGN, "nightly.log", LOCK_FILE]
    )
    # The report `latest` points to stays though its run is gone; the kept runs' reports stay.
    assert sorted(p.name for p in (workspace / "reports").iterdir()) == sorted(
        [RUNS[0], *RUNS[3:], FOREIGN, f"merged-{RUNS[4]}-4d5e6f", "latest"]
    )
    assert (workspace / "reports" / "latest" / "index.html").is_file()


def test_dry_run_lists_the_same_and_removes_nothing(workspace: Path) -> None:
    before = _listing(workspace)
    result = _prune("--keep", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    assert _listing(workspace) == before
    listed = re.findall(r"^would remove (\S+) \(", result.output, re.M)
    assert sorted(listed) == sorted(
        [f"results/{run}" for run in (STOPPED_OLD, *RUNS[:3])]
        + [f"reports/{run}" for run in RUNS[1:3]]
        + [f"reports/merged-{RUNS[1]}-1a2b3c"]
    )
    assert "4 run(s) to prune, " in result.output


def test_keeping_as_many_as_there_are_removes_nothing(workspace: Path) -> None:
    before = _listing(workspace)
    result = _prune("--keep", "5")
    assert result.exit_code == 0, result.output
    assert _listing(workspace) == before
    assert "0 run(s) pruned, 0 B freed; kept the newest 5" in result.output


@pytest.mark.parametrize("keep", ["0", "-3"])
def test_keep_below_one_is_a_one_line_error(workspace: Path, keep: str) -> None:
    before = _listing(workspace)
    result = _prune("--keep", keep)
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: --keep {keep}: keep at least 1 run (the newest), e.g. --keep 30\n",
    )
    assert _listing(workspace) == before


def test_a_missing_results_folder_is_a_one_line_error(in_tmp: Path) -> None:
    result = _prune("--keep", "3", "--results-dir", "nowhere")
    assert (result.exit_code, result.stderr) == (
        2,
        "error: --results-dir nowhere: no such folder\n",
    )


def test_refused_while_a_run_holds_the_results_folder(workspace: Path) -> None:
    with lock_held(workspace / "results") as holder:
        before = _listing(workspace)
        result = _prune("--keep", "1")
    assert result.exit_code == 4, result.output
    assert re.fullmatch(
        rf"error: another `matrix run` \(pid {holder.pid}, started at [^)]+\) "
        r"is using results/; wait for it, then prune\n",
        result.stderr,
    )
    assert _listing(workspace) == before


def test_removes_the_docker_volumes_of_pruned_runs_only(
    workspace: Path, docker_engine: docker.DockerClient
) -> None:
    """The Docker backend keeps each run's saved models on a volume `tflm-<run>-<env>`."""
    old, kept = f"tflm-{RUNS[0]}-tf2.21-py3.11-cpu", f"tflm-{RUNS[4]}-tf2.21-py3.11-cpu"
    for name in (old, kept):
        docker_engine.volumes.create(name)
    try:
        docker_engine.containers.run(  # a megabyte of saved model on the old run's volume
            "tf-load-matrix/base:bookworm",
            ["sh", "-c", "head -c 1000000 /dev/zero > /v/m"],
            volumes={old: {"bind": "/v", "mode": "rw"}},
            network_disabled=True,
            remove=True,
        )
        result = _prune("--keep", "2")
        assert result.exit_code == 0, result.output
        assert re.search(rf"^removed Docker volume {old} \(1(\.\d+)? MB\)$", result.output, re.M)
        names = {v.name for v in docker_engine.volumes.list()}
        assert old not in names and kept in names
    finally:
        for name in (old, kept):
            with contextlib.suppress(docker.errors.NotFound):
                docker_engine.volumes.get(name).remove()


def test_without_docker_the_volumes_are_said_to_be_unchecked(workspace: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["prune", "--keep", "2"],
        env={"COLUMNS": "200", "DOCKER_HOST": "unix:///nonexistent.sock"},
    )
    assert result.exit_code == 0, result.output
    assert (
        "Docker daemon not reachable: the runs' artifact volumes (named after their run "
        "ids) were not looked for" in result.output
    )
    assert not (workspace / "results" / RUNS[0]).exists()
