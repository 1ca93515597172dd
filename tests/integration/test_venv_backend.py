"""`matrix run --backend venv`: one real virtual environment per TF release, no Docker involved.

Two TF releases that install on this machine's Python 3.11 — 2.12 (Keras 2 inside TensorFlow)
and 2.21 (Keras 3, LiteRT) — are made with uv from this host's interpreter and measured with the
tiny model. The venvs are kept in one folder for the module, so the `auto` test reuses them, and
the second run shows that an unchanged environment is not reinstalled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from matrix.build.venvs import ensure_venv
from matrix.execute.backends.venv import VenvBackend
from matrix.execute.harness_run import HarnessRun
from matrix.execute.matrix_run import MatrixRun
from matrix.execute.sweep import Sweep
from matrix.plan.config import load_config
from matrix.plan.environments import expand
from matrix.plan.pythons import find_pythons
from matrix.results.dataset import load_runs
from matrix.results.runs import run_dirs
from tests.integration.docker_matrix import matrix, records

FIXTURE_RUN = (
    Path(__file__).parents[1] / "fixtures" / "runs" / "20261127-195717-722a"
)  # real Docker
SLICE = (
    "--models",
    "dense-10k",
    "--formats",
    "h5,tflite",
    "--cache",
    "warm,cold-model",
    "--repeats",
    "1",
    "--warmup",
    "0",
    "--inference-runs",
    "2",
    "--no-report",
)
ENVS = ["tf2.12-py3.11-cpu", "tf2.21-py3.11-cpu"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, venv_root: Path):
    work = tmp_path_factory.mktemp("venv-run")
    proc = matrix(
        work,
        "run",
        "--backend",
        "venv",
        "--tf",
        "2.12,2.21",
        "--py",
        "3.11",
        "--build-dir",
        str(venv_root),
        *SLICE,
    )
    (run_dir,) = run_dirs(work / "results")
    return proc, run_dir


def test_two_tf_releases_are_measured_each_in_its_own_venv(first_run) -> None:
    proc, run_dir = first_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    for env_id in ENVS:
        found = records(run_dir, env_id)
        assert found[-1]["kind"] == "done"
        (environment,) = [r for r in found if r["kind"] == "environment"]
        assert environment["env_id"] == env_id
        assert environment["tensorflow"].startswith(env_id[2:6]), environment["tensorflow"]
        assert not environment["in_container"]
        trials = [r for r in found if r["kind"] == "trial"]
        assert len(trials) == 4 and all(t["status"] == "ok" for t in trials), trials
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["backend"] == "venv"
    assert [o["status"] for o in manifest["outcomes"]] == ["ok", "ok"]
    assert all(Path(o["image"]).parent.name == "venvs" for o in manifest["outcomes"])


def test_bytecode_is_compiled_as_pip_does_in_the_images(first_run) -> None:
    """Without .pyc files (and PYTHONDONTWRITEBYTECODE set) every trial would recompile
    TensorFlow's Python, and `import_s` would time that: 12-15 s instead of 5-7 s here."""
    _, run_dir = first_run
    for outcome in json.loads((run_dir / "manifest.json").read_text())["outcomes"]:
        site = next(Path(outcome["image"]).glob("lib/python*/site-packages"))
        assert next((site / "tensorflow" / "__pycache__").glob("*.pyc"), None), outcome["image"]


def test_keras_differs_as_the_pins_say(first_run) -> None:
    _, run_dir = first_run
    kinds = {
        env_id: next(r for r in records(run_dir, env_id) if r["kind"] == "environment")
        for env_id in ENVS
    }
    assert kinds["tf2.12-py3.11-cpu"]["keras"].startswith("2.12")
    assert kinds["tf2.21-py3.11-cpu"]["keras"].startswith("3.")


def test_records_carry_every_field_the_docker_backend_writes(first_run) -> None:
    """Same schema: each kind of record has at least the fields a real Docker run's has, and
    both runs merge into one dataset without a problem."""
    _, run_dir = first_run
    docker_keys = _keys_by_kind(FIXTURE_RUN / "tf2.21-py3.11-cpu.jsonl")
    venv_keys = _keys_by_kind(run_dir / "tf2.21-py3.11-cpu.jsonl")
    assert set(docker_keys) <= set(venv_keys)  # newer kinds (e.g. precision) may be added
    for kind, keys in docker_keys.items():
        assert keys - {"reason"} <= venv_keys[kind], (kind, keys - venv_keys[kind])
    merged = load_runs([FIXTURE_RUN, run_dir])
    assert merged.problems == []
    assert set(merged.trials["env_id"]) >= {*ENVS, "tf2.21-py3.11-cpu-tfkeras"}


def test_a_second_run_reinstalls_nothing(tmp_path: Path, venv_root: Path, first_run) -> None:
    proc = matrix(
        tmp_path,
        "run",
        "--backend",
        "venv",
        "--tf",
        "2.21",
        "--py",
        "3.11",
        "--build-dir",
        str(venv_root),
        *SLICE,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    (run_dir,) = run_dirs(tmp_path / "results")
    (outcome,) = json.loads((run_dir / "manifest.json").read_text())["outcomes"]
    assert outcome["status"] == "ok" and outcome["image_built"] is False
    assert outcome["build_s"] < 5


def test_auto_picks_venv_when_no_docker_daemon_answers(
    tmp_path: Path, venv_root: Path, first_run
) -> None:
    proc = matrix(
        tmp_path,
        "run",
        "--backend",
        "auto",
        "--tf",
        "2.21",
        "--build-dir",
        str(venv_root),
        *SLICE,
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "backend auto: venv (cannot reach the Docker daemon" in proc.stdout
    (run_dir,) = run_dirs(tmp_path / "results")
    # `python: auto` means the newest Python TF 2.21 supports *that this host has*: 3.11.
    assert records(run_dir, "tf2.21-py3.11-cpu")[-1]["kind"] == "done"


def test_a_python_missing_here_is_skipped_with_the_reason() -> None:
    config = load_config(None, {"tf": "2.12,2.21", "python": "3.9,3.11"})
    backend = VenvBackend(Path("unused"), {"3.11": find_pythons()["3.11"]})
    environments, skipped = backend.environments(config)
    assert [e.id for e in environments] == ["tf2.12-py3.11-cpu", "tf2.21-py3.11-cpu"]
    reasons = {s.id: s.reason for s in skipped}
    assert set(reasons) == {"tf2.12-py3.9-cpu", "tf2.21-py3.9-cpu"}
    assert "Python 3.9 is not installed on this host (found: 3.11)" in reasons["tf2.12-py3.9-cpu"]
    assert "--backend docker" in reasons["tf2.12-py3.9-cpu"]


def test_gpu_cells_are_skipped_without_a_gpu() -> None:
    config = load_config(None, {"tf": "2.21", "python": "3.11", "device": "cpu,gpu"})
    environments, skipped = VenvBackend(Path("unused"), find_pythons()).environments(config)
    assert [e.id for e in environments] == ["tf2.21-py3.11-cpu"]
    assert [s.id for s in skipped] == ["tf2.21-py3.11-gpu"]
    assert "nvidia-smi not found" in skipped[0].reason


def test_pins_that_cannot_install_are_a_result_not_a_crash(tmp_path: Path) -> None:
    (env,) = expand(load_config(None, {"tf": "2.21", "python": "3.11"}))[0]
    broken = env.__class__(**{**env.__dict__, "packages": ("tensorflow-cpu==0.0.1",)})
    result = ensure_venv(broken, find_pythons()["3.11"], tmp_path, tmp_path / "install.log")
    assert result.status == "error" and not result.built
    assert "uv pip exited with" in result.reason and "tensorflow-cpu" in result.reason
    assert str(tmp_path / "install.log") in result.reason
    assert not (result.path / ".tf-load-matrix-complete").exists()


def _keys_by_kind(path: Path) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        keys.setdefault(record["kind"], set()).update(record)
    return keys


def test_the_next_environment_starts_while_the_last_is_torn_down(
    tmp_path: Path, venv_root: Path, first_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep's schedule, with the two real venv harnesses: the second is launched once the
    first has written `done` but before the first is released (the overlap that saves a
    container start per environment), and its gate opens only after that release, so nothing
    runs beside a measurement. A spy on the steps records their order and calls the real ones.
    """
    steps: list[tuple[str, str]] = []

    def spy(step: str, real: Callable) -> Callable:
        def record(run: HarnessRun, *args: Any) -> Any:
            returned = real(run, *args)
            steps.append((step, run.records_file.stem))
            return returned

        return record

    monkeypatch.setattr(HarnessRun, "__init__", spy("launched", HarnessRun.__init__))
    monkeypatch.setattr(HarnessRun, "start", spy("started", HarnessRun.start))
    monkeypatch.setattr(HarnessRun, "finish", spy("released", HarnessRun.finish))
    config = load_config(
        None,
        {
            "results_dir": str(tmp_path),
            "tf": "2.12,2.21",
            "python": "3.11",
            "models": "dense-10k",
            "formats": "h5",
            "cache": "warm",
            "repeats": 1,
            "warmup": 0,
            "inference_runs": 1,
        },
    )
    backend = VenvBackend(venv_root, find_pythons())
    environments, skipped = backend.environments(config)
    matrix_run = MatrixRun(config=config, run_id="schedule")
    outcomes = Sweep(matrix_run, backend, environments, skipped, Console(quiet=True)).run()
    assert [o.status for o in outcomes] == ["ok", "ok"]
    first, second = ENVS
    assert steps == [
        ("launched", first),
        ("started", first),
        ("launched", second),
        ("released", first),
        ("started", second),
        ("released", second),
    ]
    for env_id in ENVS:
        assert records(matrix_run.run_dir, env_id)[-1]["kind"] == "done"
    assert not list(matrix_run.run_dir.glob(".gate-*"))  # every gate removed
