"""The HTML report: one self-contained file a user can open offline, mail, or print.

Everything is inlined (styles, scripts, SVG charts, the JSON the environment selector needs):
results are often read on a machine without network access, from a CI artifact, and a report
that fetches anything would leak which runs were looked at and break on the next CDN change.
Every user- or model-supplied string reaches the page through jinja2 autoescaping, escaped SVG
or escaped JSON; nothing is ever inserted as markup.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from harness.catalog import CACHE_MODES, FORMATS
from matrix.errors import ConfigError
from matrix.plan.inputs import output_folder
from matrix.report import figures, tables
from matrix.report.pairs import embed_json, pair_payload
from matrix.report.text import Table
from matrix.results.dataset import (
    ARTIFACT,
    CELL,
    ENVIRONMENT,
    GUEST_CACHE_GB_S,
    GUEST_NOTE,
    Dataset,
    cell_stats,
    measured,
)

SECTIONS = [
    ("headline", "Fastest format"),
    ("heatmap", "Heat map"),
    ("bars", "Cold vs warm"),
    ("ladder", "Size ladder"),
    ("tables", "Size & load tables"),
    ("article", "Article's table"),
    ("runtime", "Import, inference, memory"),
    ("parity", "Parity"),
    ("environments", "Environments"),
    ("problems", "Problems"),
    ("noise", "Noise"),
    ("pairs", "Environment vs environment"),
    ("history", "History"),
]


def _env_labels(frames: list[pd.DataFrame]) -> dict[tuple[str, str], str]:
    """A readable name per (run, environment): the env id, plus the run where one env id
    appears in several merged runs (two nights of the same image are different columns)."""
    pairs = sorted(
        {
            (str(r), str(e))
            for f in frames
            if {"run_id", "env_id"} <= set(f.columns)
            for r, e in f[["run_id", "env_id"]].drop_duplicates().itertuples(index=False)
        }
    )
    runs_of: dict[str, int] = {}
    for _, env in pairs:
        runs_of[env] = runs_of.get(env, 0) + 1
    return {(run, env): env if runs_of[env] == 1 else f"{env} · {run}" for run, env in pairs}


def _with_env(frame: pd.DataFrame, labels: dict[tuple[str, str], str]) -> pd.DataFrame:
    """A copy of `frame` with the `env` label column every section groups by.

    It is categorical in `labels` order (by run, then env id), so every grouping and sort lists
    environments in the same order. Labels are looked up once per (run, env), as `frame` may
    be the 10^5 trials of a sweep.
    """
    position = {key: i for i, key in enumerate(labels)}
    envs = frame.groupby(ENVIRONMENT, sort=False, dropna=False)
    codes = np.array([position.get((str(r), str(e)), -1) for r, e in envs.size().index], int)
    return frame.assign(
        env=pd.Categorical.from_codes(
            codes[envs.ngroup().to_numpy()], categories=list(labels.values())
        )
    )


def _with_artifact_columns(stats: pd.DataFrame, artifacts: pd.DataFrame) -> pd.DataFrame:
    """Stats plus the artifact covariate `cell_stats` leaves out (largest file, #13)."""
    ok = artifacts[artifacts["status"].eq("ok")]
    extra = ok[[*ARTIFACT, "largest_file_bytes"]].drop_duplicates(ARTIFACT, keep="last")
    return stats.merge(extra, on=ARTIFACT, how="left")


def _ordered(stats: pd.DataFrame) -> pd.DataFrame:
    """Models by size (the ladder reads top to bottom), environments by run then id, formats
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


def _reported(environments: pd.DataFrame) -> pd.DataFrame:
    """Environments that wrote an `environment` record (a skipped or unbuilt one has no
    metadata to show; the problems table says why)."""
    return environments[environments["python"].notna()]


def _reused_stats(ds: Dataset, labels: dict[tuple[str, str], str]) -> pd.DataFrame:
    """The cells of the reused-process method (the seed article's), when the runs have any."""
    if not ds.trials["process"].eq("reused").any():
        return pd.DataFrame(columns=[*CELL, "env", "n", "load_mean", "params"])
    return _ordered(_with_env(cell_stats(ds, process="reused"), labels))


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
    return _ordered(rows.drop_duplicates(["env", "model", "format"], keep="first"))


def _guest_warnings(stats: pd.DataFrame) -> list[str]:
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


def _context(
    ds: Dataset,
    stats: pd.DataFrame,
    problems: pd.DataFrame,
    title: str,
    history: pd.DataFrame | None,
) -> dict[str, Any]:
    labels = _env_labels([stats, problems, ds.trials, ds.environments])
    stats = _ordered(_with_env(_with_artifact_columns(stats, ds.artifacts), labels))
    problems = _with_env(problems, labels)
    environments = _reported(_with_env(ds.environments, labels))
    present = set(stats["format"].unique())
    formats = [f for f in FORMATS if f in present]
    formats += sorted(present - set(formats))
    mode = figures.coldest_mode(stats)
    modes = [m for m in CACHE_MODES if m in set(stats["cache_mode"].unique())]
    headline, wins = tables.headline(stats, modes)
    trials = measured(ds.trials[[*CELL, "status", "phase", "process", "eviction", "load_s"]])
    pairs = pair_payload(
        _with_env(trials, labels),
        stats,
        problems,
        _with_env(ds.environments, labels),
        list(labels.values()),
    )
    bar_groups, pooled = figures.bar_groups(stats, formats)
    reused = _reused_stats(ds, labels)
    return {
        "title": title,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": ds.run_ids,
        "sections": SECTIONS if history is not None else SECTIONS[:-1],
        "counts": {
            "environments": len(labels),
            "models": len({*stats["model"].unique(), *problems["model"].dropna()}),
            "formats": len({*present, *problems["format"].dropna()}),
            "cells": int(stats["load_median"].notna().sum()),
            "problems": len(problems),
        },
        "headline": headline,
        "wins": wins,
        "mode": mode,
        "heat_maps": figures.heat_maps(stats, problems, formats, mode),
        "bar_groups": bar_groups,
        "pooled": pooled,
        "ladder": figures.ladder(stats, formats, mode),
        "sizes": tables.sizes(stats, formats),
        "artifacts": tables.artifacts(stats),
        "load_times": tables.load_times(stats, formats),
        "runtime": tables.runtime(stats),
        "article": tables.article(_article_rows(stats, reused)),
        "reused": tables.reused(reused) if len(reused) else None,
        "guest_warnings": _guest_warnings(stats),
        "parity": tables.parity(stats, formats),
        "environments": tables.environments(environments),
        "problems": tables.problem_rows(problems, ds.problems),
        "noise": tables.noise(stats),
        "pairs_json": embed_json(pairs),
        "pairs_table": Table(
            ["Model", "Format", "Cache", "A", "B", "Change", "p", "Note"],
            numeric=frozenset({3, 4, 5, 6}),
        ),
        "scipy": pairs["p"] is not None,
        "history": None if history is None else figures.history_table(history),
    }


@functools.cache
def _template() -> jinja2.Template:
    """The page template, compiled once per process (compiling it is a tenth of a second)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("matrix.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2")


def write_report(
    ds: Dataset,
    stats: pd.DataFrame,
    problems: pd.DataFrame,
    out_dir: Path,
    title: str,
    history: pd.DataFrame | None = None,
) -> Path:
    """Render the report of `ds` to `<out_dir>/index.html` and return that path."""
    html = _template().render(**_context(ds, stats, problems, title, history))
    path = output_folder("the report folder", out_dir) / "index.html"
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the report: {exc.strerror}") from None
    return path
