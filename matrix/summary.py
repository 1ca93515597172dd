"""The end-of-run table: one row per measured cell, plus a row for every cell that failed.

Statistics are medians and IQRs over `measure` trials with status `ok` only: warm-up trials are
excluded by design, and an `invalid` trial (a "cold" load whose eviction did not take) must never
be counted as cold. Cells that produced nothing still get a row with their reason, so a format
that is unsupported is visible instead of silently missing.

pandas is imported inside the functions: `matrix --help` should not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich import box
from rich.markup import escape
from rich.table import Table

from matrix.records import Record, short_reason

if TYPE_CHECKING:
    import pandas as pd

# env_id and process split rows only when a run has several of them (columns shown as needed).
CELL = ["env_id", "model", "format", "cache_mode", "process"]
_TRIAL_FIELDS = [
    *CELL,
    "phase",
    "status",
    "reason",
    "load_s",
    "import_s",
    "first_inference_s",
    "parity_max_abs_diff",
]
_SEVERITY = {"error": 0, "invalid": 1, "unsupported": 2}  # the worst status names a failed cell
_NONE = "—"


def summarize(records: list[Record]) -> pd.DataFrame:
    """One row per cell, sorted by model then median load time (failed cells last)."""
    import pandas as pd

    trials = pd.DataFrame([r for r in records if r.get("kind") == "trial"], columns=_TRIAL_FIELDS)
    measured = trials[trials["phase"] == "measure"].fillna({c: _NONE for c in CELL})
    ok = measured[measured["status"] == "ok"]
    rows = (
        ok.groupby(CELL, dropna=False)
        .agg(
            n=("load_s", "size"),
            load_median_s=("load_s", "median"),
            load_iqr_s=("load_s", _iqr),
            import_median_s=("import_s", "median"),
            first_inference_median_s=("first_inference_s", "median"),
            parity_max=("parity_max_abs_diff", "max"),
        )
        .reset_index()
    )
    rows["status"] = "ok"
    rows["note"] = ""
    rows = _with_failed_trials(rows, measured[measured["status"] != "ok"])
    rows = _with_failed_artifacts(rows, records)
    rows = _with_failures(rows, records)
    rows = _with_artifact_size(rows, records)
    return rows.sort_values(
        ["model", "load_median_s", "format", "cache_mode"], na_position="last", kind="stable"
    ).reset_index(drop=True)


def _iqr(values: pd.Series) -> float:
    return float(values.quantile(0.75) - values.quantile(0.25))


def _with_failed_trials(rows: pd.DataFrame, failed: pd.DataFrame) -> pd.DataFrame:
    """Note non-ok trials on their cell's row; a cell with no ok trial gets a row of its own."""
    import pandas as pd

    new = []
    by_cell = {tuple(cell): i for i, cell in enumerate(rows[CELL].itertuples(index=False))}
    for cell, group in failed.groupby(CELL, dropna=False):
        counts = group["status"].value_counts()
        worst = min(counts.index, key=lambda s: _SEVERITY.get(s, -1))
        reasons = group.loc[group["status"] == worst, "reason"].dropna()
        reason = short_reason(reasons.iloc[0]) if len(reasons) else ""
        note = ", ".join(f"{n} {status}" for status, n in counts.items()) + f": {reason}"
        if cell in by_cell:
            rows.loc[by_cell[cell], "note"] = note
        else:
            new.append({**dict(zip(CELL, cell)), "n": 0, "status": worst, "note": reason})
    return pd.concat([rows, pd.DataFrame(new)], ignore_index=True) if new else rows


def _with_failed_artifacts(rows: pd.DataFrame, records: list[Record]) -> pd.DataFrame:
    """An artifact that could not be saved explains why its format has no trials at all."""
    import pandas as pd

    seen = set(zip(rows["env_id"], rows["model"], rows["format"]))
    new = [
        {
            "env_id": r.get("env_id", _NONE),
            "model": r.get("model", _NONE),
            "format": r.get("format", _NONE),
            "cache_mode": _NONE,
            "process": _NONE,
            "n": 0,
            "status": r.get("status"),
            "note": short_reason(r.get("reason")),
        }
        for r in records
        if r.get("kind") == "artifact"
        and r.get("status") != "ok"
        and (r.get("env_id", _NONE), r.get("model", _NONE), r.get("format", _NONE)) not in seen
    ]
    return pd.concat([rows, pd.DataFrame(new)], ignore_index=True) if new else rows


def _with_failures(rows: pd.DataFrame, records: list[Record]) -> pd.DataFrame:
    """A `failure` (a whole model or the environment) is a row of its own."""
    import pandas as pd

    new = [
        {
            "env_id": r.get("env_id", _NONE),
            "model": r.get("model") or _NONE,
            "format": _NONE,
            "cache_mode": _NONE,
            "process": _NONE,
            "n": 0,
            "status": "error",
            "note": f"{r.get('scope', 'run')}: {short_reason(r.get('reason'))}",
        }
        for r in records
        if r.get("kind") == "failure"
    ]
    return pd.concat([rows, pd.DataFrame(new)], ignore_index=True) if new else rows


def _with_artifact_size(rows: pd.DataFrame, records: list[Record]) -> pd.DataFrame:
    """Join each cell to the size of its artifact: load time means little without it."""
    import pandas as pd

    sizes = pd.DataFrame(
        [r for r in records if r.get("kind") == "artifact" and r.get("status") == "ok"],
        columns=["env_id", "model", "format", "bytes"],
    ).drop_duplicates(["env_id", "model", "format"], keep="last")
    sizes["artifact_mb"] = sizes.pop("bytes") / 1e6
    return rows.merge(sizes, on=["env_id", "model", "format"], how="left")


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
    varying = [c for c in ("env_id", "process") if summary[c].nunique() > 1]
    columns = [
        ("model", "model", str),
        ("format", "format", str),
        ("cache_mode", "cache", str),
        *[(c, c.replace("_id", ""), str) for c in varying],
        ("n", "n", _count),
        ("load_median_s", "load", _ms),
        ("load_iqr_s", "IQR", _ms),
        ("import_median_s", "import", _ms),
        ("first_inference_median_s", "1st inf", _ms),
        ("parity_max", "parity", _parity),
        ("artifact_mb", "MB", _megabytes),
    ]
    for key, header, _ in columns:
        text = key in ("model", "format", "cache_mode", *varying)
        table.add_column(header, justify="left" if text else "right", no_wrap=True)
    table.add_column("status", overflow="fold", min_width=7)  # ~100 columns fit it all
    for row in summary.to_dict("records"):
        status = str(row["status"])
        style = {"ok": "green", "error": "red"}.get(status, "yellow")
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


def _ms(seconds: Any) -> str:
    return "" if _missing(seconds) else f"{seconds * 1000:.1f}"


def _parity(value: Any) -> str:
    if _missing(value):
        return ""
    return f"{value:.0e}" if value else "0"  # an exact match is the common case for float formats


def _megabytes(value: Any) -> str:
    return "" if _missing(value) else f"{value:.1f}"
