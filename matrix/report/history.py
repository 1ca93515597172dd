"""`matrix history`: every cell's median load time over the runs kept in results/, oldest first.

A nightly sweep asks "did last night move anything?", so each series (environment, model, format,
cache mode) ends with its latest change against the run before, judged as `matrix compare` judges.
The x axis is the run, not a commit: what changes between runs is often the environment (a TF
patch release, a new base image), not this project's code.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import pandas as pd
from rich import box
from rich.markup import escape
from rich.table import Table

from matrix.report.compare import MEASURED_BY, cell_differences, cells, detectable_text
from matrix.report.order import natural_rank
from matrix.report.text import ms
from matrix.results.dataset import Dataset, cell_stats, load_runs
from matrix.results.runs import run_dirs
from matrix.results.stats import ALPHA, THRESHOLD, judge

SERIES = ["env_id", "model", "format", "cache_mode"]
COLUMNS = ["run_id", "started", *SERIES, "load_median", "n", "samples"]
_STEP = {
    "slower": "[red]▲ slower[/]",
    "faster": "[green]▼ faster[/]",
    "same": "",
    "underpowered": "[magenta]? underpowered[/]",
    "not comparable": "[yellow]not comparable[/]",
}


def history_frame(results_dir: Path) -> pd.DataFrame:
    """One row per (run, series) of every run under `results_dir`, series by series in time order.

    Columns: run_id, started (the environment's start time), env_id, model, format, cache_mode,
    load_median, n, samples (the measured load times, for `latest_changes`).
    """
    return series_frame(load_runs(run_dirs(results_dir)))


def series_frame(ds: Dataset) -> pd.DataFrame:
    """`history_frame` of runs already loaded."""
    started = ds.environments[["run_id", "env_id", "started"]]
    stats = cell_stats(ds).drop(columns=[*MEASURED_BY], errors="ignore")  # `cells` has them
    frame = stats.merge(started, on=["run_id", "env_id"], how="left")
    measured = cells(ds, ["run_id", *SERIES])[["run_id", *SERIES, "samples", *MEASURED_BY]]
    frame = frame.merge(measured, on=["run_id", *SERIES], how="left")
    return frame[[*COLUMNS, *MEASURED_BY]].sort_values(
        [*SERIES, "run_id"],
        key=lambda column: natural_rank(column) if column.name == "env_id" else column,
        ignore_index=True,
    )


def select(
    frame: pd.DataFrame, env: str | None = None, model: str | None = None, fmt: str | None = None
) -> pd.DataFrame:
    """The series whose environment matches the glob `env` and whose model and format match."""
    keep = pd.Series(True, index=frame.index)
    if env:
        keep &= frame["env_id"].map(lambda e: fnmatchcase(str(e), env))
    if model:
        keep &= frame["model"] == model
    if fmt:
        keep &= frame["format"] == fmt
    return frame[keep]


def latest_changes(
    frame: pd.DataFrame, threshold: float = THRESHOLD, alpha: float = ALPHA
) -> pd.DataFrame:
    """Per series in `frame` (a `series_frame`): its last run against the run before, with
    change, p, detectable change and verdict (NaN for a series of one run), judged as
    `matrix compare` judges: a step across a change of host, TF, backend … is `not comparable`
    (`note` says which), and the other steps are one family."""
    rows, pairs = [], []
    ordered = frame.sort_values("run_id", kind="stable")
    for series, runs in ordered.groupby(SERIES, sort=False, dropna=False):
        rows.append(dict(zip(SERIES, series)))
        if len(runs) >= 2:
            before, last = runs.iloc[-2], runs.iloc[-1]
            cell = {
                f"{name}_{side}": run[name]
                for side, run in (("a", before), ("b", last))
                for name in ("samples", *MEASURED_BY)
            }
            differs = cell_differences(cell)
            rows[-1]["note"] = "; ".join(differs)
            pairs.append(
                (len(rows) - 1, ([], []) if differs else (before["samples"], last["samples"]))
            )
    for (row, _), change in zip(pairs, judge([p for _, p in pairs], threshold, alpha)):
        rows[row].update(
            change=change.change,
            p_value=change.p_value,
            detectable=change.detectable,
            verdict="not comparable" if rows[row]["note"] else change.verdict,
        )
    columns = [*SERIES, "change", "p_value", "detectable", "verdict", "note"]
    return pd.DataFrame(rows, columns=columns)


def history_table(frame: pd.DataFrame, changes: pd.DataFrame, last: int) -> Table:
    """One row per series: its median (ms) in each of the last `last` runs, then the step."""
    runs = sorted(frame["run_id"].unique())
    shown = runs[-last:]
    title = "Median load time (ms) per run, oldest first"
    if len(shown) < len(runs):
        title += f"; the last {len(shown)} of {len(runs)} runs"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    keys = SERIES if frame["env_id"].nunique() > 1 else SERIES[1:]
    for key in keys:
        table.add_column(key.replace("_id", "").replace("_mode", ""), no_wrap=True)
    for run in shown:  # `20261127-183000-ab12` as date over time: eight runs fit 120 columns
        table.add_column(escape(run.replace("-", "\n", 1)), justify="right", no_wrap=True)
    table.add_column("change", justify="right", no_wrap=True)
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("detectable", justify="right", no_wrap=True)
    table.add_column("step", no_wrap=True)
    medians = frame.set_index(["run_id", *SERIES])["load_median"]
    for row in changes.to_dict("records"):
        series = tuple(row[k] for k in SERIES)
        table.add_row(
            *[escape(str(row[k])) for k in keys],
            *[ms(medians.get((run, *series))) for run in shown],
            "" if pd.isna(row["change"]) else f"{row['change']:+.1%}",
            "" if pd.isna(row["p_value"]) else f"{row['p_value']:.3g}",
            detectable_text(row["detectable"]),
            _STEP.get(row["verdict"], "")
            + (
                f" [dim]({escape(row['note'])})[/]"
                if isinstance(row["note"], str) and row["note"]
                else ""
            ),
        )
    return table
