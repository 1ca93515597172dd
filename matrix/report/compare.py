"""`matrix compare RUN_A RUN_B`: which cells got slower or faster, and is it more than noise?

Cells are matched on (environment, model, format, cache mode) and judged by the one rule of
`matrix.results.stats`; a pair that measured different things is "not comparable"
(`cell_differences`). Machine speed drifts, so each run's calibration figure notes a drifted
environment and can rescale run B to run A's speed (`compare_runs`, `normalise`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from matrix.report.order import natural_rank
from matrix.report.text import ms
from matrix.results.dataset import ENVIRONMENT, Dataset, distinct_values, load_samples, measured
from matrix.results.stats import (
    ALPHA,
    MIN_SAMPLES,
    THRESHOLD,
    VERDICTS,
    judge,
    pair_alpha,
    repeats_needed,
)

KEY = ["env_id", "model", "format", "cache_mode"]
# What a cell measured, beyond its key, and how a note names it: the environment table carries
# the first six (TF, Keras, host, CPU, the sweep's backend and the plan's weights), the trials
# the rest.
MEASURED_BY = {
    "tensorflow": "TF",
    "keras_impl": "Keras",
    "host": "host",
    "cpu_model": "CPU",
    "backend": "backend",
    "weights": "weights",
    "eviction": "eviction",
    "tflite_runtime": "TFLite runtime",
    "isolation": "isolation",
    "process": "process kind",  # a forked load is not a fresh process's (docs/records.md)
}
_OF_ENVIRONMENT = ["tensorflow", "keras_impl", "host", "cpu_model", "backend", "weights"]
UNKNOWN = {"", "auto"}  # not recorded (an older run), or a manifest's `auto` backend
REPEATS_SHOWN = 1000  # the summary says "more than this" rather than search further
TESTED = ("slower", "faster", "same", "underpowered")  # the verdicts of the family judged
_STYLE = dict(zip(VERDICTS, ["red", "green", "magenta", "dim", "yellow"]))


@dataclass
class Comparison:
    """One row per cell measured in both runs, and how many cells only one run has.

    `drifted` lists the environments whose two calibration figures differ by more than the
    threshold, as (env_id, calibration A, calibration B).
    """

    cells: pd.DataFrame
    only_a: int
    only_b: int
    drifted: list[tuple[str, float, float]]
    normalised: bool

    @property
    def slower(self) -> pd.DataFrame:
        """The regressions: slower beyond the threshold, and significantly so."""
        return self.cells[self.cells["verdict"] == "slower"]

    @property
    def underpowered(self) -> pd.DataFrame:
        """The cells whose samples could not have shown a change of the threshold's size."""
        return self.cells[self.cells["verdict"] == "underpowered"]


def cells(ds: Dataset, keys: list[str] = KEY) -> pd.DataFrame:
    """Per cell: its load-time samples, what it measured (`MEASURED_BY`, as sorted text) and
    its environment's calibration figure. `keys`: KEY, or `["run_id", *KEY]` for a cell per
    run (`matrix history`)."""
    env = ds.environments.reindex(columns=[*ENVIRONMENT, *_OF_ENVIRONMENT, "calibration_s"])
    of_trials = [c for c in MEASURED_BY if c not in _OF_ENVIRONMENT]
    columns = [*ENVIRONMENT, *KEY[1:], *of_trials, "status", "phase", "process"]
    trials = ds.trials.reindex(columns=list(dict.fromkeys(columns)))
    ways = measured(trials)[[*ENVIRONMENT, *KEY[1:], *of_trials]].drop_duplicates()
    ways = ways.merge(env.drop(columns="calibration_s"), on=ENVIRONMENT, how="left")
    frame = load_samples(ds, keys)
    for name in MEASURED_BY:  # every distinct value, sorted: "fadvise, read" if they were mixed
        frame = frame.merge(distinct_values(ways, keys, name, ", "), on=keys, how="left")
    by = [k for k in ENVIRONMENT if k in keys]  # the environment, and the run if keyed by it
    calibration = pd.to_numeric(env["calibration_s"], errors="coerce").groupby([env[k] for k in by])
    frame = frame.merge(calibration.median().rename("calibration").reset_index(), on=by, how="left")
    return frame.fillna({name: "" for name in MEASURED_BY})


def compare_runs(
    ds_a: Dataset,
    ds_b: Dataset,
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
    normalise: bool = False,
) -> Comparison:
    """Every cell of run B (`ds_b`) against the same cell of run A (`ds_a`); `judge` says what
    changed, by more than `threshold` (relative change of the median) and significantly at
    `alpha` over the family. Machine speed drifts (±20 % over a day on a shared VM): where the
    runs' `calibration_s` (harness/calibrate.py) of an environment differ by more than the
    threshold, its cells carry a note, and with `normalise` B's load times are first rescaled
    to A's machine speed (× calibration A / calibration B). That equals dividing each run by its
    own calibration: the test is on log times, so only the ratio matters, and medians stay in
    ms."""
    a, b = cells(ds_a), cells(ds_b)
    both = a.merge(b, on=KEY, suffixes=("_a", "_b"))
    ratio = both["calibration_b"] / both["calibration_a"]  # NaN where a run has none
    drifted_cell = (ratio - 1).abs() > threshold
    samples_b = both["samples_b"]
    if normalise:
        samples_b = [
            [x / r for x in s] if not math.isnan(r) else s for s, r in zip(samples_b, ratio)
        ]
    records = both.to_dict("records")
    differences = [cell_differences(cell) for cell in records]
    # Cells that measured different things are left out of the family `judge` corrects for.
    changes = judge(
        [
            ([], []) if differs else (a_samples, b_samples)
            for differs, a_samples, b_samples in zip(differences, both["samples_a"], samples_b)
        ],
        threshold,
        alpha,
    )
    rows = []
    for cell, differs, change, b_samples, r, drift in zip(
        records, differences, changes, samples_b, ratio, drifted_cell
    ):
        n_a, n_b = len(cell["samples_a"]), len(cell["samples_b"])
        notes = [*differs, *_calibration_notes(r, drift, normalise)]
        rows.append(
            {
                **{k: cell[k] for k in KEY},
                "n_a": n_a,
                "n_b": n_b,
                "median_a": _median(cell["samples_a"]),
                "median_b": _median(b_samples),
                "change": change.change,
                "p_value": change.p_value,
                "detectable": change.detectable,
                "spread": change.spread,
                "verdict": "not comparable" if differs else change.verdict,
                "note": "; ".join(notes),
            }
        )
    table = pd.DataFrame(
        rows,
        columns=[
            *KEY,
            "n_a",
            "n_b",
            "median_a",
            "median_b",
            "change",
            "p_value",
            "detectable",
            "spread",
            "verdict",
            "note",
        ],
    )
    drifted = both.loc[drifted_cell, ["env_id", "calibration_a", "calibration_b"]]
    return Comparison(
        table,
        only_a=len(a) - len(both),
        only_b=len(b) - len(both),
        drifted=list(drifted.drop_duplicates("env_id").itertuples(index=False, name=None)),
        normalised=normalise,
    )


def cell_differences(cell: dict[str, Any]) -> list[str]:
    """Why the two sides of a cell (`samples_a`, `samples_b` and each `MEASURED_BY` name with
    `_a` / `_b`) cannot be compared (none: they can): too few trials, or what they measured
    differs (a side's unknown value is not a difference).

    What a cell measured (`MEASURED_BY`: TensorFlow or Keras, host, CPU, backend, weights,
    eviction method, isolation, TFLite interpreter) must match: a change in load time would
    otherwise say nothing about the code under test, and gating CI on it would fail builds for
    the wrong reason."""
    differs = [
        f"{label} {cell[f'{name}_a']} → {cell[f'{name}_b']}"
        for name, label in MEASURED_BY.items()
        if {cell[f"{name}_a"], cell[f"{name}_b"]}.isdisjoint(UNKNOWN)
        and cell[f"{name}_a"] != cell[f"{name}_b"]
    ]
    if min(len(cell["samples_a"]), len(cell["samples_b"])) < MIN_SAMPLES:
        differs.insert(0, f"fewer than {MIN_SAMPLES} ok trials")
    return differs


def _median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else math.nan


def _calibration_notes(ratio: float, drifted: bool, normalise: bool) -> list[str]:
    """What a cell's note says about machine speed: its drift, and whether B was rescaled."""
    if normalise:
        if math.isnan(ratio):
            return ["not normalised: a run has no calibration"]
        return [f"B normalised by calibration ({ratio - 1:+.0%})"]
    return [f"calibration {ratio - 1:+.0%}: machine speed differs (--normalise)"] if drifted else []


def comparison_table(
    comparison: Comparison, run_a: str, run_b: str, most_same: int | None = None
) -> Table:
    """The comparison as a rich table, medians in ms, changes first; the environment column only
    if it varies. Unchanged cells are left out when there are more than `most_same` of them: in
    a sweep of thousands of cells the few that moved must not scroll away (and a table of
    thousands of rows takes rich seconds to lay out)."""
    frame = comparison.cells.sort_values("env_id", key=natural_rank, kind="stable")
    frame = frame.sort_values("verdict", key=lambda v: v.map(list(_STYLE).index), kind="stable")
    same = frame["verdict"] == "same"
    hidden = most_same is not None and same.sum() > most_same
    title = f"Median load time, {escape(run_a)} (A) → {escape(run_b)} (B)"
    if comparison.normalised:
        title += ", B at A's machine speed (calibration)"
    if hidden:
        frame = frame[~same]
        title += f"; {same.sum()} unchanged cells not listed (--all lists them)"
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    keys = KEY if frame["env_id"].nunique() > 1 else KEY[1:]
    for key in keys:
        table.add_column(key.replace("_id", "").replace("_mode", ""), no_wrap=True)
    for header in ("n A/B", "A ms", "B ms", "change", "p", "detectable"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("note", overflow="fold")
    for row in frame.to_dict("records"):  # Text, not markup: parsing 10^4 cells takes a second
        verdict = row["verdict"]
        table.add_row(
            *[Text(str(row[k])) for k in keys],
            Text(f"{row['n_a']}/{row['n_b']}"),
            Text(ms(row["median_a"])),
            Text(ms(row["median_b"])),
            Text("" if pd.isna(row["change"]) else f"{row['change']:+.1%}"),
            Text("" if pd.isna(row["p_value"]) else f"{row['p_value']:.3g}"),
            Text(detectable_text(row["detectable"])),
            Text.styled(verdict, _STYLE[verdict]),
            Text(row["note"]),
        )
    return table


def detectable_text(detectable: float) -> str:
    """The smallest change a test could detect, as `±23%` (blank when nothing was tested)."""
    return "" if pd.isna(detectable) else f"±{detectable:.0%}"


def summary_line(comparison: Comparison, threshold: float, alpha: float) -> str:
    """`1 slower, 3 same (a change counts when …); cells only in one run: 2 in A`, then what
    the underpowered cells would need and which environments' machine speed drifted."""
    counts = comparison.cells["verdict"].value_counts()
    parts = [f"{counts[v]} {v}" for v in _STYLE if v in counts] or ["no cell in both runs"]
    line = (
        f"{', '.join(parts)} (a change counts when > {threshold:.0%} and significant: "
        "Welch's t-test on log load times, Benjamini-Hochberg at "
        f"{alpha:g} over the {int(comparison.cells['verdict'].isin(TESTED).sum())} cells tested)"
    )
    alone = [
        f"{n} in {side}" for n, side in ((comparison.only_a, "A"), (comparison.only_b, "B")) if n
    ]
    lines = [line + (f"; cells only in one run: {', '.join(alone)}" if alone else "")]
    if not comparison.underpowered.empty:
        lines.append(
            _power_line(
                comparison.underpowered["spread"],
                threshold,
                pair_alpha(alpha, int(comparison.cells["verdict"].isin(TESTED).sum())),
            )
        )
    if comparison.drifted:
        drifts = ", ".join(f"{env} {b / a - 1:+.0%}" for env, a, b in comparison.drifted)
        action = (
            "B's load times were rescaled by it (--normalise)"
            if comparison.normalised
            else "--normalise rescales B's load times by it"
        )
        lines.append(
            f"calibration (machine speed) differs by more than {threshold:.0%}: {drifts}; {action}"
        )
    return "\n".join(lines)


def _power_line(spreads: pd.Series, threshold: float, alpha: float) -> str:
    """How many repeats per side the underpowered cells would need to see the threshold."""

    def needed(spread: float) -> str:
        n = repeats_needed(spread, threshold, alpha, cap=REPEATS_SHOWN)
        return f"more than {REPEATS_SHOWN}" if n is None else str(n)

    typical, worst = float(spreads.median()), float(spreads.max())
    line = (
        f"{len(spreads)} underpowered: at their observed spread (median SD of log load "
        f"time {typical:.2f}) a {threshold:.0%} change needs {needed(typical)} repeats per "
        "side"
    )
    if worst > typical:
        line += f" (the noisiest cell, SD {worst:.2f}: {needed(worst)})"
    return line + " (exit 5; --allow-underpowered does not fail on them)"
