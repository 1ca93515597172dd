"""The end-of-run table: one row per measured cell, plus a row for every cell that failed.

The numbers come from `matrix.dataset` (the same medians the report and `matrix compare` show);
this module only lays them out for a terminal. Cells that produced nothing still get a row with
their reason, so a format that is unsupported is visible instead of silently missing, and a
measured cell that also had failed trials says so in its status.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich import box
from rich.markup import escape
from rich.table import Table

from matrix.dataset import CELL, Dataset, cell_problems, cell_stats
from matrix.records import short_reason

_NONE = "—"
_FAILED = ("error", "failed-environment")  # shown in red; the rest of the problems in yellow


def summarize(ds: Dataset) -> pd.DataFrame:
    """One row per cell and process, sorted by model then median load time (failed cells last).

    The reused-process method gets rows of its own: its loads are a different measurement.
    It takes the dataset the HTML report is built from, so the records are tabled once.
    """
    loaded_by = set(ds.trials["process"].dropna()) if "process" in ds.trials else set()
    parts = [cell_stats(ds, process=p).assign(process=p) for p in ("fresh", "reused")
             if p == "fresh" or p in loaded_by]  # a table costs ~0.1 s: only the ones needed
    rows = pd.concat([part for part in parts if len(part)] or parts[:1], ignore_index=True)
    rows["artifact_mb"] = rows["bytes"] / 1e6
    problems = cell_problems(ds)
    noted = problems.merge(rows.loc[rows["process"] == "fresh", CELL], on=CELL, how="left",
                           indicator=True)["_merge"].eq("both").to_numpy()
    on_rows = problems[noted].assign(
        note=lambda p: p["trials"].astype(str) + " " + p["status"] + ": "
        + p["reason"].map(short_reason)
    )
    rows = rows.merge(on_rows[[*CELL, "note"]].assign(process="fresh"), on=[*CELL, "process"],
                      how="left")
    rows["status"] = "ok"
    alone = problems[~noted].assign(note=lambda p: p["reason"].map(short_reason), n=0,
                                    process=_NONE)
    rows = pd.concat([rows, alone], ignore_index=True) if len(alone) else rows
    rows = rows.fillna({c: _NONE for c in CELL}).fillna({"note": ""})
    return rows.sort_values(
        ["model", "load_median", "format", "cache_mode"], na_position="last", kind="stable"
    ).reset_index(drop=True)


def render(summary: pd.DataFrame) -> Table:
    """The summary as a compact rich table; env and process columns appear only when they vary.

    Times are shown in milliseconds: loads range from ~1 ms (TFLite) to seconds, and one decimal
    of a millisecond reads better than three significant digits of a second.
    """
    table = Table(
        title="Load time per cell: medians in ms over n ok measured trials",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    varying = [c for c in ("env_id", "process") if summary[c].replace(_NONE, None).nunique() > 1]
    columns = [
        ("model", "model", str),
        ("format", "format", str),
        ("cache_mode", "cache", str),
        *[(c, c.replace("_id", ""), str) for c in varying],
        ("n", "n", _count),
        ("load_median", "load", ms),
        ("load_iqr", "IQR", ms),
        ("import_median", "import", ms),
        ("first_inference_median", "1st inf", ms),
        ("parity_max", "parity", _parity),
        ("artifact_mb", "MB", _megabytes),
    ]
    for key, header, _ in columns:
        text = key in ("model", "format", "cache_mode", *varying)
        table.add_column(header, justify="left" if text else "right", no_wrap=True)
    table.add_column("status", overflow="fold", min_width=7)  # ~100 columns fit it all
    for row in summary.to_dict("records"):
        status = str(row["status"])
        style = "green" if status == "ok" else "red" if status in _FAILED else "yellow"
        note = f" {escape(row['note'])}" if row.get("note") else ""
        table.add_row(
            *[escape(fmt(row.get(key))) for key, _, fmt in columns],
            f"[{style}]{escape(status)}[/]{note}",
        )
    return table


def _missing(value: Any) -> bool:
    return value is None or value != value  # NaN is the only value unequal to itself


def _count(value: Any) -> str:
    return "" if _missing(value) else str(int(value))


def ms(seconds: Any) -> str:
    """Seconds as milliseconds with one decimal (blank when not measured), for terminal tables."""
    return "" if _missing(seconds) else f"{seconds * 1000:.1f}"


def _parity(value: Any) -> str:
    if _missing(value):
        return ""
    return f"{value:.0e}" if value else "0"  # an exact match is the common case for float formats


def _megabytes(value: Any) -> str:
    return "" if _missing(value) else f"{value:.1f}"
