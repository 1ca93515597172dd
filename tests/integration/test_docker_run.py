"""`matrix run --backend docker` on the real engine: a sweep over a working and a broken image.

The working environment is current TF on the Debian base image (built once per session by the
`cpu_image` fixture); the broken one is TF 2.3, whose Python 3.8 base image cannot be pulled on
a machine without a registry — exactly the failure a real sweep meets, and it must not sink the
other environment.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docker.types import DeviceRequest

from matrix.execute.backends.docker import (
    ARTIFACT_CACHE_MOUNT,
    RUN_LABEL,
    DockerBackend,
    prepare_host_files,
    run_request,
    start_container,
)
from matrix.execute.matrix_run import MatrixRun
from matrix.plan.config import load_config
from matrix.plan.environments import Environment, expand
from matrix.results.runs import run_dirs
from tests.integration.docker_matrix import MATRIX_YAML, matrix, records

SLICE = (
    "--models",
    "dense-10k",
    "--formats",
    "h5,tflite",
    "--repeats",
    "1",
    "--warmup",
    "0",
    "--inference-runs",
    "2",
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("docker-run")
    (work / "matrix.yaml").write_text(
        MATRIX_YAML.replace('["2.21"]', '["2.3", "2.21"]').replace('["3.11"]', '["3.8", "3.11"]')
    )
    return work


@pytest.fixture(scope="module")
def sweep(workdir: Path, cpu_image, image_build_root: Path):
    """Both environments, cache modes cold-model, warm and cold.

    The container may not drop the page cache; `matrix` runs as root on the host (as in CI), so
    it drops it for each cold trial on the container's request.
    """
    proc = matrix(
        workdir,
        "run",
        "--backend",
        "docker",
        "--build-dir",
        str(image_build_root),
        "--cache",
        "cold-model,warm,cold",
        *SLICE,
    )
    (run_dir,) = run_dirs(workdir / "results")
    return proc, run_dir


def test_a_broken_environment_does_not_sink_the_sweep(sweep) -> None:
    proc, run_dir = sweep
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 environments: 1 build-failed, 1 ok (tf2.3-py3.8-cpu)" in proc.stdout
    (failure,) = records(run_dir, "tf2.3-py3.8-cpu")
    assert failure["kind"] == "failure" and failure["scope"] == "environment"
    assert "python:3.8-slim is not available locally and cannot be pulled" in failure["reason"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {o["env_id"]: o["status"] for o in manifest["outcomes"]} == {
        "tf2.3-py3.8-cpu": "build-failed",
        "tf2.21-py3.11-cpu": "ok",
    }
    assert manifest["ended"] and manifest["matrix"]["tf"] == ["2.3", "2.21"]


def test_the_working_environment_measured_in_its_container(sweep, cpu_image) -> None:
    _, run_dir = sweep
    got = records(run_dir, "tf2.21-py3.11-cpu")
    env = next(r for r in got if r["kind"] == "environment")
    assert env["in_container"] is True and env["tensorflow"] == "2.21.0"
    assert env["python"].startswith("3.11.") and env["drop_caches_allowed"] is False
    assert env["drop_caches_via"] == "host"
    # isolation process (the default): every trial ran as a process in this one container
    trial_containers = {t["container_id"] for t in got if t["kind"] == "trial" and "load_s" in t}
    assert trial_containers == {env["container_id"]} and env["container_id"]
    assert {t["isolation"] for t in got if "load_s" in t} == {"process"}
    artifacts = [r for r in got if r["kind"] == "artifact"]
    assert {a["storage"]["kind"] for a in artifacts} == {"volume"}
    trials = [r for r in got if r["kind"] == "trial"]
    measured = {(t["format"], t["cache_mode"]): t for t in trials}
    for fmt in ("h5", "tflite"):
        assert measured[(fmt, "cold-model")]["status"] == "ok"
        assert measured[(fmt, "cold-model")]["resident_before"] <= 0.01
        assert measured[(fmt, "warm")]["status"] == "ok"
        assert measured[(fmt, "warm")]["resident_before"] >= 0.95
        cold = measured[(fmt, "cold")]
        assert cold["status"] == "ok" and cold["eviction"] == "host-drop_caches"
        assert cold["resident_before"] <= 0.01 and cold["import_libs_resident_before"] <= 0.01


def test_no_container_is_left_behind(sweep, docker_engine) -> None:
    _, run_dir = sweep
    left = docker_engine.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_dir.name}"})
    assert left == []


def test_a_second_run_builds_no_image(workdir: Path, sweep, image_build_root: Path) -> None:
    proc = matrix(workdir, "build", "--build-dir", str(image_build_root), "--only", "tf2.21-*")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 image(s) built, 1 found by content hash" in proc.stdout


def test_resume_skips_complete_environments(workdir: Path, sweep, image_build_root) -> None:
    _, run_dir = sweep
    proc = matrix(
        workdir,
        "run",
        "--backend",
        "docker",
        "--build-dir",
        str(image_build_root),
        "--resume",
        run_dir.name,
        "--cache",
        "cold-model,warm,cold",
        *SLICE,
    )
    assert proc.returncode == 1  # the broken environment is still broken
    assert "tf2.21-py3.11-cpu: already complete in this run, skipped" in proc.stdout
    assert (run_dir / "tf2.3-py3.8-cpu.jsonl.partial").exists()  # the old attempt, kept aside


def test_the_container_has_no_network(docker_engine, cpu_image, tmp_path: Path) -> None:
    """The exact request a run sends, with the harness swapped for a look at the interfaces."""
    env = next(iter(expand(load_config(None, {"tf": ["2.21"], "python": ["3.11"]}))[0]))
    run = MatrixRun(config=load_config(None, {"results_dir": str(tmp_path)}), run_id="net-test")
    prepare_host_files(run, env.id)
    request = run_request(env, run, cpu_image.tag)
    request["command"] = ["-c", "import socket; print(socket.if_nameindex())"]
    container = start_container(docker_engine, request, entrypoint=["python3"])
    try:
        assert container.wait(timeout=120)["StatusCode"] == 0
        output = container.logs().decode()
        container.reload()  # start_container returns the bare id: inspect it now
        assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    finally:
        container.remove(force=True)
        docker_engine.volumes.get(request["name"]).remove(force=True)
    assert "'lo'" in output and "eth0" not in output


def test_each_image_sees_only_its_own_artifact_cache(tmp_path: Path) -> None:
    """The request alone (no engine): one cache folder per image tag, read-write, and the
    harness told where it is; another image's container gets another folder."""
    env = next(iter(expand(load_config(None, {"tf": ["2.21"], "python": ["3.11"]}))[0]))
    run = MatrixRun(config=load_config(None, {"results_dir": str(tmp_path)}), run_id="cache")
    requests = [run_request(env, run, tag) for tag in ("tflm:a", "tflm:b")]
    caches = [
        {
            host: bind
            for host, bind in r["host"]["binds"].items()
            if bind["bind"] == ARTIFACT_CACHE_MOUNT
        }
        for r in requests
    ]
    assert [len(c) for c in caches] == [1, 1] and caches[0].keys() != caches[1].keys()
    (folder, bind), _ = (next(iter(c.items())) for c in caches)
    assert bind["mode"] == "rw" and Path(folder).parent == tmp_path.absolute() / ".artifact-cache"
    command = requests[0]["command"]
    assert command[command.index("--artifact-cache") + 1] == ARTIFACT_CACHE_MOUNT


def test_gpu_cells_request_every_gpu_and_are_skipped_without_nvidia(docker_engine) -> None:
    """No GPU exists here: the request sent to the engine is checked, and the plan skips."""
    config = load_config(None, {"tf": ["2.21"], "python": ["3.11"], "device": ["cpu", "gpu"]})
    gpu: Environment = next(e for e in expand(config)[0] if e.device == "gpu")
    run = MatrixRun(config=config, run_id="gpu-test")
    request = run_request(gpu, run, "some-image")
    assert request["host"]["device_requests"] == [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    assert request["host"]["cap_drop"] == ["ALL"] and "cap_add" not in request["host"]
    assert request["host"]["network_mode"] == "none"
    environments, skipped = DockerBackend(docker_engine, Path("build"), None).environments(config)
    assert [e.id for e in environments] == ["tf2.21-py3.11-cpu"]
    assert [s.id for s in skipped] == ["tf2.21-py3.11-gpu"]
    assert "no NVIDIA runtime" in skipped[0].reason


def test_no_daemon_is_one_line_with_the_fix(tmp_path: Path) -> None:
    proc = matrix(
        tmp_path,
        "run",
        "--backend",
        "docker",
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"},
    )
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and "--backend venv" in proc.stderr


def test_ctrl_c_removes_the_container_and_keeps_the_records(
    tmp_path: Path, cpu_image, image_build_root: Path, docker_engine
) -> None:
    (tmp_path / "matrix.yaml").write_text(MATRIX_YAML)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "matrix",
            "run",
            "--backend",
            "docker",
            "--build-dir",
            str(image_build_root),
            "--models",
            "dense-10k",
            "--formats",
            "h5,tflite",
            "--cache",
            "warm",
            "--repeats",
            "30",
            "--warmup",
            "0",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    records_file = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        found = list((tmp_path / "results").glob("*/tf2.21-py3.11-cpu.jsonl"))
        if found and found[0].read_text().count('"kind": "trial"') >= 2:
            records_file = found[0]
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    assert records_file is not None, "no trials within 600 s"
    proc.send_signal(signal.SIGINT)  # what the terminal's Ctrl-C does to `matrix`
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "resume with: matrix run --resume" in output
    run_id = records_file.parent.name
    assert docker_engine.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}) == []
    kinds = [json.loads(line)["kind"] for line in records_file.read_text().splitlines()]
    assert kinds.count("trial") >= 2 and "done" not in kinds
