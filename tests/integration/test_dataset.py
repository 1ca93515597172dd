"""Merging real records into tables, and the per-cell statistics every view shares.

The runs are real (tests/integration/real_runs.py: the harness, TensorFlow, the tiny dense-10k
model);
a test that needs a damaged or older file copies a real one and changes only what it says.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import statistics
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.records import RecordWriter
from matrix.cli import app
from matrix.results.dataset import CELL, cell_problems, cell_stats, dataset_of, export, load_runs
from tests.integration.real_runs import is_measured, read_lines, real_pair, write_lines

FIXTURES = Path(__file__).parents[1] / "fixtures" / "runs"
needs_fixture = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason="tests/fixtures/runs/ (checked-in multi-environment runs) absent"
)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return real_pair(tmp_path_factory, "mixed")


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("artifacts", "*.log"))
    return dest


def _measured_loads(run: Path) -> dict[tuple, list[float]]:
    """Per (model, format, cache): the load_s the statistics must use, read from the JSON."""
    loads: dict[tuple, list[float]] = {}
    for r in read_lines(run):
        if is_measured(r, r.get("format")):
            loads.setdefault((r["model"], r["format"], r["cache_mode"]), []).append(r["load_s"])
    return loads


@pytest.mark.slow
def test_two_real_runs_merge_with_host_and_source(runs) -> None:
    ds = load_runs(list(runs))
    trials = [r for run in runs for r in read_lines(run) if r["kind"] == "trial"]
    assert len(ds.trials) == len(trials)
    assert ds.run_ids == [run.name for run in runs]
    assert set(ds.trials["host"]) == {socket.gethostname()}
    assert len(ds.environments) == 2 and set(ds.environments["keras_impl"]) == {"keras3"}
    saved = ds.artifacts[ds.artifacts["status"] == "ok"]
    assert set(saved["storage_kind"]) == {"host"}  # the storage dict, flattened
    row = ds.trials.iloc[-1]
    path, line = row["source"].rsplit(":", 1)
    record = json.loads(Path(path).read_text().splitlines()[int(line) - 1])
    assert (record["kind"], record["run_id"], record["load_s"]) == (
        "trial",
        row["run_id"],
        row["load_s"],
    )
    assert ds.problems == []


@pytest.mark.slow
def test_cell_statistics_are_those_of_the_raw_load_times(runs) -> None:
    stats = cell_stats(load_runs(list(runs))).set_index(CELL)
    checked = 0
    for run in runs:
        for (model, fmt, cache), loads in _measured_loads(run).items():
            row = stats.loc[(run.name, "test-env", model, fmt, cache)]
            q1, _, q3 = statistics.quantiles(loads, n=4, method="inclusive")
            assert row["n"] == len(loads) == 3
            assert row["load_median"] == pytest.approx(statistics.median(loads))
            assert row["load_min"] == pytest.approx(min(loads))
            assert (row["load_q1"], row["load_q3"]) == pytest.approx((q1, q3))
            assert row["load_iqr"] == pytest.approx(q3 - q1)
            cv = statistics.stdev(loads) / statistics.mean(loads)
            assert row["load_cv"] == pytest.approx(cv)
            assert row["noisy"] == (cv > 0.10)
            checked += 1
    assert checked == 4  # h5 and tflite in both runs; weights-ckpt has no measured trial


@pytest.mark.slow
def test_rank_speedup_and_io_floor_agree_with_the_medians(runs) -> None:
    stats = cell_stats(load_runs(list(runs)))
    artifacts = {
        (r["run_id"], r["format"]): r
        for run in runs
        for r in read_lines(run)
        if r["kind"] == "artifact" and r["status"] == "ok"
    }
    for run_id, cells in stats.groupby("run_id"):
        by_format = cells.set_index("format")
        h5, tflite = by_format.loc["h5"], by_format.loc["tflite"]
        faster, slower = (h5, tflite) if h5["load_median"] < tflite["load_median"] else (tflite, h5)
        assert (faster["rank"], slower["rank"]) == (1, 2)
        assert h5["speedup_vs_format"] == pytest.approx(1.0)
        assert tflite["speedup_vs_format"] == pytest.approx(
            h5["load_median"] / tflite["load_median"]
        )
        for fmt, row in (("h5", h5), ("tflite", tflite)):
            artifact = artifacts[(run_id, fmt)]
            assert row["bytes"] == artifact["bytes"] and row["params"] == artifact["params"]
            assert row["io_multiple"] == pytest.approx(row["load_median"] / artifact["io_floor_s"])
    assert stats["speedup_vs_env"].isna().all()  # no baseline environment asked for


@pytest.mark.slow
def test_bad_lines_are_reported_by_file_and_line_and_skipped(runs, tmp_path: Path) -> None:
    run = _copy(runs[0], tmp_path / runs[0].name)
    (path,) = run.glob("*.jsonl")
    lines = path.read_text().splitlines()
    lines.insert(2, "disk garbage")
    path.write_text("\n".join(lines) + "\n" + '{"schema_version": 1, "kind": "tri')
    ds = load_runs([run])
    assert len(ds.problems) == 2
    assert ds.problems[0].startswith(f"{path}:3: skipped: not valid JSON")
    assert ds.problems[1].startswith(f"{path}:{len(lines) + 1}: skipped: truncated last line")
    assert len(ds.trials) == sum(1 for r in read_lines(runs[0]) if r["kind"] == "trial")
    # Sources still point at the right lines after the inserted one.
    row = ds.trials[ds.trials["status"] == "ok"].iloc[0]
    line = int(row["source"].rsplit(":", 1)[1])
    assert json.loads(lines[line - 1])["load_s"] == row["load_s"]


@pytest.mark.slow
def test_an_older_schema_with_missing_fields_merges_as_nan(runs, tmp_path: Path) -> None:
    """An older harness wrote schema 0, without `load_cpu_s` and without any I/O floor."""
    records = read_lines(runs[0])
    old_trial = next(r for r in records if r["kind"] == "trial" and r["status"] == "ok")
    old_trial["schema_version"] = 0
    del old_trial["load_cpu_s"]
    for record in records:
        record.pop("io_floor_s", None)
    write_lines(tmp_path / runs[0].name, records)
    ds = load_runs([tmp_path / runs[0].name, runs[1]])
    old = ds.trials[ds.trials["schema_version"] == 0]
    assert len(old) == 1 and math.isnan(old["load_cpu_s"].iloc[0])
    assert ds.trials["load_cpu_s"].notna().sum() == len(ds.trials[ds.trials["status"] == "ok"]) - 1
    stats = cell_stats(ds).set_index("run_id")
    assert stats.loc[runs[0].name, "io_multiple"].isna().all()
    assert stats.loc[runs[1].name, "io_multiple"].notna().all()
    assert stats["load_cpu_median"].notna().all()  # the other trials of that cell still count


@pytest.mark.slow
def test_the_same_run_given_twice_is_counted_once(runs, tmp_path: Path) -> None:
    copy = _copy(runs[0], tmp_path / "copied")
    ds = load_runs([runs[0], runs[0], copy])
    assert len(ds.trials) == sum(1 for r in read_lines(runs[0]) if r["kind"] == "trial")
    assert len(ds.problems) == 1 and "same run and environment as" in ds.problems[0]


@pytest.mark.slow
def test_problem_cells_once_each_with_their_reason(runs, tmp_path: Path) -> None:
    """weights-ckpt is really unsupported under Keras 3; the environment failure is written by
    the harness's own RecordWriter, as a sweep writes it when a container dies."""
    run = _copy(runs[1], tmp_path / runs[1].name)
    writer = RecordWriter(str(run / "broken-env.jsonl"), run.name, "broken-env")
    for _ in range(2):  # a resumed sweep can record the same failure twice
        writer.write("failure", scope="environment", reason="harness exited with code 3")
    writer.close()
    problems = cell_problems(load_runs([runs[0], run]))
    assert not problems.duplicated(CELL).any()
    ckpt = problems[problems["format"] == "weights-ckpt"]
    assert len(ckpt) == 2 and set(ckpt["status"]) == {"unsupported"}  # one per run
    assert ckpt["reason"].str.contains("Keras 3").all()
    broken = problems[problems["env_id"] == "broken-env"]
    assert broken[["status", "reason"]].values.tolist() == [
        ["failed-environment", "harness exited with code 3"]
    ]
    assert len(problems) == 3  # the measured h5 and tflite cells are plainly ok


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_writes_tidy_trials_and_stats(runs, tmp_path: Path, suffix: str) -> None:
    ds = load_runs(list(runs))
    stats = cell_stats(ds)
    trials_path, stats_path = export(ds, stats, tmp_path / f"loads{suffix}")
    read = pd.read_parquet if suffix == ".parquet" else pd.read_csv
    trials, cells = read(trials_path), read(stats_path)
    assert stats_path.name == f"loads-stats{suffix}"
    assert len(trials) == len(ds.trials) and len(cells) == len(stats)
    assert trials["load_s"].sum() == pytest.approx(ds.trials["load_s"].sum())
    shape = trials["output_shape"].dropna().iloc[0]
    assert json.loads(shape) == [1, 10]  # lists become JSON text, one type per column
    assert list(cells.columns) == list(stats.columns)


@pytest.mark.slow
def test_report_command_takes_the_newest_run_or_merges_several(runs, tmp_path: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "reports"
    results.mkdir()
    for run in runs:
        (results / run.name).symlink_to(run)
    newest = _report(
        "--results-dir",
        str(results),
        "--out",
        str(out),
        "--export",
        str(tmp_path / "loads.parquet"),
    )
    assert newest.exit_code == 0, newest.output
    assert f"report: {out / runs[1].name / 'index.html'}" in newest.output
    assert (out / "latest").resolve() == (out / runs[1].name).resolve()
    assert len(pd.read_parquet(tmp_path / "loads-stats.parquet")) == 2  # h5 and tflite of B
    merged = _report(runs[0].name, str(runs[1]), "--results-dir", str(results), "--out", str(out))
    assert merged.exit_code == 0, merged.output
    (index,) = out.glob(f"merged-{runs[1].name}-*/index.html")
    assert (out / "latest").resolve() == index.parent.resolve()
    assert "Load times, 2 runs merged" in index.read_text()
    wrong = _report("--results-dir", str(results), "--out", str(out), "--baseline-env", "nope")
    assert wrong.exit_code == 2
    assert wrong.stderr == (
        "error: --baseline-env 'nope' is not an environment of these runs; "
        "choose one of: test-env\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--export", "loads.xlsx"], "error: --export loads.xlsx: name a .csv or .parquet file"),
        (["--baseline-format", "onnx"], "error: --baseline-format 'onnx': choose from savedmodel"),
        ([], "error: no runs under"),
    ],
)
def test_report_configuration_errors_exit_2(tmp_path: Path, args: list[str], message) -> None:
    result = _report("--results-dir", str(tmp_path), *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message)


def _report(*args: str):
    return CliRunner().invoke(app, ["report", *args], env={"COLUMNS": "200"})


@needs_fixture
def test_checked_in_environments_merge_and_compare_against_a_baseline() -> None:
    """Local and Docker runs, Keras 3 and tf-keras, merged: each environment's host is a machine
    (not a container id) and the baseline environment's own speed-up is exactly 1."""
    ds = load_runs(sorted(p for p in FIXTURES.iterdir() if p.is_dir()))
    assert ds.problems == []
    envs = ds.environments
    assert envs["env_id"].nunique() >= 2
    assert {"keras3", "tf-keras"} <= set(envs["keras_impl"].dropna())
    docker = envs[envs["in_container"].eq(True)]
    assert len(docker) and docker["outcome"].notna().all()
    assert (docker["host"] != docker["hostname"]).all()
    baseline = sorted(cell_stats(ds)["env_id"].unique())[0]
    stats = cell_stats(ds, baseline_env=baseline)
    own = stats[stats["env_id"] == baseline]
    assert own["speedup_vs_env"].dropna().eq(1.0).all() and own["speedup_vs_env"].notna().any()
    others = stats[stats["env_id"] != baseline]
    assert others["speedup_vs_env"].notna().any()
    assert not cell_problems(ds).duplicated(CELL).any()


@needs_fixture
def test_environments_carry_backend_weights_and_the_schema_2_machine_fields() -> None:
    """What `compare` needs to refuse unlike runs: the sweep's backend (`local` without a
    manifest; an older manifest's matrix names it), the plan's weights, and the calibration and
    hypervisor fields, null for runs that predate them."""
    ds = load_runs(sorted(p for p in FIXTURES.iterdir() if p.is_dir()))
    envs = ds.environments.set_index("env_id")
    assert envs.loc["local-tf2.21-py3.11-cpu", "backend"] == "local"
    assert set(envs.loc[envs["in_container"].eq(True), "backend"]) == {"docker"}
    assert set(envs["weights"]) == {"none"}
    assert envs[["hypervisor", "calibration_s", "calibration_end_s"]].isna().all().all()


@needs_fixture
def test_schema_1_trials_get_first_prediction_and_cold_start_derived() -> None:
    ds = load_runs([FIXTURES / "20261127-201543-761b"])
    ok = ds.trials[ds.trials["status"].eq("ok")]
    assert len(ok) and (ok["schema_version"] == 1).all()
    first = ok["load_s"] + ok["first_inference_s"]
    assert ok["first_prediction_s"].tolist() == pytest.approx(first.tolist())
    assert ok["cold_start_s"].tolist() == pytest.approx((ok["import_s"] + first).tolist())
    assert ok["device_init_s"].isna().all()  # schema 1 created the device inside the load
    stats = cell_stats(ds)
    assert stats["first_prediction_median"].notna().all()
    assert stats["parity_status"].isna().all()  # no verdict recorded: "not checked", not a pass


def test_a_cells_parity_is_its_worst_trial(record) -> None:
    """fail > not-informative > pass; the largest relative error, the lowest agreement."""

    def trial(status: str, rel_err: float, top1: float) -> dict:
        return record(
            "trial",
            model="m",
            format="tflite-int8",
            cache_mode="warm",
            load_s=0.01,
            parity_status=status,
            parity_rel_err=rel_err,
            parity_top1_agreement=top1,
        )

    def cell(*trials: dict) -> dict:
        return cell_stats(dataset_of(list(trials))).iloc[0].to_dict()

    worst = cell(
        trial("pass", 0.001, 1.0), trial("fail", 0.5, 0.25), trial("not-informative", 0.0, 1.0)
    )
    assert (worst["parity_status"], worst["parity_rel_err_max"], worst["parity_top1_min"]) == (
        "fail",
        0.5,
        0.25,
    )
    assert (
        cell(trial("pass", 0.0, 1.0), trial("not-informative", 0.0, 1.0))["parity_status"]
        == "not-informative"
    )
    assert cell(trial("pass", 0.0, 1.0))["parity_status"] == "pass"


def test_reused_loads_after_the_first_have_no_cold_start(record) -> None:
    """A schema 1 reused process paid its import once: only its first load has a cold start."""
    loads = [
        {
            **record(
                "trial",
                model="m",
                format="h5",
                cache_mode="warm",
                process="reused",
                load_index=i,
                load_s=0.2,
                first_inference_s=0.1,
                import_s=3.0,
            ),
            "schema_version": 1,
        }
        for i in range(3)
    ]
    trials = dataset_of(loads).trials
    assert trials["cold_start_s"].tolist()[0] == pytest.approx(3.3)
    assert trials["cold_start_s"].iloc[1:].isna().all()
    assert trials["first_prediction_s"].tolist() == pytest.approx([0.3] * 3)
