"""`matrix compare RUN_A RUN_B`: which cells got slower or faster, and is it more than noise?

Cells are matched on (environment, model, format, cache mode). A pair is "not comparable" when
either side has fewer than two measured trials, or when the two cells measured different things
(another TensorFlow or Keras, another eviction method, another TFLite interpreter): a change
in load time would then say nothing about the code under test, and gating CI on it would fail
builds for the wrong reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from matrix.dataset import ENVIRONMENT, Dataset, distinct_values, load_samples, measured
from matrix.stats import ALPHA, MIN_SAMPLES, THRESHOLD, judge
from matrix.summary import ms

KEY = ["env_id", "model", "format", "cache_mode"]
# What a cell measured, beyond its key; the trials carry eviction and TFLite interpreter, the
# environment record the TensorFlow and Keras.
MEASURED_BY = {
    "tensorflow": "TF",
    "keras_impl": "Keras",
    "eviction": "eviction",
    "tflite_runtime": "TFLite runtime",
}
_STYLE = {"slower": "red", "faster": "green", "same": "dim", "not comparable": "yellow"}


@dataclass
class Comparison:
    """One row per cell measured in both runs, and how many cells only one run has."""

    cells: pd.DataFrame
    only_a: int
    only_b: int

    @property
    def slower(self) -> pd.DataFrame:
        """The regressions: slower beyond the threshold, and significantly so."""
        return self.cells[self.cells["verdict"] == "slower"]


def cells(ds: Dataset) -> pd.DataFrame:
    """Per cell: its load-time samples and what it measured (`MEASURED_BY`, as sorted text)."""
    versions = ds.environments[[*ENVIRONMENT, "tensorflow", "keras_impl"]]
    of_trials = [c for c in MEASURED_BY if c not in versions]  # eviction, TFLite runtime
    ok = measured(ds.trials[[*ENVIRONMENT, *KEY[1:], *of_trials, "status", "phase", "process"]])
    ways = ok[[*ENVIRONMENT, *KEY[1:], *of_trials]].drop_duplicates()  # a row per cell, mostly
    ways = ways.merge(versions, on=ENVIRONMENT, how="left")
    frame = load_samples(ds, KEY)
    for name in MEASURED_BY:  # every distinct value, sorted: "fadvise, read" if they were mixed
        frame = frame.merge(distinct_values(ways, KEY, name, ", "), on=KEY, how="left")
    return frame.fillna({name: "" for name in MEASURED_BY})


def compare_runs(
    ds_a: Dataset, ds_b: Dataset, threshold: float = THRESHOLD, alpha: float = ALPHA
) -> Comparison:
    """Every cell of run B against the same cell of run A (`judge` says what changed)."""
    a, b = cells(ds_a), cells(ds_b)
    both = a.merge(b, on=KEY, suffixes=("_a", "_b"))
    changes = judge(list(zip(both["samples_a"], both["samples_b"])), threshold, alpha)
    rows = []
    for cell, change in zip(both.to_dict("records"), changes):
        differs = [
            f"{label} {cell[f'{name}_a'] or '?'} → {cell[f'{name}_b'] or '?'}"
            for name, label in MEASURED_BY.items()
            if cell[f"{name}_a"] != cell[f"{name}_b"]
        ]
        n_a, n_b = len(cell["samples_a"]), len(cell["samples_b"])
        if min(n_a, n_b) < MIN_SAMPLES:
            differs.insert(0, f"fewer than {MIN_SAMPLES} ok trials")
        rows.append({
            **{k: cell[k] for k in KEY},
            "n_a": n_a,
            "n_b": n_b,
            "median_a": change.median_a,
            "median_b": change.median_b,
            "change": change.change,
            "p_value": change.p_value,
            "verdict": "not comparable" if differs else change.verdict,
            "note": "; ".join(differs),
        })
    table = pd.DataFrame(rows, columns=[*KEY, "n_a", "n_b", "median_a", "median_b", "change",
                                        "p_value", "verdict", "note"])
    return Comparison(table, only_a=len(a) - len(both), only_b=len(b) - len(both))


def render(comparison: Comparison, run_a: str, run_b: str, most_same: int | None = None) -> Table:
    """The comparison as a rich table, medians in ms, changes first; the environment column only
    if it varies. Unchanged cells are left out when there are more than `most_same` of them: in
    a sweep of thousands of cells the few that moved must not scroll away (and a table of
    thousands of rows takes rich seconds to lay out)."""
    frame = comparison.cells.sort_values(
        "verdict", key=lambda v: v.map(list(_STYLE).index), kind="stable"
    )
    same = frame["verdict"] == "same"
    hidden = most_same is not None and same.sum() > most_same
    title = f"Median load time, {escape(run_a)} (A) → {escape(run_b)} (B)"
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
    for header in ("n A/B", "A ms", "B ms", "change", "p"):
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
            Text.styled(verdict, _STYLE[verdict]),
            Text(row["note"]),
        )
    return table


def summary_line(comparison: Comparison, threshold: float, alpha: float) -> str:
    """`1 slower, 3 same (a change counts when …); cells only in one run: 2 in A`."""
    counts = comparison.cells["verdict"].value_counts()
    parts = [f"{counts[v]} {v}" for v in _STYLE if v in counts] or ["no cell in both runs"]
    line = f"{', '.join(parts)} (a change counts when > {threshold:.0%} and p < {alpha:g})"
    alone = [f"{n} in {side}" for n, side in ((comparison.only_a, "A"),
                                              (comparison.only_b, "B")) if n]
    return line + (f"; cells only in one run: {', '.join(alone)}" if alone else "")
