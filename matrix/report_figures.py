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
from matrix.report_charts import (
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
from matrix.report_text import (
    Cell,
    Table,
    count,
    grouped,
    missing,
    num_cell,
    percent,
    seconds,
    text_cell,
)
from matrix.stats import THRESHOLD


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
    measured = set(stats.dropna(subset=["load_median"])["cache_mode"])
    return next((m for m in CACHE_MODES if m in measured), CACHE_MODES[0])  # coldest first


def _tooltip(row: Any) -> str:
    """What a mark's hover says: the cell, its median and spread."""
    return (f"{row.model} · {row.format} · {row.cache_mode} · {row.env}\n"
            f"median {seconds(row.load_median)} (n={int(row.n)}), IQR {seconds(row.load_q1)}"
            f" – {seconds(row.load_q3)}, min {seconds(row.load_min)}")


def _problem_tips(problems: pd.DataFrame) -> dict[tuple, str]:
    return {(r.env, r.model, r.format, r.cache_mode): f"{r.status}: {r.reason}"
            for r in problems.itertuples(index=False)}


def heat_maps(stats: pd.DataFrame, problems: pd.DataFrame, formats: Sequence[str],
              mode: str) -> list[Figure]:
    """Per model: environments × formats, coloured by median load in `mode`."""
    tips = _problem_tips(problems)
    rows = stats[stats["cache_mode"] == mode]
    figures = []
    for (model,), group in grouped(rows, ["model"]).items():
        envs = list(dict.fromkeys(r.env for r in group))
        cells = {(r.env, r.format): Mark(None if missing(r.load_median) else r.load_median,
                                         _tooltip(r)) for r in group}
        for env in envs:
            for fmt in formats:
                if (env, fmt) not in cells and (env, model, fmt, mode) in tips:
                    cells[(env, fmt)] = Mark(None, tips[(env, model, fmt, mode)])
        figures.append(Figure(str(model), heat_map(
            envs, formats, cells, seconds, f"median {mode} load time of {model}")))
    return figures


def bar_groups(stats: pd.DataFrame, formats: Sequence[str]) -> list[FigureGroup]:
    """Per model, one panel per environment: formats × cache modes with IQR whiskers.

    All panels of a model share one axis, so environments compare by bar length alone.
    """
    modes = [m for m in CACHE_MODES if m in set(stats["cache_mode"])]
    key = legend([(m, colour(m, CACHE_COLOURS)) for m in modes])
    groups = []
    for (model,), rows in grouped(stats.dropna(subset=["load_median"]), ["model"]).items():
        high = max(max(r.load_median, 0 if missing(r.load_q3) else r.load_q3) for r in rows)
        present = [f for f in formats if f in {r.format for r in rows}]
        figures = []
        for env in dict.fromkeys(r.env for r in rows):
            bars = {(r.format, r.cache_mode): Mark(r.load_median, _tooltip(r), r.load_q1,
                                                   r.load_q3) for r in rows if r.env == env}
            figures.append(Figure(str(env), bar_chart(
                present, modes, bars, high, seconds, f"load time of {model} in {env}")))
        groups.append(FigureGroup(str(model), key, figures))
    return groups


def ladder(stats: pd.DataFrame, formats: Sequence[str], mode: str) -> FigureGroup | None:
    """Per environment: median load against parameter count, one line per format."""
    rows = stats[(stats["cache_mode"] == mode)].dropna(subset=["load_median", "params"])
    if rows.empty:
        return None
    present = [f for f in formats if f in set(rows["format"])]
    figures = []
    for (env,), panel in grouped(rows.sort_values("env", kind="stable"), ["env"]).items():
        series = {fmt: [(float(r.params), float(r.load_median),
                         f"{r.model} · {fmt}: {seconds(r.load_median)}, {count(r.params)} params")
                        for r in panel if r.format == fmt] for fmt in present}
        figures.append(Figure(str(env), scatter(
            series, count, seconds, "parameters", f"median {mode} load",
            f"load time against parameter count in {env}")))
    return FigureGroup(mode, legend([(f, colour(f, FORMAT_COLOURS)) for f in present]), figures)


def _verdict(change: float | None) -> str:
    """CSS class of a change beyond the threshold `matrix compare` uses."""
    if change is None or abs(change) <= THRESHOLD:
        return ""
    return "slower" if change > 0 else "faster"


def history_table(history: pd.DataFrame) -> Table:
    """One row per (environment, model, format, cache) series, with its trend over runs."""
    runs = history.sort_values("started")["run_id"].drop_duplicates().tolist()
    table = Table(["Environment", "Model", "Format", "Cache", "Over runs", "Runs", "First",
                   "Last", "Change"], numeric=frozenset({5, 6, 7, 8}))
    keys = ["env_id", "model", "format", "cache_mode"]
    for key, series in sorted(grouped(history, keys).items()):
        by_run = {r.run_id: r for r in series}
        points = [(by_run[run].load_median, f"{run} ({by_run[run].started}): "
                   f"{seconds(by_run[run].load_median)}, n={by_run[run].n}")
                  if run in by_run and not missing(by_run[run].load_median) else (None, "")
                  for run in runs]
        values = [v for v, _ in points if v is not None]
        change = values[-1] / values[0] - 1 if len(values) > 1 and values[0] else None
        table.add([
            *(text_cell(k) for k in key),
            Cell(sparkline(points, f"load time of {' '.join(map(str, key))} over runs"),
                 sort=float(len(values))),
            num_cell(len(values), str),
            num_cell(values[0] if values else None), num_cell(values[-1] if values else None),
            num_cell(change, percent, _verdict(change)),
        ])
    return table
