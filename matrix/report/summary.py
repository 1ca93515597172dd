"""The end-of-run table: one row per measured cell, plus a row for every cell that failed.

The numbers come from `matrix.results.dataset` (the same medians the report and `matrix compare`
show);
this module only lays them out for a terminal. Cells that produced nothing still get a row with
their reason, so a format that is unsupported is visible instead of silently missing, and a
measured cell that also had failed trials says so in its status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
from rich import box
from rich.markup import escape
from rich.table import Table

from matrix.report.order import natural_rank
from matrix.report.text import median_precision, missing, ms, tenths, whole
from matrix.results.dataset import (
    CELL,
    ENVIRONMENT,
    GUEST_NOTE,
    Dataset,
    cell_problems,
    cell_stats,
)
from matrix.results.reader import short_reason

_NONE = "—"
_FAILED = ("error", "failed-environment")  # shown in red; the rest of the problems in yellow
_REUSED = "reused*"  # the process column's label of the article's method, explained below the table
_ARTICLE = (
    "* reused: the seed article's method — one load after another in one Python process "
    "(GC enabled, no collection between loads); its load is the mean of those loads."
)
_PRECISION = (
    "±95% = the median load's distribution-free 95 % interval, as a share of it (none under 6 "
    "loads); max: --repeats auto stopped the cell at its maximum before reaching its target."
)
_FIGURES = (
    "1st pred = load + first inference (ranked by it, per model); cold = import + "
    "device init + load + first inference of a new process; load = the load call "
    "alone; steady = median of later calls."
)


def summarize(ds: Dataset) -> pd.DataFrame:
    """One row per cell and process, sorted by model, environment (in version order) and
    median time to first prediction (load + first inference: work a format defers past its
    load still counts), failed cells last.

    The reused-process method gets rows of its own: its loads are a different measurement.
    It takes the dataset the HTML report is built from, so the records are tabled once.
    """
    loaded_by = set(ds.trials["process"].dropna()) if "process" in ds.trials else set()
    parts = [cell_stats(ds)]  # each cell's one-load process: fresh or forked, never mixed
    if "reused" in loaded_by:  # a table costs ~0.1 s: only the ones needed
        parts.append(cell_stats(ds, process="reused").assign(process="reused"))
    rows = pd.concat([part for part in parts if len(part)] or parts[:1], ignore_index=True)
    rows["artifact_mb"] = rows["bytes"] / 1e6
    checks = ds.environments[[*ENVIRONMENT, "fork_check"]].drop_duplicates(ENVIRONMENT)
    rows = rows.merge(checks, on=ENVIRONMENT, how="left")
    one_load = rows["process"].ne("reused")
    problems = cell_problems(ds)
    noted = (
        problems.merge(rows.loc[one_load, CELL], on=CELL, how="left", indicator=True)["_merge"]
        .eq("both")
        .to_numpy()
    )
    on_rows = problems[noted].assign(
        note=lambda p: (
            p["trials"].astype(str) + " " + p["status"] + ": " + p["reason"].map(short_reason)
        )
    )
    rows = rows.merge(on_rows[[*CELL, "note"]], on=CELL, how="left")
    rows.loc[~one_load.to_numpy(), "note"] = None
    guest = rows["guest_cold_only"].eq(True)  # the caption says why (`_guest_lines`)
    rows.loc[guest, "note"] = [
        f"{'' if missing(note) else note} {GUEST_NOTE}".strip() for note in rows.loc[guest, "note"]
    ]
    rows["status"] = "ok"
    alone = problems[~noted].assign(
        note=lambda p: p["reason"].map(short_reason), n=0, process=_NONE
    )
    rows = pd.concat([rows, alone], ignore_index=True) if len(alone) else rows
    rows = rows.fillna({c: _NONE for c in CELL}).fillna({"note": ""})
    return rows.sort_values(
        ["model", "env_id", "first_prediction_median", "load_median", "format", "cache_mode"],
        key=lambda column: natural_rank(column) if column.name == "env_id" else column,
        na_position="last",
        kind="stable",
    ).reset_index(drop=True)


def summary_table(summary: pd.DataFrame) -> Table:
    """The summary as a compact rich table; env and process columns appear only when they vary
    (process also whenever a cell is not of fresh processes: forked, or the article's method).

    Times are shown in milliseconds: loads range from ~1 ms (TFLite) to seconds, and one decimal
    of a millisecond reads better than three significant digits of a second.
    """
    reused = summary["process"].eq("reused")
    table = Table(
        title="Time to first prediction per cell: medians in ms over n ok measured trials",
        title_justify="left",
        caption="\n".join(
            [
                _FIGURES,
                _PRECISION,
                *_fork_checks(summary),
                *_calls(summary),
                *([_ARTICLE] if reused.any() else []),
                *_guest_lines(summary),
            ]
        ),
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=0,  # the box's blank rule is the one space between columns: ~100 columns fit
    )
    varying = [
        c
        for c in ("env_id", "process")
        if summary[c].replace(_NONE, None).nunique() > 1
        or (c == "process" and summary[c].isin(["reused", "forked"]).any())
    ]
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("model", _text("model")),
        ("format", _text("format")),
        ("cache", _text("cache_mode")),
        *[(c.replace("_id", ""), _text(c)) for c in varying],
        ("n", lambda r: whole(r.get("n"))),
        ("±95%", _precision),
        ("1st pred", lambda r: ms(r.get("first_prediction_median"))),
        ("IQR", lambda r: ms(r.get("first_prediction_iqr"))),
        ("cold", lambda r: ms(r.get("cold_start_median"))),
        (
            "load",
            lambda r: ms(r.get("load_mean" if r.get("process") == "reused" else "load_median")),
        ),
        ("steady", lambda r: ms(r.get("inference_median"))),
        ("parity", _parity),
        ("MB", lambda r: tenths(r.get("artifact_mb"))),
    ]
    texts = {"model", "format", "cache", "parity", *(c.replace("_id", "") for c in varying)}
    for header, _ in columns:
        table.add_column(header, justify="left" if header in texts else "right", no_wrap=True)
    table.add_column("status", overflow="fold", min_width=7)
    for row in summary.to_dict("records"):
        status = str(row["status"])
        style = "green" if status == "ok" else "red" if status in _FAILED else "yellow"
        note = f" {escape(row['note'])}" if row.get("note") else ""
        table.add_row(*[cell(row) for _, cell in columns], f"[{style}]{escape(status)}[/]{note}")
    return table


def _text(key: str) -> Callable[[dict[str, Any]], str]:
    """A text column's cell, escaped (names come from users' models and matrices)."""

    def cell(row: dict[str, Any]) -> str:
        value = row.get(key)
        return escape(_REUSED if key == "process" and value == "reused" else str(value))

    return cell


def _calls(summary: pd.DataFrame) -> list[str]:
    """How each format's steady inference was called (`inference_call`), as one caption line:
    a call style is the format's and the runtime's, not the cell's, so a column would repeat."""
    calls = summary[["format", "inference_call"]].dropna().drop_duplicates()
    if calls.empty:
        return []
    per_format = calls.groupby("format", sort=True)["inference_call"].agg(
        lambda c: " / ".join(sorted(map(str, c)))
    )
    return [escape("steady calls: " + "; ".join(f"{f}: {c}" for f, c in per_format.items()))]


def _guest_lines(summary: pd.DataFrame) -> list[str]:
    """Per VM whose I/O floors read faster than a disk, why its cold cells are noted."""
    guest = summary[summary["guest_cold_only"].eq(True)]
    fastest = guest.groupby(["env_id", "hypervisor"])["io_floor_gb_s"].max()
    return [
        escape(
            f"{GUEST_NOTE}: {env} runs on {hypervisor} and read artifacts at an I/O "
            f"floor of up to {rate:.1f} GB/s, faster than a disk: the host's cache "
            "probably served its evicted bytes."
        )
        for (env, hypervisor), rate in fastest.items()
    ]


def _precision(row: dict[str, Any]) -> str:
    """`median_precision`, its `max` in yellow."""
    text = median_precision(row.get("load_precision"), row.get("precision_reached"))
    return text.replace(" max", " [yellow]max[/]")


def _fork_checks(summary: pd.DataFrame) -> list[str]:
    """Per environment with forked trials, what their fresh-process controls said."""
    checks = summary[["env_id", "fork_check"]].dropna().drop_duplicates()
    return [
        escape(f"{env}: forked trials checked against fresh ones: {verdict}")
        + (" (its trials are fresh from then on)" if verdict in ("disagree", "hung") else "")
        for env, verdict in checks.itertuples(index=False)
    ]


def _parity(row: dict[str, Any]) -> str:
    """Parity as its status, never as a bare number: a failure in red with its relative error,
    `not informative` in yellow (the reference did not vary, so nothing was checked), a run
    before schema 2 `not checked`, and only `pass` in green."""
    status = row.get("parity_status")
    if missing(status):
        return "" if missing(row.get("n")) or not row.get("n") else "not checked"
    if status == "fail":
        err = row.get("parity_rel_err_max")
        return "[red]fail" + ("" if missing(err) else f" {err:.1e}") + "[/]"
    if status == "not-informative":
        return "[yellow]not informative[/]"
    return f"[green]{escape(str(status))}[/]"
