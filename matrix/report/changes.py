"""What changed between neighbouring versions: the few largest steps of a sweep's trends.

Every step between adjacent TF (or Python) versions of a view, per format and figure, is judged
by the rule `matrix compare` uses (`matrix.results.stats.judge`: beyond the threshold AND
significant, Benjamini-Hochberg over all steps together), so the summary never calls noise a
change and a threshold alone never decides. The largest steps that pass come first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from markupsafe import Markup

from matrix.report.axes import (
    METRICS,
    Arrangement,
    adjacent_pairs,
    arrange,
    environment_axes,
    judged,
    points_of,
    value_label,
)
from matrix.report.sections import ReportFrames, Section
from matrix.report.text import seconds
from matrix.results.stats import ALPHA, THRESHOLD, VERDICTS

VERSION_AXES = ("tf", "python")  # the axes whose neighbouring values are versions
# The figures a step is judged on: cold start is import + first prediction, so it adds no step.
STEP_METRICS = ("first_prediction_s", "load_s", "import_s")
MAX_LINES = 6


@dataclass(frozen=True)
class Changes:
    """The judged steps (one row each) and the lines the page shows."""

    steps: pd.DataFrame
    lines: list[str]
    tally: Markup


def version_steps(envs: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """Every step between neighbouring versions on the version axes, judged as one family:
    `change` (median b / median a - 1), `p_value` and `verdict` per (cell, figure, step).
    `envs` as `environment_axes`, `points` as `metric_points` make them."""
    points = points[points["metric"].isin(STEP_METRICS)]
    parts = []
    for axis in VERSION_AXES:
        arr = arrange(envs, axis)
        if isinstance(arr, Arrangement):
            pairs = adjacent_pairs(points, arr)
            parts.append(pairs.assign(axis=axis, _held=_context(pairs, arr)))
    steps = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return judged(steps) if len(steps) else steps


def _context(pairs: pd.DataFrame, arr: Arrangement) -> list[str]:
    """What each step held fixed that varies in these runs (a constant needs no naming)."""
    varying = arr.named
    rows = list(zip(*(pairs[a] for a in varying)))
    named = {
        values: ", ".join(value_label(a, str(v)) for a, v in zip(varying, values))
        for values in set(rows)
    }  # once per distinct combination: a sweep has 10^4 steps and a few combinations
    return [named[values] for values in rows] or [""] * len(pairs)


def summarise(steps: pd.DataFrame) -> Changes:
    """The largest steps that pass the rule, as lines; the same step of the same figure in
    several formats (an import, say) is one line naming them."""
    if steps.empty:
        return Changes(steps, [], Markup(""))
    moved = steps[steps["verdict"].isin(["slower", "faster"])]
    for name in ("model", "cache_mode"):  # named only where the runs have several
        if steps[name].nunique() == 1:
            moved = moved.assign(**{name: ""})
    moved = moved.assign(_size=moved["change"].map(lambda c: abs(math.log1p(c))))
    key = ["axis", "value_a", "value_b", "metric", "model", "cache_mode", "_held", "verdict"]
    moved = moved.assign(
        value_a=[getattr(r, f"{r.axis}_a") for r in moved.itertuples()],
        value_b=[getattr(r, f"{r.axis}_b") for r in moved.itertuples()],
    )
    lines = []
    grouped = moved.sort_values("_size", ascending=False, kind="stable").groupby(key, sort=False)
    for (axis, a, b, metric, model, mode, held, verdict), rows in grouped:
        top = rows.iloc[0]
        formats = ", ".join(rows["format"])
        ratio = top["median_b"] / top["median_a"]
        how = f"{ratio:.2g}× slower" if verdict == "slower" else f"{1 / ratio:.2g}× faster"
        where = ", ".join(p for p in (model, mode, held) if p)
        lines.append(
            f"{value_label(axis, a)} → {b}: {formats} {METRICS[metric]} {how} "
            f"({seconds(top['median_a'])} → {seconds(top['median_b'])}{'; ' if where else ''}"
            f"{where})"
        )
        if len(lines) == MAX_LINES:
            break
    return Changes(steps, lines, _tally(steps))


def _tally(steps: pd.DataFrame) -> Markup:
    """How many steps were judged and how: our own words and numbers, hence markup."""
    counts = steps["verdict"].value_counts()
    tested = int(counts.drop("not comparable", errors="ignore").sum())
    parts = [f"{counts[v]} {v}" for v in VERDICTS if v in counts]
    return Markup(
        f"{len(steps)} steps between neighbouring versions ({', '.join(parts) or 'none tested'}); "
        f"a step counts when its median moved by more than {THRESHOLD:.0%} and Welch's test on "
        f"log times is significant (Benjamini-Hochberg at {ALPHA:g} over the {tested} tested): "
        "the rule of <code>matrix compare</code>."
    )


def section(f: ReportFrames) -> Section | None:
    """The summary at the top of a sweep's page; None when no version axis varies."""
    steps = version_steps(environment_axes(f.reported), points_of(f))
    if steps.empty:
        return None
    found = summarise(steps)
    return Section("changes", "What changed", {"lines": found.lines, "tally": found.tally})
