"""The report's sections: each one a builder that picks its data and names its template block.

A section owns what it shows: its builder reads the shared, already labelled frames
(`ReportFrames`) and returns a `Section` whose `data` only its own template
(`templates/sections/<id>.html.j2`) reads, or None when the runs give it nothing to show.
The page lists them in the order of `matrix.report.html.SECTION_BUILDERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.catalog import CACHE_MODES, FORMATS
from matrix.report import figures, tables
from matrix.report.pairs import embed_json, pair_payload
from matrix.report.text import Table, count
from matrix.results.dataset import (
    CELL,
    GUEST_CACHE_GB_S,
    GUEST_NOTE,
    Dataset,
    measured,
)


@dataclass(frozen=True)
class ReportFrames:
    """What every section reads: the runs' tables with the `env` label column, in page order.

    `stats` has one row per measured cell (models by size, environments in natural order,
    formats and cache modes in catalog order); `environments` one per (run, environment),
    skipped ones too; `reused` the cells of the reused-process method (maybe empty); `mode`
    the coldest cache mode measured.
    """

    ds: Dataset
    stats: pd.DataFrame
    problems: pd.DataFrame
    environments: pd.DataFrame
    trials: pd.DataFrame
    reused: pd.DataFrame
    labels: list[str]
    formats: list[str]
    modes: list[str]
    mode: str
    history: pd.DataFrame | None = None
    _made: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def shared(self, name: str, make: Callable[[], Any]) -> Any:
        """A table several sections derive alike (the axis views' points, say), made once."""
        if name not in self._made:
            self._made[name] = make()
        return self._made[name]

    @property
    def reported(self) -> pd.DataFrame:
        """The environments that wrote an `environment` record (a skipped or unbuilt one has
        no metadata to show; the problems table says why)."""
        return self.environments[self.environments["python"].notna()]

    @property
    def models(self) -> list[str]:
        """Models in page order (by size)."""
        return list(dict.fromkeys(self.stats["model"].astype(str)))


@dataclass(frozen=True)
class Section:
    """One section of the page: its anchor, its name in the navigation, and its data."""

    id: str
    title: str
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def template(self) -> str:
        return f"sections/{self.id}.html.j2"


def ordered(stats: pd.DataFrame) -> pd.DataFrame:
    """Models by size (the ladder reads top to bottom), environments in label order, formats
    and cache modes in catalog order: every chart and table then lists them alike."""
    sizes = stats.groupby("model")["params"].max()
    order = {
        "_size": stats["model"].map(sizes).fillna(float("inf")),
        "_fmt": stats["format"].map({f: i for i, f in enumerate(FORMATS)}).fillna(99),
    }
    return (
        stats.assign(**order)
        .sort_values(["_size", "model", "env", "_fmt", "cache_mode"])
        .drop(columns=list(order))
    )


def guest_warnings(stats: pd.DataFrame) -> list[str]:
    """Per environment on a VM, the warning that its cold loads are cold only inside the guest:
    an I/O floor above GUEST_CACHE_GB_S means the host's own cache served the "evicted" bytes."""
    guest = stats[stats["guest_cold_only"].eq(True)]
    by_env = guest.groupby(["env", "hypervisor"], observed=True, sort=False)["io_floor_gb_s"]
    return [
        f"{GUEST_NOTE.capitalize()} in {env} (a {hypervisor} virtual machine): {count} "
        f"cold cell(s) whose artifact's I/O floor implies more than {GUEST_CACHE_GB_S:g} GB/s "
        f"(up to {fastest:.1f} GB/s), faster than a disk: the host probably served the "
        "evicted bytes from its own cache, so these loads were cold only inside the guest."
        for (env, hypervisor), count, fastest in zip(
            by_env.size().index, by_env.size(), by_env.max()
        )
    ]


def headline(f: ReportFrames) -> Section:
    table, wins = tables.headline(f.stats, f.modes)
    return Section(
        "headline",
        "Fastest format",
        {"table": table, "wins": wins, "warnings": guest_warnings(f.stats)},
    )


def heatmap(f: ReportFrames) -> Section:
    return Section(
        "heatmap",
        "Heat map",
        {"mode": f.mode, "figures": figures.heat_maps(f.stats, f.problems, f.formats, f.mode)},
    )


def bars(f: ReportFrames) -> Section:
    groups, pooled = figures.bar_groups(f.stats, f.formats)
    title = "Cold vs warm" if len(f.modes) > 1 else "Load per format"
    return Section("bars", title, {"groups": groups, "pooled": pooled, "modes": f.modes})


def ladder(f: ReportFrames) -> Section:
    """Load against parameter count; a run of one model size says so in one line instead."""
    drawn = figures.ladder(f.stats, f.formats, f.mode)
    sizes = f.stats.dropna(subset=["params"]).drop_duplicates("model")
    why = (
        "No parameter counts recorded."
        if sizes.empty
        else "One model size per environment ("
        + ", ".join(f"{m}: {count(p)} parameters" for m, p in zip(sizes["model"], sizes["params"]))
        + "): a line against parameter count needs at least two."
    )
    return Section("ladder", "Size ladder", {"ladder": drawn, "why": why})


def size_tables(f: ReportFrames) -> Section:
    return Section(
        "tables",
        "Size & load tables",
        {
            "sizes": tables.sizes(f.stats, f.formats),
            "load_times": tables.load_times(f.stats, f.formats),
            "artifacts": tables.artifacts(f.stats),
            "warnings": guest_warnings(f.stats),
        },
    )


_WARMEST_FIRST = {mode: i for i, mode in enumerate(reversed(CACHE_MODES))}


def _article_rows(fresh: pd.DataFrame, reused: pd.DataFrame) -> pd.DataFrame:
    """One row per artifact with the load time the seed article's table would show: its method
    (the mean of repeated loads in one process) where measured, else the median of fresh
    processes in the warmest cache mode measured (the article's files were warm), labelled."""
    mine = reused.dropna(subset=["load_mean"]).assign(
        load=lambda r: r["load_mean"],
        how=lambda r: "mean of " + r["n"].astype(int).astype(str) + " loads in one process",
    )
    rest = fresh.dropna(subset=["load_median"])
    rest = (
        rest.assign(_warm=rest["cache_mode"].map(_WARMEST_FIRST))
        .sort_values("_warm", kind="stable")
        .drop_duplicates(["env", "model", "format"])
        .sort_index()
    )
    rest = rest.assign(
        load=rest["load_median"],
        how="median of "
        + rest["n"].astype(int).astype(str)
        + " fresh processes, "
        + rest["cache_mode"].astype(str),
    )
    if mine.empty:
        return rest  # `fresh` came ordered
    rows = pd.concat([mine, rest], ignore_index=True)
    return ordered(rows.drop_duplicates(["env", "model", "format"], keep="first"))


def article(f: ReportFrames) -> Section:
    return Section(
        "article",
        "Article's table",
        {
            "table": tables.article(_article_rows(f.stats, f.reused)),
            "reused": tables.reused(f.reused) if len(f.reused) else None,
        },
    )


def runtime(f: ReportFrames) -> Section:
    return Section("runtime", "Import, inference, memory", {"table": tables.runtime(f.stats)})


def parity(f: ReportFrames) -> Section:
    return Section("parity", "Parity", {"table": tables.parity(f.stats, f.formats)})


def environments(f: ReportFrames) -> Section:
    return Section("environments", "Environments", {"table": tables.environments(f.reported)})


def problems(f: ReportFrames) -> Section:
    return Section(
        "problems", "Problems", {"table": tables.problem_rows(f.problems, f.ds.problems)}
    )


def noise(f: ReportFrames) -> Section:
    return Section("noise", "Noise", {"table": tables.noise(f.stats)})


def pairs(f: ReportFrames) -> Section:
    """The environment-against-environment view; with one environment, one line says so."""
    trials = measured(f.trials[[*CELL, "env", "status", "phase", "process", "eviction", "load_s"]])
    payload = pair_payload(trials, f.stats, f.problems, f.environments, f.labels)
    return Section(
        "pairs",
        "Environment vs environment",
        {
            "single": len(payload["envs"]) < 2,
            "json": embed_json(payload),
            "table": Table(
                ["Model", "Format", "Cache", "A", "B", "Change", "p", "Note"],
                numeric=frozenset({3, 4, 5, 6}),
            ),
            "scipy": payload["p"] is not None,
        },
    )


def history(f: ReportFrames) -> Section | None:
    """Each series over the runs kept; with a single run, one line says there is none yet."""
    if f.history is None:
        return None
    several = f.history["run_id"].nunique() > 1
    return Section(
        "history", "History", {"table": figures.history_table(f.history) if several else None}
    )
