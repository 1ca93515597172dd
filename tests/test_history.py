"""`matrix history` over three runs: two real side-by-side runs, then a third one night later
whose TFLite loads are the second run's real loads × 1.3 (a planted step, see real_runs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from matrix.cli import app
from matrix.dataset import cell_stats, load_runs
from matrix.history import history_frame
from tests.real_runs import planted, real_pair

LATER = "20261105-010000-eeee"


@pytest.fixture(scope="session")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/ with the runs under names that do not sort like their ids (links to them)."""
    first, second = real_pair(tmp_path_factory, "many")
    folder = tmp_path_factory.mktemp("history") / "results"
    planted(second, folder / "a-copied-run", "tflite", 1.3, run_id=LATER)
    (folder / "z-first").symlink_to(first)
    (folder / "m-second").symlink_to(second)
    return folder


def _history(results: Path, *args: str):
    return CliRunner().invoke(app, ["history", "--results-dir", str(results), *args],
                              env={"COLUMNS": "200"})


@pytest.mark.slow
def test_history_frame_lists_each_series_in_time_order(results: Path) -> None:
    frame = history_frame(results)
    assert list(frame["run_id"]) == ["20261103-010000-cccc", "20261104-010000-dddd", LATER]
    assert set(frame["format"]) == {"tflite"} and set(frame["n"]) == {100}
    assert frame["started"].notna().all()
    stats = cell_stats(load_runs(sorted(results.iterdir()))).set_index("run_id")
    assert list(frame["load_median"]) == [stats.loc[r, "load_median"] for r in frame["run_id"]]
    assert frame["load_median"].iloc[2] == pytest.approx(1.3 * frame["load_median"].iloc[1])


@pytest.mark.slow
def test_the_table_shows_runs_oldest_first_and_flags_the_step(results: Path) -> None:
    result = _history(results)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "010000-cccc" in line)
    positions = [header.index(suffix) for suffix in ("010000-cccc", "010000-dddd", "010000-eeee")]
    assert positions == sorted(positions)
    row = next(line for line in result.output.splitlines() if "dense-10k" in line)
    assert "+30.0%" in row and "▲ slower" in row


@pytest.mark.slow
def test_last_n_runs_and_filters(results: Path) -> None:
    result = _history(results, "--last", "2", "--env", "test-*", "--model", "dense-10k")
    assert result.exit_code == 0, result.output
    assert "the last 2 of 3 runs" in result.output
    assert "010000-cccc" not in result.output and "010000-eeee" in result.output
    nothing = _history(results, "--format", "h5")
    assert nothing.exit_code == 2
    assert nothing.stderr == f"error: no measured cell under {results}/ matches the filters\n"


def test_no_runs_is_a_configuration_error(tmp_path: Path) -> None:
    result = _history(tmp_path / "results")
    assert result.exit_code == 2
    assert result.stderr == f"error: no runs under {tmp_path / 'results'}/\n"
