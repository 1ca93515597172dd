"""`python -m harness crossload` makes and writes its trials with `harness run`'s own code: its
plan has every field of a run's plan, and a refused or crashed load carries the same proofs and
process fields as an own trial. The trial worker is a fast double here (it returns what a real
worker's result file holds); tests/integration/test_cross_load.py runs real ones."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.contract import RunSpec
from harness.crossload import CrossLoadRun, Saver
from harness.formats import LOAD_MODEL, TFSM_LAYER
from harness.runner import Run

SAVER = Saver(
    "tf2.12-py3.11-cpu", "2.12.1", "2.12.0", "keras2", {"dense-10k": ["savedmodel-keras"]}
)
PROOF = {"eviction", "resident_before", "import_libs_resident_before", "import_libs_checked"}


def _spec(out: Path, env_id: str) -> RunSpec:
    return RunSpec(
        out=str(out),
        run_id="r1",
        env_id=env_id,
        models=["dense-10k"],
        formats=["savedmodel-keras"],
        cache_modes=["warm"],
        repeats=None,  # auto
        warmup=0,
        work=str(out / "artifacts"),
    )


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_cross_load_plan_record_has_every_field_of_a_runs_and_says_what_it_does(
    tmp_path: Path,
) -> None:
    own = Run(_spec(tmp_path / "own", "tf2.21-py3.11-cpu"))
    own.write_plan()
    own.writer.close()
    cross = CrossLoadRun(_spec(tmp_path / "cross", "tf2.21-py3.11-cpu"), [SAVER])
    cross.write_plan()
    cross.writer.close()
    (planned,) = _records(tmp_path / "own" / "tf2.21-py3.11-cpu.jsonl")
    (crossing,) = _records(tmp_path / "cross" / "tf2.21-py3.11-cpu.jsonl")
    assert set(crossing) == set(planned) | {"savers"}
    assert crossing["savers"] == [SAVER.env_id]
    assert crossing["repeats"] == 6 and planned["repeats"] == "auto"  # auto: the fewest
    assert crossing["process"] == crossing["trial_process"] == "fresh"


def _refused_then_crashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_modes: list[str]
) -> tuple[CrossLoadRun, list[str]]:
    """A Keras 3 loader of SAVER's SavedModel whose `load_model` refuses it and whose
    TFSMLayer fallback crashes every time; and the APIs its trial workers were asked for."""
    folder = tmp_path / "artifacts" / SAVER.env_id / "dense-10k"
    (folder / "savedmodel").mkdir(parents=True)
    for name in ("savedmodel/saved_model.pb", "parity-inputs.npz", "reference-savedmodel.npz"):
        (folder / name).write_bytes(b"x" * 4096)
    spec = replace(_spec(tmp_path, "tf2.21-py3.11-cpu"), cache_modes=cache_modes)
    run = CrossLoadRun(spec, [SAVER])
    run.keras_impl, run.tf_keras = "keras3", False  # load_model, then TFSMLayer
    monkeypatch.setattr(run, "_libs", lambda target: {})  # no runtime libraries to read in
    asked = []
    refusal = {"stage": "load", "exception": "ValueError", "message": "File format not supported"}

    def worker(fmt: str, saved: Any, arts: Any, loads: int, process: str) -> dict[str, Any]:
        asked.append(saved.api)
        found = {"import_s": 2.5, "peak_rss_mb": 512.0, "container_id": None}
        if saved.api == LOAD_MODEL:
            return {**found, **refusal, "error": "ValueError: File format not supported"}
        return {**found, "error": "process killed by SIGKILL: the last lines of stderr"}

    monkeypatch.setattr(run, "_spawn_trial", worker)
    return run, asked


def test_a_refused_then_crashed_load_carries_the_proofs_of_an_own_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, asked = _refused_then_crashed(tmp_path, monkeypatch, ["warm"])
    run.measure()
    run.writer.close()
    trials = [r for r in _records(tmp_path / "tf2.21-py3.11-cpu.jsonl") if r["kind"] == "trial"]
    assert asked == [LOAD_MODEL, TFSM_LAYER, *[TFSM_LAYER] * 5]  # refused once, 6 rounds
    refused, *crashed = trials
    assert refused["status"] == "incompatible" and refused["exception"] == "ValueError"
    assert [t["status"] for t in crashed] == ["error"] * 6
    assert {t["load_api"] for t in crashed} == {TFSM_LAYER} and all(t["fallback"] for t in crashed)
    for trial in trials:
        assert set(trial) >= PROOF and trial["import_s"] == 2.5 and trial["peak_rss_mb"] == 512.0
        assert trial["saved_by"]["env_id"] == SAVER.env_id


def test_the_plan_and_the_last_schedule_count_the_records_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blocked cell writes one record, not one a round; a refusal writes one more than the
    plan could know of, which the schedule after its round counts."""
    run, _ = _refused_then_crashed(tmp_path, monkeypatch, ["cold", "warm"])
    run.drop_via = None  # nobody can drop the page cache: `cold` is blocked
    run.write_plan()
    run.measure()
    run.writer.close()
    records = _records(tmp_path / "tf2.21-py3.11-cpu.jsonl")
    trials = [r for r in records if r["kind"] == "trial"]
    schedules = [r["trials_scheduled"] for r in records if r["kind"] == "schedule"]
    assert [t["status"] for t in trials][:2] == ["unsupported", "incompatible"]
    assert records[0]["trials_planned"] == schedules[0] == 1 + 6  # as if nothing refused
    assert schedules[-1] == len(trials) == 1 + 1 + 6
