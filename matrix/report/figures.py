"""From the merged frames to the report's charts: which cells each chart shows, and their tooltips.

`report_charts` knows how to draw; this module knows what load-time questions each figure
answers (which cache mode the heat map uses, which axis is shared), so the two change apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from markupsafe import Markup

from harness.catalog import CACHE_MODES
from matrix.report.charts import (
    CACHE_COLOURS,
    FORMAT_COLOURS,
    Mark,
    bar_chart,
    colour,
    heat_map,
    legend,
    scatter,
    sparkline,
)
from matrix.report.history import latest_changes
from matrix.report.order import natural_key
from matrix.report.text import (
    MAX_ROWS,
    Cell,
    Table,
    count,
    grouped,
    left_out_note,
    missing,
    num_cell,
    percent,
    seconds,
    text_cell,
)


@dataclass
class Figure:
    """One chart with the heading it is shown under."""

    title: str
    svg: Markup


@dataclass
class FigureGroup:
    """Charts that share an axis or a colour key (one model's panels, say)."""

    title: str
    legend: Markup
    figures: list[Figure]


def coldest_mode(stats: pd.DataFrame) -> str:
    """The coldest cache mode that has a measurement: `cold` needs root on the host, so a run
    without it falls back to `cold-model` (only the artifact evicted), then `warm`."""
    measured = set(stats.loc[stats["load_median"].notna(), "cache_mode"].unique())
    return next((m for m in CACHE_MODES if m in measured), CACHE_MODES[0])  # coldest first


# The columns a mark's tooltip reads: `grouped` over these alone, not over all forty.
_MARK = [
    "model",
    "format",
    "cache_mode",
    "env",
    "load_median",
    "n",
    "load_q1",
    "load_q3",
    "load_min",
]
MAX_PANELS = 100  # more model × environment bar panels than this, and environments are pooled


def _tooltip(row: Any) -> str:
    """What a mark's hover says: the cell, its median and spread."""
    return (
        f"{row.model} · {row.format} · {row.cache_mode} · {row.env}\n"
        f"median {seconds(row.load_median)} (n={int(row.n)}), IQR {seconds(row.load_q1)}"
        f" – {seconds(row.load_q3)}, min {seconds(row.load_min)}"
    )


def _problem_tips(problems: pd.DataFrame) -> dict[tuple, str]:
    columns = (
        problems[c].tolist() for c in ["env", "model", "format", "cache_mode", "status", "reason"]
    )
    return {
        (env, model, fmt, mode): f"{status}: {reason}"
        for env, model, fmt, mode, status, reason in zip(*columns)
    }


def heat_maps(
    stats: pd.DataFrame, problems: pd.DataFrame, formats: Sequence[str], mode: str
) -> list[Figure]:
    """Per model: environments × formats, coloured by median load in `mode`."""
    tips = _problem_tips(problems)
    rows = stats.loc[stats["cache_mode"] == mode, _MARK]
    figures = []
    for (model,), group in grouped(rows, ["model"]).items():
        envs = list(dict.fromkeys(r.env for r in group))
        cells = {
            (r.env, r.format): Mark(None if missing(r.load_median) else r.load_median, _tooltip(r))
            for r in group
        }
        for env in envs:
            for fmt in formats:
                if (env, fmt) not in cells and (env, model, fmt, mode) in tips:
                    cells[(env, fmt)] = Mark(None, tips[(env, model, fmt, mode)])
        figures.append(
            Figure(
                str(model),
                heat_map(envs, formats, cells, seconds, f"median {mode} load time of {model}"),
            )
        )
    return figures


def bar_groups(stats: pd.DataFrame, formats: Sequence[str]) -> tuple[list[FigureGroup], int]:
    """Per model, one panel per environment: formats × cache modes with IQR whiskers; and 0.

    All panels of a model share one axis, so environments compare by bar length alone. Past
    MAX_PANELS panels (a big sweep draws hundreds), each model gets one panel pooling its
    environments instead, and the number of environments pooled is returned in place of 0.
    """
    measured = stats.dropna(subset=["load_median"])
    modes = [m for m in CACHE_MODES if m in set(stats["cache_mode"].unique())]
    key = legend([(m, colour(m, CACHE_COLOURS)) for m in modes])
    if len(measured[["model", "env"]].drop_duplicates()) > MAX_PANELS:
        return _pooled_bars(measured, formats, modes, key), measured["env"].nunique()
    groups = []
    for (model,), rows in grouped(measured[_MARK], ["model"]).items():
        high = max(max(r.load_median, 0 if missing(r.load_q3) else r.load_q3) for r in rows)
        present = [f for f in formats if f in {r.format for r in rows}]
        figures = []
        for env in dict.fromkeys(r.env for r in rows):
            bars = {
                (r.format, r.cache_mode): Mark(r.load_median, _tooltip(r), r.load_q1, r.load_q3)
                for r in rows
                if r.env == env
            }
            figures.append(
                Figure(
                    str(env),
                    bar_chart(
                        present, modes, bars, high, seconds, f"load time of {model} in {env}"
                    ),
                )
            )
        groups.append(FigureGroup(str(model), key, figures))
    return groups, 0


def _pooled_bars(
    measured: pd.DataFrame, formats: Sequence[str], modes: list[str], key: Markup
) -> list[FigureGroup]:
    """One panel per model, side by side: each bar the median over environments of the cell's
    median, its whisker from the fastest environment to the slowest (named in the tooltip)."""
    loads = measured.groupby(["model", "format", "cache_mode"], sort=False, observed=True)[
        "load_median"
    ]
    fastest = measured.loc[loads.idxmin(), "env"].tolist()
    slowest = measured.loc[loads.idxmax(), "env"].tolist()
    pooled = pd.DataFrame(
        {
            "median": loads.median(),
            "low": loads.min(),
            "high": loads.max(),
            "envs": loads.size(),
            "fastest": fastest,
            "slowest": slowest,
        }
    )
    figures = []
    for model, rows in pooled.reset_index().groupby("model", sort=False):
        bars = {
            (r.format, r.cache_mode): Mark(
                r.median,
                f"{model} · {r.format} · {r.cache_mode}\nmedian of {r.envs} "
                f"environments: {seconds(r.median)}\nfastest {r.fastest}: {seconds(r.low)}; "
                f"slowest {r.slowest}: {seconds(r.high)}",
                r.low,
                r.high,
            )
            for r in rows.itertuples(index=False)
        }
        present = [f for f in formats if f in set(rows["format"].unique())]
        figures.append(
            Figure(
                str(model),
                bar_chart(
                    present,
                    modes,
                    bars,
                    rows["high"].max(),
                    seconds,
                    f"load time of {model}, median over environments",
                ),
            )
        )
    return [FigureGroup(f"Median of {measured['env'].nunique()} environments", key, figures)]


def ladder(stats: pd.DataFrame, formats: Sequence[str], mode: str) -> FigureGroup | None:
    """Per environment with two model sizes or more: median load against parameter count, one
    line per format; None when no environment has two."""
    rows = stats.loc[
        stats["cache_mode"] == mode, ["env", "model", "format", "params", "load_median"]
    ]
    rows = rows.dropna(subset=["load_median", "params"])
    if rows.empty:
        return None
    present = [f for f in formats if f in set(rows["format"].unique())]
    figures = []
    for (env,), panel in grouped(rows.sort_values("env", kind="stable"), ["env"]).items():
        if len({r.params for r in panel}) < 2:
            continue  # one size: a column of dots, no line against parameter count
        series = {
            fmt: [
                (
                    float(r.params),
                    float(r.load_median),
                    f"{r.model} · {fmt}: {seconds(r.load_median)}, {count(r.params)} params",
                )
                for r in panel
                if r.format == fmt
            ]
            for fmt in present
        }
        figures.append(
            Figure(
                str(env),
                scatter(
                    series,
                    count,
                    seconds,
                    "parameters",
                    f"median {mode} load",
                    f"load time against parameter count in {env}",
                ),
            )
        )
    if not figures:
        return None
    return FigureGroup(mode, legend([(f, colour(f, FORMAT_COLOURS)) for f in present]), figures)


def _verdict(verdict: Any) -> str:
    """CSS class of a step's verdict (`matrix.results.stats`): red if slower, green if faster."""
    return verdict if verdict in ("slower", "faster") else ""


def history_table(history: pd.DataFrame) -> Table:
    """One row per (environment, model, format, cache) series, with its trend over runs and its
    latest step (last run against the run before) judged as `matrix history` and `matrix
    compare` judge it; past MAX_ROWS series (each one draws a sparkline), those whose latest
    step changed most."""
    runs = history.sort_values("started")["run_id"].drop_duplicates().tolist()
    table = Table(
        [
            "Environment",
            "Model",
            "Format",
            "Cache",
            "Over runs",
            "Runs",
            "First",
            "Last",
            "Last step",
            "Detectable",
            "Verdict",
        ],
        numeric=frozenset({5, 6, 7, 8, 9}),
    )
    keys = ["env_id", "model", "format", "cache_mode"]
    steps = {tuple(row[:4]): row[4:] for row in latest_changes(history).itertuples(index=False)}
    series = []
    columns = [*keys, "run_id", "started", "load_median", "n"]
    for key, rows in sorted(
        grouped(history[columns], keys).items(), key=lambda item: tuple(map(natural_key, item[0]))
    ):
        by_run = {r.run_id: r for r in rows}
        points = [
            (
                by_run[run].load_median,
                f"{run} ({by_run[run].started}): "
                f"{seconds(by_run[run].load_median)}, n={by_run[run].n}",
            )
            if run in by_run and not missing(by_run[run].load_median)
            else (None, "")
            for run in runs
        ]
        values = [v for v, _ in points if v is not None]
        change, p_value, detectable, verdict, note = steps[key]
        series.append((key, points, values, change, p_value, detectable, verdict, note))
    if len(series) > MAX_ROWS:
        table.note = left_out_note(
            len(series) - MAX_ROWS,
            "series",
            "whose last step changed most",
            "<code>matrix history</code> lists every series.",
        )
        series = sorted(series, key=lambda s: 0.0 if missing(s[3]) else -abs(s[3]))
        series = series[:MAX_ROWS]
    for key, points, values, change, p_value, detectable, verdict, note in series:
        table.add(
            [
                *(text_cell(k) for k in key),
                Cell(
                    sparkline(points, f"load time of {' '.join(map(str, key))} over runs"),
                    sort=float(len(values)),
                ),
                num_cell(len(values), str),
                num_cell(values[0] if values else None),
                num_cell(values[-1] if values else None),
                num_cell(
                    change,
                    percent,
                    _verdict(verdict),
                    "" if missing(p_value) else f"Welch p = {p_value:.3g}",
                ),
                num_cell(detectable, lambda d: f"±{d:.0%}"),
                text_cell(verdict, _verdict(verdict), "" if missing(note) else str(note)),
            ]
        )
    return table
