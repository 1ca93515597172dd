"""The HTML report: one self-contained file a user can open offline, mail, or print.

Everything is inlined (styles, scripts, SVG charts, the JSON the interactive views need): results
are often read offline, from a CI artifact, and a report that fetches anything would leak which
runs were looked at. Every user- or model-supplied string reaches the page through jinja2
autoescaping, escaped SVG or escaped JSON; nothing is ever inserted as markup.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from harness.catalog import CACHE_MODES, FORMATS
from matrix.errors import ConfigError
from matrix.execute.sweep import FAILED as FAILED_OUTCOMES
from matrix.plan.inputs import output_folder
from matrix.report import axes, changes, compat_grid, figures, sections
from matrix.report.order import natural_key
from matrix.report.sections import ReportFrames, Section
from matrix.results.dataset import ARTIFACT, CELL, ENVIRONMENT, Dataset, cell_stats

# The page, top to bottom; a builder returning None leaves its section (and nav entry) out.
SECTION_BUILDERS: list[Callable[[ReportFrames], Section | None]] = [
    changes.section,
    sections.headline,
    axes.section,
    sections.heatmap,
    sections.bars,
    sections.ladder,
    sections.size_tables,
    sections.article,
    sections.runtime,
    sections.parity,
    compat_grid.section,
    sections.environments,
    sections.problems,
    sections.noise,
    sections.pairs,
    sections.history,
]


def env_labels(frames: list[pd.DataFrame]) -> dict[tuple[str, str], str]:
    """A readable name per (run, environment), in natural order (tf2.9 before tf2.10): the env
    id, plus the run where one env id appears in several merged runs (two nights of the same
    image are different columns, side by side)."""
    pairs = sorted(
        {
            (str(r), str(e))
            for f in frames
            if {"run_id", "env_id"} <= set(f.columns)
            for r, e in f[["run_id", "env_id"]].drop_duplicates().itertuples(index=False)
        },
        key=lambda pair: (natural_key(pair[1]), pair[0]),
    )
    runs_of: dict[str, int] = {}
    for _, env in pairs:
        runs_of[env] = runs_of.get(env, 0) + 1
    return {(run, env): env if runs_of[env] == 1 else f"{env} · {run}" for run, env in pairs}


def _with_env(frame: pd.DataFrame, labels: dict[tuple[str, str], str]) -> pd.DataFrame:
    """A copy of `frame` with the `env` label column every section groups by.

    It is categorical in `labels` order, so every grouping and sort lists environments alike.
    Labels are looked up once per (run, env): `frame` may be the 10^5 trials of a sweep.
    """
    position = {key: i for i, key in enumerate(labels)}
    envs = frame.groupby(ENVIRONMENT, sort=False, dropna=False)
    codes = np.array([position.get((str(r), str(e)), -1) for r, e in envs.size().index], int)
    return frame.assign(
        env=pd.Categorical.from_codes(
            codes[envs.ngroup().to_numpy()], categories=list(labels.values())
        )
    )


def _with_largest_file(stats: pd.DataFrame, artifacts: pd.DataFrame) -> pd.DataFrame:
    """Stats plus the artifact covariate `cell_stats` leaves out: the largest file's size."""
    ok = artifacts[artifacts["status"].eq("ok")]
    extra = ok[[*ARTIFACT, "largest_file_bytes"]].drop_duplicates(ARTIFACT, keep="last")
    return stats.merge(extra, on=ARTIFACT, how="left")


def report_frames(
    ds: Dataset, stats: pd.DataFrame, problems: pd.DataFrame, history: pd.DataFrame | None
) -> ReportFrames:
    """The runs' tables labelled and ordered once, for every section."""
    labels = env_labels([stats, problems, ds.trials, ds.environments])
    stats = sections.ordered(_with_env(_with_largest_file(stats, ds.artifacts), labels))
    present = set(stats["format"].unique())
    formats = [f for f in FORMATS if f in present] + sorted(present - set(FORMATS))
    reused = pd.DataFrame(columns=[*CELL, "env", "n", "load_mean", "params"])
    if ds.trials["process"].eq("reused").any():
        reused = sections.ordered(_with_env(cell_stats(ds, process="reused"), labels))
    return ReportFrames(
        ds=ds,
        stats=stats,
        problems=_with_env(problems, labels),
        environments=_with_env(ds.environments, labels).sort_values("env", kind="stable"),
        trials=_with_env(ds.trials, labels),
        reused=reused,
        labels=list(labels.values()),
        formats=formats,
        modes=[m for m in CACHE_MODES if m in set(stats["cache_mode"].unique())],
        mode=figures.coldest_mode(stats),
        history=history,
    )


def counts(f: ReportFrames) -> dict[str, Any]:
    """The header's honest counts: environments that ran, were skipped (grouped by reason) or
    failed, and cells measured or without a result (by status)."""
    envs = f.environments
    outcome = envs["outcome"]
    env_failures = f.problems[f.problems["status"].eq("failed-environment")]
    failed = outcome.isin(FAILED_OUTCOMES) | envs["env"].isin(set(env_failures["env"]))
    skipped = envs[outcome.eq("skipped")]
    interrupted = outcome.eq("interrupted") & ~failed
    ran = envs["python"].notna() & ~failed & ~interrupted & ~outcome.eq("skipped")
    reasons = skipped.groupby("outcome_reason", sort=False, dropna=False)["env"].agg(list)
    cells = f.problems[f.problems["model"].notna()]
    return {
        "ran": int(ran.sum()),
        "skipped": len(skipped),
        "skip_reasons": [(str(reason), ids) for reason, ids in reasons.items()],
        "failed": int(failed.sum()),
        "interrupted": int(interrupted.sum()),
        "models": len({*f.stats["model"].unique(), *cells["model"].dropna()}),
        "formats": len({*f.stats["format"].unique(), *cells["format"].dropna()}),
        "cells": int(f.stats["load_median"].notna().sum()),
        "unmeasured": cells["status"].value_counts().to_dict(),
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


def render(f: ReportFrames, title: str) -> str:
    """The page of `f`: every section that has something to show, in SECTION_BUILDERS order."""
    built = [build(f) for build in SECTION_BUILDERS]
    return _template().render(
        title=title,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        runs=f.ds.run_ids,
        counts=counts(f),
        sections=[s for s in built if s is not None],
    )


def write_report(
    ds: Dataset,
    stats: pd.DataFrame,
    problems: pd.DataFrame,
    out_dir: Path,
    title: str,
    history: pd.DataFrame | None = None,
) -> Path:
    """Render the report of `ds` to `<out_dir>/index.html` and return that path."""
    html = render(report_frames(ds, stats, problems, history), title)
    path = output_folder("the report folder", out_dir) / "index.html"
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the report: {exc.strerror}") from None
    return path
