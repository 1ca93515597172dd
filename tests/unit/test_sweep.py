"""The sweep every backend goes through, driven by a fake backend whose harness writes records
in milliseconds (`fake_backend.py`): ordering, resume, failure isolation, several slots, Ctrl-C.
The real backends run the same sweep in tests/integration."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from harness.contract import fields_of
from harness.envinfo import local_env_id
from matrix.cli.run import measure
from matrix.errors import EnvironmentFailure, ExitCode
from matrix.execute.backends.local import LocalBackend
from matrix.execute.harness_run import HarnessRun
from matrix.execute.matrix_run import MatrixRun
from matrix.execute.sweep import Sweep
from matrix.plan.config import load_config
from matrix.results.reader import MANIFEST, is_complete, read_jsonl
from tests.unit.fake_backend import LOST_ONCE, UNBUILDABLE, FakeBackend, fake_env

A, B, C = "tf2.15-py3.11-cpu", "tf2.16-py3.11-cpu", "tf2.17-py3.11-cpu"
ENVS = [fake_env(minor) for minor in ("2.15", "2.16", "2.17")]


def run_in(tmp_path: Path, run_id: str = "fake-run") -> MatrixRun:
    config = load_config(
        None,
        {
            "results_dir": str(tmp_path),
            "models": "dense-10k",
            "formats": "h5,keras",
            "cache": "warm",
            "repeats": 2,
            "warmup": 1,
        },
    )
    return MatrixRun(config=config, run_id=run_id)


def sweep(run: MatrixRun, backend: FakeBackend, envs: list = ENVS) -> Sweep:
    return Sweep(run, backend, envs, [], Console(quiet=True))


def records(run: MatrixRun, env_id: str) -> list[dict]:
    return read_jsonl(run.records_file(env_id)).records


def manifest(run: MatrixRun) -> dict:
    return json.loads((run.run_dir / MANIFEST).read_text())


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What happened, in order: the fake backend's launches and releases, and each start gate
    the sweep opened (`started <env>`)."""
    happened: list[str] = []
    real = HarnessRun.start

    def start(run: HarnessRun) -> None:
        happened.append(f"started {run.env_id}")
        real(run)

    monkeypatch.setattr(HarnessRun, "start", start)
    return happened


def test_environments_run_in_turn_and_the_next_launches_while_the_last_ends(
    tmp_path: Path, events: list[str]
) -> None:
    backend = FakeBackend({}, events=events)
    run = run_in(tmp_path)
    outcomes = sweep(run, backend).run()
    assert [(o.env_id, o.status) for o in outcomes] == [(A, "ok"), (B, "ok"), (C, "ok")]
    assert backend.events == [
        f"launched {A}",
        f"started {A}",
        f"launched {B}",  # held at its gate while A is released
        f"released {A}",
        f"started {B}",
        f"launched {C}",
        f"released {B}",
        f"started {C}",
        f"released {C}",
    ]
    for env in ENVS:
        got = records(run, env.id)
        assert is_complete(got) and len([r for r in got if r["kind"] == "trial"]) == 6
        for record in got:  # the fake harness writes what the contract defines, no more
            assert set(record) <= set(fields_of(record["kind"])), record["kind"]
    assert manifest(run)["ended"] and manifest(run)["backend"] == "fake"
    assert not list(run.run_dir.glob(".gate-*"))  # every gate removed


def test_a_failing_environment_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    run = run_in(tmp_path)
    outcomes = sweep(run, FakeBackend({A: UNBUILDABLE, B: "fail"})).run()
    assert [o.status for o in outcomes] == ["build-failed", "run-failed", "ok"]
    (unbuilt,) = records(run, A)
    assert unbuilt["kind"] == "failure" and unbuilt["reason"] == "fake build failed: planted"
    failures = [r["reason"] for r in records(run, B) if r["kind"] == "failure"]
    assert "planted: tensorflow is broken" in failures[0]  # the harness's own
    assert failures[1] == (
        "the harness exited with code 1: TensorFlow does not import: ImportError: planted: "
        f"tensorflow is broken; full log: {run.run_dir / B}.log"
    )
    assert outcomes[1].reason == failures[1]
    assert is_complete(records(run, C))


def test_resume_skips_what_finished_and_sets_the_failed_attempt_aside(tmp_path: Path) -> None:
    run = run_in(tmp_path)
    sweep(run, FakeBackend({B: "fail"})).run()
    again = FakeBackend({})
    outcomes = sweep(run, again).run()
    assert [o.status for o in outcomes] == ["resumed", "ok", "resumed"]
    assert [e for e in again.events if e.startswith("launched")] == [f"launched {B}"]
    assert is_complete(records(run, B))
    aside = run.run_dir / f"{B}.jsonl.partial"
    assert "planted: tensorflow is broken" in aside.read_text()  # kept, out of the merge


def test_an_environment_the_backend_retries_has_one_outcome_and_keeps_the_first_attempt(
    tmp_path: Path,
) -> None:
    run = run_in(tmp_path)
    backend = FakeBackend({A: LOST_ONCE, C: LOST_ONCE})
    outcomes = sweep(run, backend).run()
    assert [(o.env_id, o.status) for o in outcomes] == [(A, "ok"), (B, "ok"), (C, "ok")]
    launches = [e.split()[1] for e in backend.events if e.startswith("launched")]
    assert launches == [A, B, A, C, C]  # the retry goes first; the last one's too
    assert is_complete(records(run, A))
    first = read_jsonl(run.run_dir / f"{A}.jsonl.partial").records  # set aside, not merged
    assert first[-1]["kind"] == "failure" and first[-1]["reason"] == "fake machine lost"


def test_with_two_slots_two_environments_measure_at_once_never_three(
    tmp_path: Path, events: list[str]
) -> None:
    run = run_in(tmp_path)
    outcomes = sweep(run, FakeBackend({}, slots=2, events=events)).run()
    assert [o.status for o in outcomes] == ["ok", "ok", "ok"]
    assert events[:4] == [f"launched {A}", f"started {A}", f"launched {B}", f"started {B}"]
    measuring = [0]
    for event in events:
        measuring.append(measuring[-1] + {"started": 1, "released": -1}.get(event.split()[0], 0))
    assert max(measuring) == 2


def test_ctrl_c_stops_the_harness_keeps_its_records_and_cleans_up(tmp_path: Path) -> None:
    matrix_run = run_in(tmp_path)
    backend = FakeBackend({B: "endless"})

    def interrupt_during_b() -> None:
        while sum('"trial"' in line for line in _lines(matrix_run.records_file(B))) < 3:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_during_b, daemon=True).start()
    run = sweep(matrix_run, backend)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert [(o.env_id, o.status) for o in run.outcomes] == [(A, "ok"), (B, "interrupted")]
    assert f"launched {C}" not in backend.events
    assert backend.events[-2:] == [f"released {B}", f"cleanup {matrix_run.run_id}"]
    assert "harness: interrupted" in (matrix_run.run_dir / f"{B}.log").read_text()
    kept = records(matrix_run, B)
    assert len([r for r in kept if r["kind"] == "trial"]) >= 3 and not is_complete(kept)
    assert manifest(matrix_run)["ended"] is None
    assert not list(matrix_run.run_dir.glob(".gate-*"))


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def test_a_run_whose_only_harness_fails_is_exit_3_in_one_line(tmp_path: Path) -> None:
    """What `matrix run` does after its lock, with the local backend's one environment
    replaced by a fake one whose harness finds TensorFlow broken."""
    run = run_in(tmp_path)
    (env,) = FakeBackend({}).environments(run.config)[0]
    with pytest.raises(EnvironmentFailure) as failed:
        measure(run, FakeBackend({env.id: "fail"}), "test", Console(quiet=True), False)
    assert failed.value.exit_code == ExitCode.ENVIRONMENT_ERROR == 3
    assert str(failed.value) == (
        f"{env.id}: the harness exited with code 1: TensorFlow does not import: ImportError: "
        f"planted: tensorflow is broken; full log: {run.run_dir / env.id}.log"
    )
    assert manifest(run)["outcomes"][0]["status"] == "run-failed"


def test_the_local_backend_is_one_environment_named_as_the_harness_names_it() -> None:
    config = load_config(None, {"tf": "2.15,2.21", "python": "3.9,3.11"})
    environments, skipped = LocalBackend().environments(config)
    assert [env.id for env in environments] == [local_env_id()] and skipped == []
