"""The cross-load's verdicts, grid, compare and history, from records written as docs/records.md
defines them (a fast double of tests/integration/test_cross_load.py, which runs real stacks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from matrix.cli import app
from matrix.report.compat_grid import grid_cell, grids, pair_cells, step
from matrix.results.dataset import export, load_runs
from matrix.results.reader import Record
from tests.conftest import make_record, write_jsonl

OLD, NEW = "tf2.12-py3.11-cpu", "tf2.21-py3.11-cpu"
VERSIONS = {OLD: ("2.12.1", "2.12.0", "keras2"), NEW: ("2.21.0", "3.13.2", "keras3")}
REFUSAL = (
    "File format not supported: filepath=/artifacts/tf2.12-py3.11-cpu/dense-10k/savedmodel. "
    "Keras 3 only supports V3 `.keras` files and legacy H5 format files (`.h5` extension)."
)


def _saved_by(env: str) -> dict[str, str]:
    tf, keras, impl = VERSIONS[env]
    return {"env_id": env, "tensorflow": tf, "keras": keras, "keras_impl": impl}


def _own(env: str, run_id: str, fmt: str = "h5") -> list[dict[str, Any]]:
    tf, keras, _ = VERSIONS[env]
    common = {"env_id": env, "run_id": run_id, "model": "dense-10k", "format": fmt}
    return [
        make_record("environment", env_id=env, run_id=run_id, tensorflow=tf, keras=keras),
        make_record("artifact", status="ok", **common),
        make_record(
            "trial",
            cache_mode="warm",
            load_s=0.5,
            first_prediction_s=0.6,
            parity_status="pass",
            cell_id=f"{env}/dense-10k/{fmt}/warm",
            **common,
        ),
    ]


def _cross(loader: str, saver: str, fmt: str, api: str, status: str, **extra: Any) -> Record:
    """A cross-load trial (its run is the folder's: `_run` sets it)."""
    fields: dict[str, Any] = {"fallback": False, "parity_status": "pass", **extra}
    if status == "ok":
        fields.setdefault("first_prediction_s", 1.25)
    return make_record(
        "trial",
        env_id=loader,
        model="dense-10k",
        format=fmt,
        cache_mode="warm",
        status=status,
        saved_by=_saved_by(saver),
        load_api=api,
        cell_id=f"{saver}->{loader}/dense-10k/{fmt}/warm/{api}",
        **fields,
    )


def _run(root: Path, run_id: str, cross: list[dict[str, Any]], fmt: str = "h5") -> Path:
    folder = root / run_id
    (folder / "crossload").mkdir(parents=True)
    for env in (OLD, NEW):
        write_jsonl(folder / f"{env}.jsonl", _own(env, run_id, fmt))
        mine = [{**r, "run_id": run_id} for r in cross if r["env_id"] == env]
        if mine:
            write_jsonl(folder / "crossload" / f"{env}.jsonl", mine)
    return folder


def _refused_then_fallback() -> list[dict[str, Any]]:
    load_model, tfsm = "keras.models.load_model", "keras.layers.TFSMLayer"
    return [
        _cross(NEW, OLD, "savedmodel-keras", load_model, "incompatible", reason=REFUSAL,
               exception="ValueError"),
        _cross(NEW, OLD, "savedmodel-keras", tfsm, "ok", fallback=True),
    ]  # fmt: skip


def test_a_refusal_then_its_fallback_is_one_loaded_cell_that_names_both(tmp_path: Path) -> None:
    fallback = _refused_then_fallback()
    ds = load_runs([_run(tmp_path, "20261201-010000-aaaa", fallback, fmt="savedmodel-keras")])
    (cell,) = pair_cells(ds).to_dict("records")
    assert cell["verdict"] == "ok" and cell["load_api"] == "keras.layers.TFSMLayer"
    assert cell["refused"].startswith("keras.models.load_model raised ValueError: File format")
    (grid,) = grids(ds)
    text, verdict, hover = grid_cell(grid, OLD, NEW)
    assert text == "✓ 1.25 s via TFSMLayer (load_model ✗)" and verdict == "ok"
    assert REFUSAL in hover
    diagonal, _, _ = grid_cell(grid, NEW, NEW)
    assert diagonal == "✓ 600 ms"  # the environment's own cell


def test_every_api_refused_is_incompatible_with_its_exception_in_one_line(tmp_path: Path) -> None:
    refusal = _cross(
        OLD,
        NEW,
        "keras",
        "keras.models.load_model",
        "incompatible",
        exception="TypeError",
        reason="Error when deserializing class 'InputLayer' using config={'batch_shape': "
        "[None, 256]}.\n\nException encountered: Unrecognized keyword arguments: ['batch_shape']",
    )
    ds = load_runs([_run(tmp_path, "20261201-010000-aaaa", [refusal], fmt="keras")])
    (grid,) = grids(ds)
    text, verdict, hover = grid_cell(grid, NEW, OLD)
    assert verdict == "incompatible"
    assert text == "✗ TypeError: Unrecognized keyword arguments: ['batch_shape']"
    assert "Error when deserializing class 'InputLayer'" in hover  # the whole message, on hover


def test_a_load_whose_parity_fails_is_a_warning_not_a_tick(tmp_path: Path) -> None:
    wrong = _cross(NEW, OLD, "h5", "keras.models.load_model", "ok", parity_status="fail",
        parity_rel_err=0.4,
    )  # fmt: skip
    (grid,) = grids(load_runs([_run(tmp_path, "20261201-010000-aaaa", [wrong])]))
    text, verdict, _ = grid_cell(grid, OLD, NEW)
    assert verdict == "parity-fail" and text.startswith("⚠") and "parity fail" in text


def test_own_cells_stay_apart_and_the_export_names_the_saver(tmp_path: Path) -> None:
    ds = load_runs([_run(tmp_path, "20261201-010000-aaaa", _refused_then_fallback())])
    assert ds.trials["saved_by_env_id"].isna().all() and len(ds.trials) == 2
    assert set(ds.crossloads["saved_by_env_id"]) == {OLD}
    path = tmp_path / "trials.csv"
    export(ds, ds.trials.iloc[:0], path)
    text = path.read_text()
    assert "saved_by_env_id" in text.splitlines()[0] and text.count(OLD) >= 2


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("ok", "incompatible", "broke"),
        ("ok", "parity-fail", "broke"),
        ("parity-fail", "error", "broke"),
        ("incompatible", "ok", "fixed"),
        ("incompatible", "error", "same"),
        ("ok", "invalid", "not comparable"),
    ],
)
def test_a_step_is_judged_by_the_verdict(before: str, after: str, expected: str) -> None:
    assert step(before, after) == expected


def _two_nights(tmp_path: Path) -> tuple[str, str]:
    loaded = _cross(NEW, OLD, "h5", "keras.models.load_model", "ok")
    refused = _cross(
        NEW, OLD, "h5", "keras.models.load_model", "incompatible", exception="ValueError",
        reason="a new Keras refuses it",
    )  # fmt: skip
    _run(tmp_path, "20261201-010000-aaaa", [loaded])
    _run(tmp_path, "20261202-010000-bbbb", [refused])
    return "20261201-010000-aaaa", "20261202-010000-bbbb"


def test_compare_exits_1_when_a_pair_that_loaded_now_fails(tmp_path: Path) -> None:
    a, b = _two_nights(tmp_path)
    result = CliRunner().invoke(
        app, ["compare", a, b, "--results-dir", str(tmp_path), "--allow-underpowered"]
    )
    assert result.exit_code == 1, result.output
    assert "broke" in result.output and "1 of 1 broke" in result.output


def test_compare_of_two_nights_that_both_loaded_passes(tmp_path: Path) -> None:
    for run in ("20261201-010000-aaaa", "20261202-010000-bbbb"):
        _run(tmp_path, run, [_cross(NEW, OLD, "h5", "keras.models.load_model", "ok")])
    result = CliRunner().invoke(
        app,
        [
            "compare",
            "20261201-010000-aaaa",
            "20261202-010000-bbbb",
            "--results-dir",
            str(tmp_path),
            "--allow-underpowered",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "0 of 1 broke" in result.output


def test_history_exits_1_when_the_last_night_broke_a_pair(tmp_path: Path) -> None:
    _two_nights(tmp_path)
    result = CliRunner().invoke(app, ["history", "--results-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "Cross-load verdict per run" in result.output and "broke" in result.output


def test_a_loader_gets_every_other_saver_and_reads_their_artifact_folders(tmp_path: Path) -> None:
    from matrix.execute.crossload import CrossLoadPlan
    from matrix.plan.config import load_config

    config = load_config(None, {"results_dir": tmp_path, "cross_load": "tf2.21-*"})
    savers = tuple({"env_id": env, "saved": {}} for env in (OLD, NEW))
    plan = CrossLoadPlan(config=config, run_id="r1", savers=savers)
    args = plan.harness_args(NEW)
    assert args[0] == "crossload" and plan.run_dir == tmp_path / "r1" / "crossload"
    assert args[args.index("--work") + 1] == str((tmp_path / "r1" / "artifacts").absolute())
    given = Path(args[args.index("--saved-by") + 1])
    assert [s["env_id"] for s in json.loads(given.read_text())["savers"]] == [OLD, NEW]
    assert plan.reads_artifacts_of(NEW) == (OLD, NEW)  # its own too: the grid's diagonal


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cross_load": "*", "backend": "ray"}, "the ray backend cannot cross-load yet"),
        ({"cross_load": "tf2.21 *"}, "invalid loader selection"),
    ],
)
def test_a_cross_load_that_cannot_run_is_refused_before_anything_runs(
    overrides: dict[str, str], message: str
) -> None:
    from matrix.errors import ConfigError
    from matrix.plan.config import load_config

    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_the_bare_flag_means_every_environment() -> None:
    from matrix.cli.run import with_bare_flags

    assert with_bare_flags(["run", "--cross-load"]) == ["run", "--cross-load", "*"]
    assert with_bare_flags(["run", "--cross-load", "--tf", "2.21"])[2] == "*"
    assert with_bare_flags(["run", "--cross-load", "tf2.21-*"]) == [
        "run",
        "--cross-load",
        "tf2.21-*",
    ]
