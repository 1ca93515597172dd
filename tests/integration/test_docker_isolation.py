"""`matrix run --backend docker --isolation container`: every trial in a fresh container.

The run is real (the `cpu_image` fixture's image, the real engine); that each trial had a
container of its own is shown twice, independently: by the engine's own `start` events, and by
the container id each trial worker read from inside (docs/records.md: `container_id`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from matrix.errors import ConfigError
from matrix.execute.backends.docker import RUN_LABEL, TRIAL_LABEL, run_request, trial_request
from matrix.execute.matrix_run import MatrixRun
from matrix.plan.config import load_config
from tests.integration.docker_matrix import MATRIX_YAML, matrix, records

ENV_ID = "tf2.21-py3.11-cpu"
CELLS = {(fmt, mode) for fmt in ("h5", "tflite") for mode in ("warm", "cold")}


@pytest.fixture(scope="module")
def isolated(tmp_path_factory, cpu_image, image_build_root: Path, docker_engine):
    """The tiny model, h5 and tflite, warm and cold (the host drops the cache: it runs as root,
    as in CI), one trial each; and the containers the engine started for the run meanwhile."""
    work = tmp_path_factory.mktemp("isolated")
    (work / "matrix.yaml").write_text(MATRIX_YAML)
    since = time.time() - 1
    proc = matrix(
        work,
        "run",
        "--backend",
        "docker",
        "--isolation",
        "container",
        "--build-dir",
        str(image_build_root),
        "--no-report",
        "--models",
        "dense-10k",
        "--formats",
        "h5,tflite",
        "--cache",
        "warm,cold",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--inference-runs",
        "2",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = [
        path
        for path in (work / "results").iterdir()
        if path.is_dir() and not path.name.startswith(".")
    ]
    started = [
        event["id"]
        for event in docker_engine.events(
            since=since,
            until=time.time() + 1,
            decode=True,
            filters={"type": "container", "event": "start", "label": f"{RUN_LABEL}={run_dir.name}"},
        )
    ]
    return run_dir, started


def test_every_trial_ran_in_a_container_of_its_own(isolated) -> None:
    run_dir, started = isolated
    got = records(run_dir, ENV_ID)
    assert got[-1]["kind"] == "done"
    env = next(r for r in got if r["kind"] == "environment")
    trials = [r for r in got if r["kind"] == "trial"]
    assert {(t["format"], t["cache_mode"]) for t in trials} == CELLS and len(trials) == 4
    assert all(t["status"] == "ok" and t["isolation"] == "container" for t in trials), trials
    ids = [t["container_id"] for t in trials]
    assert len(set(ids)) == len(ids) and env["container_id"] not in ids and None not in ids
    # the engine saw the harness's container and one more per trial: those very ones
    assert len(started) == 1 + len(trials) and set(ids) <= set(started)
    assert env["container_id"] in started


def test_the_cache_state_is_still_proven_across_containers(isolated) -> None:
    """The harness prepares and proves the cache; the trial's container reads the same pages."""
    run_dir, _ = isolated
    for trial in (r for r in records(run_dir, ENV_ID) if r["kind"] == "trial"):
        if trial["cache_mode"] == "warm":
            assert trial["resident_before"] >= 0.95 and trial["eviction"] == "read"
        else:
            assert trial["eviction"] == "host-drop_caches"
            assert trial["resident_before"] <= 0.01
            assert trial["import_libs_resident_before"] <= 0.01
        assert trial["load_s"] > 0 and trial["parity_max_abs_diff"] <= 1e-4


def test_no_container_and_no_handshake_file_is_left(isolated, docker_engine) -> None:
    run_dir, _ = isolated
    left = docker_engine.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_dir.name}"})
    assert left == []
    assert [p.name for p in (run_dir / f".host-calls-{ENV_ID}").iterdir()] == []


def test_a_trial_container_is_its_environment_container_running_only_the_worker(
    cpu_env, tmp_path: Path
) -> None:
    run = MatrixRun(config=load_config(None, {"results_dir": str(tmp_path)}), run_id="iso-test")
    call = {
        "kind": "trial",
        "id": "7-123",
        "timeout_s": 900,
        "argv": ["/opt/venv/bin/python3", "-m", "harness.trial_worker", "--format", "h5"],
        "env": {"TF_CPP_MIN_LOG_LEVEL": "2"},
    }
    harness = run_request(cpu_env, run, "img", host_calls=["trial"])
    trial = trial_request(cpu_env, run, "img", call)
    assert trial["host"] == harness["host"]  # same mounts, no capability, no network
    assert trial["host"]["network_mode"] == "none" and trial["host"]["cap_drop"] == ["ALL"]
    assert trial["image"] == harness["image"] and trial["user"] == harness["user"]
    assert trial["entrypoint"] == ["/opt/venv/bin/python3"]
    assert trial["command"] == ["-m", "harness.trial_worker", "--format", "h5"]
    assert trial["environment"] == {"TF_CPP_MIN_LOG_LEVEL": "2"}  # no host-call folder: no calls
    assert trial["labels"] == {**harness["labels"], TRIAL_LABEL: "7-123"}
    assert trial["name"] == f"{harness['name']}-trial-7-123"
    with pytest.raises(ValueError, match="argv must be a non-empty list"):
        trial_request(cpu_env, run, "img", {**call, "argv": "python -c 1"})


def test_container_isolation_without_docker_is_one_line_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--isolation: container needs the docker backend"):
        load_config(None, {"backend": "local", "isolation": "container"})
    proc = matrix(tmp_path, "run", "--backend", "local", "--isolation", "container")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--isolation process" in proc.stderr and "--backend docker" in proc.stderr
    proc = matrix(
        tmp_path,
        "run",
        "--isolation",
        "container",
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"},
    )
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--isolation container needs a Docker daemon" in proc.stderr
    assert not list(tmp_path.glob("results/*/*.jsonl"))  # no run started
