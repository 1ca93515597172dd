"""`matrix doctor` against this host's real daemon, page cache, filesystems, Pythons and index.

Nothing is faked: an unreachable daemon or index is a real one (a socket path that does not
exist, a closed loopback port), and the tmpfs case is the real /dev/shm.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness import cache
from matrix.cli import app
from matrix.errors import ExitCode
from matrix.execute import hostdrop
from matrix.ops.doctor import (
    check_cache_control,
    check_disk,
    check_docker,
    check_index,
    check_page_cache,
    check_pythons,
    check_uv,
)
from matrix.plan.compat import version_key
from matrix.plan.pythons import find_pythons

NAMES = (
    "docker",
    "gpu runtime",
    "cold cache",
    "mincore/fadvise",
    "disk: results",
    "disk: reports",
    "disk: docker",
    "pythons",
    "uv",
    "package index",
)
DEAD_INDEX = "http://127.0.0.1:9/simple"  # the discard port: nothing listens, refused at once


def _doctor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line, so lines can be matched
    return CliRunner().invoke(
        app,
        [
            "doctor",
            "--results-dir",
            str(tmp_path / "results"),
            "--reports-dir",
            str(tmp_path / "reports"),
        ],
    )


def test_real_daemon_is_ok_with_the_version_docker_prints(tmp_path, monkeypatch) -> None:
    server = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    line, info = check_docker()
    assert line.status == "ok"
    assert f"Docker Engine {server} " in line.detail
    assert info is not None and info["DockerRootDir"] in line.detail

    result = _doctor(tmp_path, monkeypatch)
    assert result.exit_code == ExitCode.OK, result.stdout
    assert re.search(rf"│ docker +│ ok +│ Docker Engine {re.escape(server)} ", result.stdout)
    assert " 0 failed: this host can run the matrix" in result.stdout


def test_unreachable_daemon_fails_and_every_other_line_is_still_printed(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    line, info = check_docker()
    assert (line.status, info) == ("fail", None)
    assert "unix:///nonexistent.sock" in line.detail
    assert "start it" in line.fix

    result = _doctor(tmp_path, monkeypatch)
    assert result.exit_code == ExitCode.ENVIRONMENT_ERROR == 3
    for name in NAMES:
        assert re.search(rf"│ {re.escape(name)} +│ (ok|warn|fail) +│", result.stdout), name
    assert re.search(r"│ docker +│ fail +│ cannot reach the Docker daemon", result.stdout)
    assert re.search(
        r"│ gpu runtime +│ warn +│ unknown: the Docker daemon does not answer", result.stdout
    )
    assert "some check failed" in result.stdout
    assert not (tmp_path / "results").exists()  # doctor probes; it creates nothing


def test_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(app, ["doctor", "--help"])
    assert result.exit_code == 0
    assert "0  no check failed" in result.stdout
    assert "3  some check failed" in result.stdout


def test_mincore_and_fadvise_work_on_the_repository_filesystem() -> None:
    line = check_cache_control(Path(__file__).parent)
    assert line.status == "ok", line
    assert "100% resident after a read, 0% after eviction" in line.detail
    assert not list(Path(__file__).parent.glob(".matrix-doctor-*"))


def test_eviction_on_tmpfs_is_a_warning_with_the_fix() -> None:
    line = check_cache_control(Path("/dev/shm"))  # tmpfs: its pages are the file, never evicted
    assert line.status == "warn"
    assert "recorded invalid" in line.detail
    assert "not tmpfs" in line.fix


def test_cold_cache_route_follows_privilege_and_daemon() -> None:
    _, info = check_docker()
    as_here = check_page_cache(hostdrop.route(), info)
    if cache.drop_caches_allowed():
        assert as_here.status == "ok"
        assert "container's request" in as_here.detail
    else:
        assert as_here.status in ("ok", "warn")

    unprivileged_local = check_page_cache(None, None)
    assert unprivileged_local.status == "warn"
    assert "`cold` trials will be recorded unsupported" in unprivileged_local.detail
    assert "cold-model" in unprivileged_local.detail
    assert "root" in unprivileged_local.fix

    ungranted = check_page_cache(None, info)  # docker, not root, no grant: the grant's line
    assert ungranted.status == "warn" and "recorded unsupported" in ungranted.detail
    assert hostdrop.sudoers_line() in ungranted.fix and hostdrop.SUDOERS_FILE in ungranted.fix
    granted = check_page_cache("sudo", info)
    assert granted.status == "ok" and " ".join(hostdrop.drop_command()) in granted.detail


def test_disk_warns_below_the_threshold_with_a_fix(tmp_path: Path) -> None:
    free_gib = shutil.disk_usage(tmp_path).free / 2**30
    assert check_disk("disk: results", tmp_path / "absent", "prune").status == (
        "ok" if free_gib >= 10 else "warn"
    )
    short = check_disk("disk: results", tmp_path, "prune", min_free_gib=free_gib * 2 + 1)
    assert (short.status, short.fix) == ("warn", "prune")
    assert f"free in {tmp_path}" in short.detail


def test_pythons_line_lists_each_python_and_the_tf_it_runs() -> None:
    line = check_pythons(find_pythons())
    assert line.status == "ok"
    assert re.search(r"3\.11 \(/[^)]+\): TF 2\.\d+–2\.21", line.detail), line.detail

    assert check_pythons({}).status == "warn"
    old = check_pythons({"3.7": Path("/usr/bin/python3.7")})
    assert (old.status, "too old for the harness (needs >= 3.8)" in old.detail) == ("warn", True)


def test_uv_line_says_whether_the_venv_backend_can_install() -> None:
    line = check_uv()
    if line.status == "ok":
        assert re.match(r"uv \d+\.\d+", line.detail), line.detail
    else:
        assert line.status == "warn"
        assert "the venv backend cannot create environments" in line.detail
        assert f"{sys.executable} -m pip install uv" in line.fix
    assert (line.status == "ok") == (
        shutil.which("uv") is not None
        or os.access(Path(sys.executable).parent / "uv", os.X_OK)
        or importlib.util.find_spec("uv") is not None
    )


def test_index_of_the_host_pip_settings_has_tensorflow_cpu() -> None:
    line = check_index()
    assert line.status == "ok", line
    newest = re.search(r"tensorflow-cpu (\d+\.\d+\.\d+) \(newest\)", line.detail)
    assert newest, line.detail
    assert version_key(newest[1]) >= version_key(version("tensorflow-cpu"))


def test_unreachable_index_fails_fast_with_the_fix(monkeypatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", DEAD_INDEX)
    began = time.monotonic()
    line = check_index()
    assert time.monotonic() - began < 15
    assert line.status == "fail"
    assert DEAD_INDEX in line.detail and "Connection refused" in line.detail
    assert "PIP_INDEX_URL" in line.fix
