"""The cross-load's verdicts, grid, compare and history, from records written as docs/records.md
defines them (a fast double of tests/integration/test_cross_load.py, which runs real stacks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from matrix.cli import app
from matrix.plan.environments import Environment
from matrix.report.compat_grid import grid_cell, grids, pair_cells, pair_step, step
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
            given = folder / "crossload" / f".gate-{env}"  # the host's `--saved-by` file
            given.mkdir()
            savers = [{**_saved_by(saver), "saved": {}} for saver in (OLD, NEW)]
            (given / "saved-by.json").write_text(json.dumps({"savers": savers}))
    return folder


def test_saved_by_is_the_host_s_account_and_a_saver_it_did_not_give_is_left_out(
    tmp_path: Path,
) -> None:
    """The loader's records were written where a saver's files ran: its `saved_by` counts only
    as a pointer into the savers the host gave it, whose account replaces what it says."""
    claimed = {**_saved_by(OLD), "tensorflow": "2.21.0", "keras_impl": "keras3"}
    honest = _cross(NEW, OLD, "h5", "keras.models.load_model", "ok")
    stranger = {**_saved_by(OLD), "env_id": "tf2.99-py3.11-cpu"}
    ds = load_runs(
        [
            _run(
                tmp_path,
                "20261201-010000-aaaa",
                [{**honest, "saved_by": claimed}, {**honest, "saved_by": stranger}],
            )
        ]
    )
    (row,) = ds.crossloads.to_dict("records")
    assert (row["saved_by_env_id"], row["saved_by_tensorflow"]) == (OLD, "2.12.1")
    assert row["saved_by_keras_impl"] == "keras2"
    assert any(
        "1 record(s) naming a saver not in the host's saved-by.json" in p for p in ds.problems
    )


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


LOAD_MODEL, TFSM, TF_KERAS = (
    "keras.models.load_model",
    "keras.layers.TFSMLayer",
    "tf_keras.models.load_model",
)


def _cell(verdict: str, api: str, refused: str = "") -> dict[str, Any]:
    """A `pair_cells` row as the step reads it (`refused`: the APIs that refused before)."""
    return {"verdict": verdict, "load_api": api, "fallback": bool(refused), "refused_apis": refused}


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (_cell("ok", LOAD_MODEL), _cell("ok", TFSM, LOAD_MODEL), "broke"),
        (_cell("ok", TFSM, LOAD_MODEL), _cell("ok", LOAD_MODEL), "fixed"),
        (_cell("ok", TFSM, LOAD_MODEL), _cell("ok", TF_KERAS, f"{LOAD_MODEL}, {TFSM}"), "broke"),
        (_cell("ok", TFSM, LOAD_MODEL), _cell("ok", TFSM, LOAD_MODEL), "same"),
        (_cell("incompatible", TFSM, f"{LOAD_MODEL}, {TFSM}"), _cell("ok", TFSM, LOAD_MODEL),
         "fixed"),
        (_cell("parity-fail", LOAD_MODEL), _cell("ok", TFSM, LOAD_MODEL), "broke"),
        (_cell("ok", LOAD_MODEL), _cell("ok", "tflite interpreter"), "not comparable"),
        (_cell("ok", TFSM, LOAD_MODEL), _cell("incompatible", TFSM, f"{LOAD_MODEL}, {TFSM}"),
         "broke"),
    ],
)  # fmt: skip
def test_a_step_is_judged_by_the_api_that_loaded_too(
    before: dict[str, Any], after: dict[str, Any], expected: str
) -> None:
    assert pair_step(before, after) == expected


def test_an_api_that_still_loads_the_cell_is_not_refused_it() -> None:
    """Refusals are the pair's, from any cache mode: one in another mode does not break a cell
    that the same API loaded both nights."""
    assert pair_step(_cell("ok", LOAD_MODEL), _cell("ok", LOAD_MODEL, LOAD_MODEL)) == "same"
    assert pair_step(_cell("ok", LOAD_MODEL, LOAD_MODEL), _cell("ok", LOAD_MODEL)) == "same"


def _in_mode(trial: Record, mode: str) -> Record:
    return {**trial, "cache_mode": mode, "cell_id": trial["cell_id"].replace("/warm/", f"/{mode}/")}


def _refused_then_unmeasured() -> list[Record]:
    """load_model refused (in `warm`) and TFSMLayer loaded there; the `cold` cell could not be
    timed at all (one record, as `harness crossload` writes it) and the `cold-model` one's
    fallback loads were all invalid."""
    refused, loaded = _refused_then_fallback()
    untimed = {**_cross(NEW, OLD, "savedmodel-keras", "", "unsupported"), "reason": "no drop"}
    del untimed["load_api"], untimed["fallback"], untimed["parity_status"]
    invalid = _cross(NEW, OLD, "savedmodel-keras", TFSM, "invalid", fallback=True, reason="warm")
    return [refused, loaded, _in_mode(untimed, "cold"), _in_mode(invalid, "cold-model")]


def test_a_cell_is_judged_by_its_own_trials_before_the_pairs_refusals(tmp_path: Path) -> None:
    cross = _refused_then_unmeasured()
    ds = load_runs([_run(tmp_path, "20261201-010000-aaaa", cross, fmt="savedmodel-keras")])
    verdicts = {c["cache_mode"]: c["verdict"] for c in pair_cells(ds).to_dict("records")}
    assert verdicts == {"cold": "unsupported", "cold-model": "invalid", "warm": "ok"}


def test_compare_does_not_call_a_cell_that_measured_nothing_broke(tmp_path: Path) -> None:
    """Both nights only the fallback loads it; tonight two of its cells measured nothing."""
    refused, loaded = _refused_then_fallback()
    before = [refused, *(_in_mode(loaded, mode) for mode in ("cold", "cold-model", "warm"))]
    _run(tmp_path, "20261201-010000-aaaa", before, fmt="savedmodel-keras")
    _run(tmp_path, "20261202-010000-bbbb", _refused_then_unmeasured(), fmt="savedmodel-keras")
    result = CliRunner().invoke(
        app,
        ["compare", "20261201-010000-aaaa", "20261202-010000-bbbb", "--results-dir",
         str(tmp_path), "--allow-underpowered"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "0 of 3 broke" in result.output


def _fallback_tonight(tmp_path: Path) -> tuple[str, str]:
    """Last night `load_model` loaded the Keras 2 SavedModel; tonight it refuses and only the
    TFSMLayer fallback loads it."""
    loaded = _cross(NEW, OLD, "savedmodel-keras", LOAD_MODEL, "ok")
    _run(tmp_path, "20261201-010000-aaaa", [loaded], fmt="savedmodel-keras")
    _run(tmp_path, "20261202-010000-bbbb", _refused_then_fallback(), fmt="savedmodel-keras")
    return "20261201-010000-aaaa", "20261202-010000-bbbb"


def test_compare_exits_1_when_only_a_fallback_loads_what_the_api_loaded(tmp_path: Path) -> None:
    a, b = _fallback_tonight(tmp_path)
    result = CliRunner().invoke(
        app, ["compare", a, b, "--results-dir", str(tmp_path), "--allow-underpowered"]
    )
    assert result.exit_code == 1, result.output
    assert "ok via TFSMLayer" in result.output and "1 of 1 broke" in result.output


def test_history_exits_1_when_only_a_fallback_loads_it_now(tmp_path: Path) -> None:
    _fallback_tonight(tmp_path)
    wide = {"COLUMNS": "200"}  # the table's columns do not wrap: a narrow one cuts the step
    result = CliRunner().invoke(app, ["history", "--results-dir", str(tmp_path)], env=wide)
    assert result.exit_code == 1, result.output
    assert "ok via TFSMLayer" in result.output and "broke" in result.output


def test_a_loader_gets_every_other_saver_and_reads_their_artifact_folders(tmp_path: Path) -> None:
    from matrix.execute.crossload import CrossLoadStep
    from matrix.plan.config import load_config

    config = load_config(None, {"results_dir": tmp_path, "cross_load": "tf2.21-*"})
    savers = tuple({"env_id": env, "saved": {}} for env in (OLD, NEW))
    run = CrossLoadStep(config=config, run_id="r1", savers=savers)
    args = run.harness_args(NEW)
    assert args[0] == "crossload" and run.run_dir == tmp_path / "r1" / "crossload"
    assert args[args.index("--work") + 1] == str((tmp_path / "r1" / "artifacts").absolute())
    given = Path(args[args.index("--saved-by") + 1])
    assert [s["env_id"] for s in json.loads(given.read_text())["savers"]] == [OLD, NEW]
    assert run.reads_artifacts_of(NEW) == (OLD, NEW)  # its own too: the grid's diagonal


def _planned(env_id: str) -> Environment:
    """The environment `env_id` as the host plans it (what it makes the venv or image with)."""
    from matrix.plan.config import load_config
    from matrix.plan.environments import expand

    config = load_config(None, {"tf": "2.12,2.21", "python": "3.11", "keras": "default,legacy"})
    return next(e for e in expand(config)[0] if e.id == env_id)


def _saver_records(tmp_path: Path, **said: str) -> Path:
    """A saver's records as its environment wrote them: `said` overrides its environment's."""
    env = {"env_id": NEW, "tensorflow": "2.21.0", "keras": "3.13.2", "keras_impl": "keras3"}
    return write_jsonl(
        tmp_path / f"{NEW}.jsonl",
        [
            make_record("environment", **{**env, **said}),
            make_record("artifact", model="dense-10k", format="h5", status="ok"),
            make_record("artifact", model="dense-10k", format="keras", status="error"),
        ],
    )


def test_a_saver_is_who_the_host_made_its_records_give_only_other_facts(tmp_path: Path) -> None:
    from matrix.execute.crossload import saver_entry

    entry, why = saver_entry(_planned(NEW), _saver_records(tmp_path))
    assert why == "" and entry == {
        "env_id": NEW,
        "tensorflow": "2.21.0",
        "keras_impl": "keras3",
        "keras": "3.13.2",  # measured inside: a fact, not who it is
        "saved": {"dense-10k": ["h5"]},
    }


@pytest.mark.parametrize(
    ("env_id", "said", "named"),
    [
        (NEW, {"env_id": OLD}, f"env_id '{OLD}' where the host made '{NEW}'"),
        (NEW, {"tensorflow": "2.12.1"}, "tensorflow '2.12.1' where the host made '2.21.0'"),
        (NEW, {"keras_impl": "keras2"}, "keras_impl 'keras2' where the host made 'keras3'"),
        (f"{NEW}-tfkeras", {"env_id": f"{NEW}-tfkeras"}, "where the host made 'tf-keras'"),
    ],
)
def test_a_saver_whose_records_contradict_the_host_is_refused_with_the_reason(
    tmp_path: Path, env_id: str, said: dict[str, str], named: str
) -> None:
    from matrix.execute.crossload import saver_entry

    entry, why = saver_entry(_planned(env_id), _saver_records(tmp_path, **said))
    assert entry is None and named in why and "takes no part in the cross-load" in why


def test_an_environment_whose_records_lie_neither_saves_nor_loads(tmp_path: Path) -> None:
    """With the one other environment refused, nothing is left to cross: no loader starts,
    and the terminal says why (the backend is never reached)."""
    from rich.console import Console

    from matrix.execute.crossload import cross_load
    from matrix.execute.matrix_run import MatrixRun
    from matrix.execute.sweep import EnvOutcome
    from matrix.plan.config import load_config
    from tests.unit.fake_backend import FakeBackend

    config = load_config(None, {"results_dir": tmp_path, "cross_load": "*"})
    run = MatrixRun(config=config, run_id="r1")
    run.run_dir.mkdir(parents=True)
    old = make_record("environment", env_id=OLD, tensorflow="2.12.1", keras_impl="keras2")
    write_jsonl(run.records_file(OLD), [old])
    _saver_records(run.run_dir, tensorflow="2.12.1")  # NEW, claiming to be TF 2.12
    console = Console(record=True, width=300)
    outcomes = [EnvOutcome(env, "ok") for env in (OLD, NEW)]
    envs = [_planned(OLD), _planned(NEW)]
    started = cross_load(run, FakeBackend({}), envs, outcomes, console)
    said = console.export_text()
    assert started == [] and "ran and were not refused (refused above: 1)" in said
    assert f"{NEW}'s environment record says tensorflow '2.12.1' where the host made" in said


def test_a_cross_load_that_cannot_run_is_refused_before_anything_runs() -> None:
    from matrix.errors import ConfigError
    from matrix.plan.config import load_config

    with pytest.raises(ConfigError, match="invalid loader selection"):
        load_config(None, {"cross_load": "tf2.21 *"})


@pytest.mark.parametrize("node_backend", ["venv", "docker", "auto"])
def test_the_ray_backend_plans_a_cross_load_on_any_node_backend(node_backend: str) -> None:
    from matrix.plan.config import load_config

    overrides = {"cross_load": "*", "backend": "ray", "node_backend": node_backend}
    assert load_config(None, overrides).cross_load == "*"


def test_the_bare_flag_means_every_environment() -> None:
    from matrix.cli.run import with_bare_flags

    assert with_bare_flags(["run", "--cross-load"]) == ["run", "--cross-load", "*"]
    assert with_bare_flags(["run", "--cross-load", "--tf", "2.21"])[2] == "*"
    assert with_bare_flags(["run", "--cross-load", "tf2.21-*"]) == [
        "run",
        "--cross-load",
        "tf2.21-*",
    ]
