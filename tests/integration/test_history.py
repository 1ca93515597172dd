"""`matrix history` over three runs: two real side-by-side runs at the default repeats, then a
third one night later whose h5 loads are the second run's real loads × 2 (a planted step,
see real_runs.py). The step is judged by the one rule of `matrix.results.stats`, and `matrix
compare`,
`matrix history` and the report's history view give the same verdict on the same pair."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matrix.cli import app
from matrix.report.compare import compare_runs
from matrix.report.figures import history_table
from matrix.report.history import history_frame, latest_changes
from matrix.results.dataset import cell_stats, load_runs
from tests.integration.real_runs import DEFAULTS, GATE_MODEL, planted, real_pair

LATER = "20261105-010000-eeee"


@pytest.fixture(scope="session")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/ with the runs under names that do not sort like their ids (links to them)."""
    first, second = real_pair(tmp_path_factory, "gate")
    folder = tmp_path_factory.mktemp("history") / "results"
    planted(second, folder / "a-copied-run", "h5", 2.0, run_id=LATER)
    (folder / "z-first").symlink_to(first)
    (folder / "m-second").symlink_to(second)
    return folder


def _history(results: Path, *args: str):
    return CliRunner().invoke(
        app, ["history", "--results-dir", str(results), *args], env={"COLUMNS": "200"}
    )


@pytest.mark.slow
def test_history_frame_lists_each_series_in_time_order(results: Path) -> None:
    frame = history_frame(results)
    h5 = frame[frame["format"] == "h5"]
    assert list(h5["run_id"]) == ["20261103-010000-cccc", "20261104-010000-dddd", LATER]
    assert set(frame["format"]) == {"h5", "tflite"} and set(frame["n"]) == {DEFAULTS.repeats}
    assert frame["started"].notna().all()
    stats = cell_stats(load_runs(sorted(results.iterdir()))).set_index(["run_id", "format"])
    assert list(frame["load_median"]) == [
        stats.loc[(r, f), "load_median"] for r, f in zip(frame["run_id"], frame["format"])
    ]
    assert h5["load_median"].iloc[2] == pytest.approx(2 * h5["load_median"].iloc[1])


@pytest.mark.slow
def test_the_table_shows_runs_oldest_first_and_flags_the_step(results: Path) -> None:
    result = _history(results)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "010000-cccc" in line)
    positions = [header.index(suffix) for suffix in ("010000-cccc", "010000-dddd", "010000-eeee")]
    assert positions == sorted(positions)
    row = next(
        line for line in result.output.splitlines() if re.search(rf"{GATE_MODEL} +h5 ", line)
    )
    assert "+100.0%" in row and "▲ slower" in row


@pytest.mark.slow
def test_last_n_runs_and_filters(results: Path) -> None:
    result = _history(results, "--last", "2", "--env", "test-*", "--model", GATE_MODEL)
    assert result.exit_code == 0, result.output
    assert "the last 2 of 3 runs" in result.output
    assert "010000-cccc" not in result.output and "010000-eeee" in result.output
    nothing = _history(results, "--format", "keras")
    assert nothing.exit_code == 2
    assert nothing.stderr == f"error: no measured cell under {results}/ matches the filters\n"


@pytest.mark.slow
def test_compare_history_and_the_report_give_the_same_verdicts(results: Path) -> None:
    """The same pair of runs (the second night and the planted third), judged three ways."""
    second, third = results / "m-second", results / "a-copied-run"
    compared = compare_runs(load_runs([second]), load_runs([third])).cells
    by_compare = dict(zip(compared["format"], compared["verdict"]))
    frame = history_frame(results)
    changes = latest_changes(frame)
    by_history = dict(zip(changes["format"], changes["verdict"]))
    table = history_table(frame)
    by_report = {
        fmt: next(row for row in table.rows if f">{fmt}<" in row) for fmt in ("h5", "tflite")
    }
    assert by_compare == by_history and by_compare["h5"] == "slower"
    for fmt, verdict in by_compare.items():
        assert f">{verdict}</td>" in by_report[fmt], by_report[fmt]
    shown = _history(results).output
    for fmt, verdict in by_history.items():
        row = next(line for line in shown.splitlines() if re.search(rf"{GATE_MODEL} +{fmt} ", line))
        words = [w for w in ("slower", "faster", "underpowered") if w in row]
        assert words == ([] if verdict == "same" else [verdict]), row


def test_no_runs_is_a_configuration_error(tmp_path: Path) -> None:
    result = _history(tmp_path / "results")
    assert result.exit_code == 2
    assert result.stderr == f"error: no runs under {tmp_path / 'results'}/\n"


def test_a_step_to_another_machine_is_not_comparable_as_in_compare(
    tmp_path: Path, record, jsonl
) -> None:
    """The last night ran on another host (not a container): `history` must not call its
    change slower or faster, exactly as `compare` refuses it."""
    from tests.conftest import ENV_ID

    for run_id, host, scale in (
        ("20261101-010000-aaaa", "box-1", 1.0),
        ("20261102-010000-bbbb", "box-2", 2.0),
    ):
        (tmp_path / run_id).mkdir()
        trials = [
            record(
                "trial",
                run_id=run_id,
                model="m",
                format="h5",
                cache_mode="warm",
                load_s=scale * (0.1 + i / 1000),
            )
            for i in range(5)
        ]
        env = record("environment", run_id=run_id, hostname=host, in_container=False)
        jsonl(tmp_path / run_id / f"{ENV_ID}.jsonl", [env, *trials])
    changes = latest_changes(history_frame(tmp_path))
    compared = compare_runs(*(load_runs([d]) for d in sorted(tmp_path.iterdir()))).cells
    assert list(changes["verdict"]) == list(compared["verdict"]) == ["not comparable"]
    assert "host box-1 → box-2" in changes["note"].iloc[0]
    shown = _history(tmp_path).output
    assert "not comparable" in shown and "host box-1 → box-2" in shown
