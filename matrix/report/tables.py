"""The report's tables, built from the merged frames (every frame carries an `env` label column).

Each builder returns a `Table` of already-formatted cells; the template only lays them out, so
what a number looks like is decided in one place (`report_text`) and the template stays dumb.
Tables are built a column at a time from the frames (a sweep has thousands of cells, and an
object per cell cost seconds). A table longer than MAX_ROWS keeps its MAX_ROWS most telling
rows and says how many it left out: nobody reads ten thousand rows in a page, and
`matrix report --export FILE` writes every cell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from harness.catalog import CACHE_MODES
from matrix.report.text import (
    DASH,
    MAX_ROWS,
    MISSING_TD,
    Cell,
    Table,
    count,
    factor,
    left_out_note,
    median_precision,
    megabytes,
    missing,
    num_tds,
    number,
    seconds,
    size,
    td,
    text_cell,
    text_tds,
)
from matrix.results.dataset import NOISY_CV, NOISY_N, PARITY_ORDER, SEVERITY

KEY = ["env", "model", "format", "cache_mode"]
Columns = list[list[str]]


def _top(
    frame: pd.DataFrame,
    by: str,
    what: str,
    kept: str,
    key: Callable[[pd.Series], pd.Series] | None = None,
) -> tuple[pd.DataFrame, Markup]:
    """`frame`, or past MAX_ROWS rows its first MAX_ROWS by `by` (largest first; lowest `key`
    first if given) and the note saying so."""
    if len(frame) <= MAX_ROWS:
        return frame, Markup("")
    ordered = frame.sort_values(
        by, ascending=key is not None, key=key, kind="stable", na_position="last"
    )
    return ordered.head(MAX_ROWS), left_out_note(len(frame) - MAX_ROWS, what, kept)


def _pivot(
    frame: pd.DataFrame,
    index: list[str],
    column: str,
    values: Sequence[str],
    cells: list[str],
    heads: Callable[[pd.DataFrame], Columns],
    names: list[str],
    what: str,
) -> Table:
    """One row per `index` tuple (in order of first appearance) and one column per value of
    `column` (the seed article's table shape); `cells` are the rendered cells of `frame`'s
    rows, `heads` renders the index columns of a frame of each row's first frame row."""
    table = Table([*names, *values], numeric=frozenset(range(len(names), len(names) + len(values))))
    row_of = frame.groupby(index, sort=False, dropna=False, observed=True).ngroup().to_numpy()
    col_of = frame[column].map({v: i for i, v in enumerate(values)}).tolist()
    grid = [[MISSING_TD] * len(values) for _ in range(int(row_of.max()) + 1 if len(frame) else 0)]
    for row, col, cell in zip(row_of.tolist(), col_of, cells):
        if not missing(col):
            grid[row][int(col)] = cell
    if len(grid) > MAX_ROWS:
        table.note = left_out_note(len(grid) - MAX_ROWS, what, "first in model-size order")
        grid = grid[:MAX_ROWS]
    first = np.unique(row_of, return_index=True)[1][: len(grid)]
    table.add_columns([*heads(frame.iloc[first]), ["".join(cells) for cells in grid]])
    return table


def _texts(*names: str) -> Callable[[pd.DataFrame], Columns]:
    return lambda frame: [text_tds(frame[name].tolist()) for name in names]


def _fastest(
    fast: Any,
    first: float,
    load: float,
    cold: float,
    parity: Any,
    slow: Any,
    slow_first: float,
    formats: int,
) -> str:
    """The cell naming the format first to predict, its load and cold start under it, and its
    lead over the slowest. A winner that fails parity says so: fast and wrong is no win.
    (f-strings with `escape`, not `Markup.format`, which is several times slower: these are
    built per cell.)"""
    lead = (
        f' <span class="lead">{factor(slow_first / first)} over {escape(slow)}</span>'
        if formats > 1
        else ""
    )
    wrong = ' <span class="bad">fails parity</span>' if parity == "fail" else ""
    text = Markup(
        f'<b class="win">{escape(fast)}</b> {seconds(first)}{lead}{wrong}'
        f"<small>load {seconds(load)} · cold start {seconds(cold)}</small>"
    )
    return td(
        Cell(
            text,
            sort=float(first),
            cls="pick",
            title=f"slowest to first prediction: {slow}, {seconds(slow_first)}",
        )
    )


def headline(stats: pd.DataFrame, modes: Sequence[str]) -> tuple[Table, list[str]]:
    """Per (model, environment), the format first to predict in each cache mode (median load +
    first inference: work deferred past the load counts) and its lead over the slowest; and,
    per cache mode, how often each format wins."""
    measured = stats.dropna(subset=["first_prediction_median"])
    firsts = measured.groupby(["model", "env", "cache_mode"], sort=False, observed=True)[
        "first_prediction_median"
    ]
    fast, slow = measured.loc[firsts.idxmin()], measured.loc[firsts.idxmax()]
    picks = fast[["model", "env", "cache_mode", "format"]].reset_index(drop=True)
    cells = list(
        map(
            _fastest,
            fast["format"],
            fast["first_prediction_median"],
            fast["load_median"],
            fast["cold_start_median"],
            fast["parity_status"],
            slow["format"],
            slow["first_prediction_median"],
            firsts.size(),
        )
    )
    table = _pivot(
        picks,
        ["model", "env"],
        "cache_mode",
        modes,
        cells,
        _texts("model", "env"),
        ["Model", "Environment"],
        "model × environment rows",
    )
    wins: dict[str, dict[str, int]] = {m: {} for m in modes}
    for mode, fmt in zip(picks["cache_mode"].tolist(), picks["format"].tolist()):
        if mode in wins:
            wins[mode][fmt] = wins[mode].get(fmt, 0) + 1
    sentences = []
    for mode, formats in wins.items():
        total = sum(formats.values())
        ranked = sorted(formats.items(), key=lambda kv: -kv[1])
        sentences.append(
            f"{mode}: "
            + ", ".join(f"{fmt} first to predict in {n} of {total}" for fmt, n in ranked)
        )
    return table, sentences


def _size_td(value: Any, files: Any) -> str:
    if missing(value):
        return MISSING_TD
    text = (
        size(value)
        if missing(files) or files <= 1
        else Markup(f"{size(value)}<small>{int(files)} files</small>")
    )
    return td(Cell(text, sort=float(value)))


def sizes(stats: pd.DataFrame, formats: Sequence[str]) -> Table:
    """Parameters and size on disk per format (files counted where a format is a folder)."""
    per_artifact = stats.drop_duplicates(["env", "model", "format"])
    cells = list(map(_size_td, per_artifact["bytes"].tolist(), per_artifact["files"].tolist()))

    def heads(frame: pd.DataFrame) -> Columns:
        return [
            text_tds(frame["model"].tolist()),
            num_tds(frame["params"].tolist(), count),
            text_tds(frame["env"].tolist()),
        ]

    return _pivot(
        per_artifact,
        ["model", "params", "env"],
        "format",
        formats,
        cells,
        heads,
        ["Model", "Parameters", "Environment"],
        "model × environment rows",
    )


_LOAD_TIP = [
    "n",
    "load_min",
    "load_iqr",
    "rank",
    "speedup_vs_format",
    "speedup_vs_env",
    "io_multiple",
    "load_median",
    "noisy",
]


def _load_td(
    n: Any,
    low: Any,
    iqr: Any,
    rank: Any,
    vs_format: Any,
    vs_env: Any,
    io: Any,
    median: Any,
    noisy: Any,
) -> str:
    """One load-time cell as HTML (written out, not via `td`: a sweep has thousands)."""
    tip = escape(
        f"n={int(n)}, min {seconds(low)}, IQR {seconds(iqr)}\n"
        f"rank {number(rank)} in its environment and cache mode\n"
        f"speed-up vs baseline format {factor(vs_format)}, "
        f"vs baseline environment {factor(vs_env)}\n{factor(io)} the I/O floor"
    )
    if missing(median):
        return f'<td data-sort="inf" title="{tip}">{DASH}</td>'
    noisy_class = ' class="noisy"' if noisy else ""
    return (
        f'<td data-sort="{median:.6g}"{noisy_class} title="{tip}">{seconds(median)}'
        f"<small>± {seconds(iqr / 2)}</small></td>"
    )


def load_times(stats: pd.DataFrame, formats: Sequence[str]) -> Table:
    """Median load per format, half the IQR under it; the tooltip has n, min, rank, ratios."""
    cells = list(map(_load_td, *(stats[c].tolist() for c in _LOAD_TIP)))
    return _pivot(
        stats,
        ["model", "env", "cache_mode"],
        "format",
        formats,
        cells,
        _texts("model", "env", "cache_mode"),
        ["Model", "Environment", "Cache"],
        "model × environment × cache rows",
    )


def _long(
    stats: pd.DataFrame,
    columns: list[tuple[str, str, Callable[[Any], str] | None]],
    key: list[str] = KEY,
    note: str = "",
) -> Table:
    """One row per cell: the key columns as text, then the given (title, column, format); a
    column without a format is text."""
    names = {"env": "Environment", "model": "Model", "format": "Format", "cache_mode": "Cache"}
    table = Table(
        [names[k] for k in key] + [title for title, _, _ in columns],
        numeric=frozenset(i for i, (_, _, fmt) in enumerate(columns, len(key)) if fmt),
        note=note,
    )
    table.add_columns(
        [
            *(text_tds(stats[k].tolist()) for k in key),
            *(
                num_tds(stats[col].tolist(), fmt) if fmt else text_tds(stats[col].tolist())
                for _, col, fmt in columns
            ),
        ]
    )
    return table


def artifacts(stats: pd.DataFrame) -> Table:
    """Artifact covariates: size, files, save time and the I/O floor; the load held against the
    floor is the coldest one measured (the catalog lists cache modes coldest first)."""
    coldness = stats["cache_mode"].map({m: i for i, m in enumerate(CACHE_MODES)})
    per_artifact = stats.assign(_cold=coldness).sort_values("_cold", kind="stable")
    per_artifact = per_artifact.drop_duplicates(["env", "model", "format"])
    shown, note = _top(per_artifact, "bytes", "artifacts", "largest on disk")
    return _long(
        shown,
        [
            ("Size", "bytes", size),
            ("Files", "files", number),
            ("Largest file", "largest_file_bytes", size),
            ("Save / convert", "save_s", seconds),
            ("I/O floor", "io_floor_s", seconds),
            ("Floor rate", "io_floor_gb_s", lambda v: f"{number(v, 2)} GB/s"),
            ("Cold load ÷ I/O floor", "io_multiple", factor),
        ],
        key=["env", "model", "format"],
        note=note,
    )


def runtime(stats: pd.DataFrame) -> Table:
    """What surrounds the load: import and device start-up (reported apart), the first and
    steady inference (with how it was called), what the load read from storage, and memory."""
    shown, note = _top(stats, "load_median", "cells", "with the slowest median load")
    shown = shown.assign(
        precision_text=[
            median_precision(half, reached)
            for half, reached in zip(
                shown["load_precision"].tolist(), shown["precision_reached"].tolist()
            )
        ]
    )
    return _long(
        shown,
        [
            ("n", "n", number),
            ("Process", "process", None),
            ("Median load ±95 %", "precision_text", None),
            ("Import", "import_median", seconds),
            ("Device init", "device_init_median", seconds),
            ("Load CPU", "load_cpu_median", seconds),
            ("First inference", "first_inference_median", seconds),
            ("First prediction", "first_prediction_median", seconds),
            ("Cold start", "cold_start_median", seconds),
            ("Steady inference", "inference_median", seconds),
            ("Called as", "inference_call", None),
            ("Read by load", "read_bytes_median", size),
            ("Major faults", "major_faults_median", number),
            ("Peak RSS", "peak_rss_median", megabytes),
            ("RSS Δ load", "rss_delta_median", megabytes),
        ],
        note=note,
    )


_PARITY_TIP = [
    "parity_status",
    "parity_family",
    "parity_tolerance",
    "parity_rel_err_max",
    "parity_top1_min",
    "parity_cosine_min",
    "parity_max",
]
_PARITY_LOOK = {
    "pass": ("pass", "good"),
    "fail": ("fail", "bad"),
    "not-informative": ("not informative", "uninformative"),
}


def _parity_td(
    status: Any, family: Any, tolerance: Any, rel_err: Any, top1: Any, cosine: Any, max_abs: Any
) -> str:
    """A parity verdict, never a bare number that reads as a pass: `fail` in red with its
    relative error, `not informative` when the reference did not vary with the input (nothing
    could fail), `not checked` for a run before schema 2, and only `pass` in green."""
    if missing(status):
        if missing(max_abs):
            return MISSING_TD
        return td(
            Cell(
                "not checked",
                sort=-1.0,
                cls="unchecked",
                title=f"recorded before parity had a verdict (schema 1): largest "
                f"absolute difference {number(max_abs)}, on one input",
            )
        )
    text, cls = _PARITY_LOOK.get(status, (str(status), ""))
    detail = (
        "" if missing(rel_err) or status == "not-informative" else (f"rel err {number(rel_err, 2)}")
    )
    if status == "fail" and not missing(tolerance):
        detail += f" > {number(tolerance, 2)}"
    tip = (
        f"{status} ({family} tolerance {number(tolerance, 2)})\nrelative error "
        f"{number(rel_err)}, top-1 agreement {number(top1)}, lowest cosine "
        f"{number(cosine)}, largest absolute difference {number(max_abs)}"
    )
    sort = float(PARITY_ORDER.index(status)) if status in PARITY_ORDER else 0.0
    body = Markup(f"{escape(text)}<small>{escape(detail)}</small>") if detail else text
    return td(Cell(body, sort=sort, cls=cls, title=tip))


def parity(stats: pd.DataFrame, formats: Sequence[str]) -> Table:
    """Parity verdict per format against the saving model's own output, on a seeded batch:
    per artifact, the worst cache mode's (fail, then not informative, then the largest error)."""
    worst = stats.assign(
        _code=stats["parity_status"].map({s: i for i, s in enumerate(PARITY_ORDER)})
    )
    per_artifact = (
        worst.sort_values(
            ["_code", "parity_rel_err_max", "parity_max"], na_position="first", kind="stable"
        )
        .drop_duplicates(["env", "model", "format"], keep="last")
        .sort_index()
    )
    cells = list(map(_parity_td, *(per_artifact[c].tolist() for c in _PARITY_TIP)))
    return _pivot(
        per_artifact,
        ["model", "env"],
        "format",
        formats,
        cells,
        _texts("model", "env"),
        ["Model", "Environment"],
        "model × environment rows",
    )


def reused(stats: pd.DataFrame) -> Table:
    """The reused-process cells (the seed article's method): one load after another in one process,
    summarised by their mean as the article did, with the median and minimum beside it."""
    shown, note = _top(stats, "load_mean", "reused-process cells", "with the slowest mean load")
    return _long(
        shown,
        [
            ("Loads", "n", number),
            ("Mean load", "load_mean", seconds),
            ("Median load", "load_median", seconds),
            ("Min load", "load_min", seconds),
            ("First prediction", "first_prediction_median", seconds),
            ("Steady inference", "inference_median", seconds),
            ("Called as", "inference_call", None),
            ("Peak RSS", "peak_rss_median", megabytes),
        ],
        key=["env", "model", "format"],
        note=note,
    )


def article(rows: pd.DataFrame) -> Table:
    """The seed article's table, per model and format: parameters, size on disk and load time,
    with how that load time was measured (`load` and `how`, chosen by the caller)."""
    shown, note = _top(rows, "load", "artifacts", "with the slowest load")
    table = Table(
        [
            "Model",
            "Parameters",
            "Environment",
            "Format",
            "Size on disk",
            "Load time",
            "Measured as",
        ],
        numeric=frozenset({1, 4, 5}),
        note=note,
    )
    table.add_columns(
        [
            text_tds(shown["model"].tolist()),
            num_tds(shown["params"].tolist(), count),
            text_tds(shown["env"].tolist()),
            text_tds(shown["format"].tolist()),
            num_tds(shown["bytes"].tolist(), size),
            num_tds(shown["load"].tolist()),
            text_tds(shown["how"].tolist()),
        ]
    )
    return table


def _why_noisy(cv: float, n: int) -> str:
    why = [f"CV {cv:.0%} > {NOISY_CV:.0%}"] if cv > NOISY_CV else []
    return "; ".join(why + ([f"n = {int(n)} < {NOISY_N}"] if n < NOISY_N else []))


def noise(stats: pd.DataFrame) -> Table:
    """Cells whose median should not be trusted alone: spread over 10 % or fewer than 3 loads."""
    noisy = stats[stats["load_median"].notna() & stats["noisy"].eq(True)]
    shown, note = _top(noisy, "load_cv", "noisy cells", "with the largest CV")
    table = Table(
        ["Environment", "Model", "Format", "Cache", "n", "CV", "IQR", "Why"],
        numeric=frozenset({4, 5, 6}),
        note=note,
    )
    cv, n = shown["load_cv"].tolist(), shown["n"].tolist()
    table.add_columns(
        [
            *(text_tds(shown[k].tolist()) for k in KEY),
            num_tds(n, number),
            num_tds(cv, lambda v: f"{v:.0%}"),
            num_tds(shown["load_iqr"].tolist()),
            text_tds(list(map(_why_noisy, cv, n))),
        ]
    )
    return table


def problem_rows(problems: pd.DataFrame, unreadable: Sequence[str]) -> Table:
    """Every cell that produced no number, and why; nothing that failed may vanish silently.
    A huge sweep's list keeps the worst MAX_ROWS (a failed environment before an error, before
    an invalid or unsupported cell) and counts the rest."""
    unread = pd.DataFrame(
        {"status": "unreadable record", "reason": list(unreadable)}, columns=["status", "reason"]
    )
    rows = pd.concat([problems, unread], ignore_index=True).reindex(
        columns=[*KEY, "status", "trials", "reason"]
    )
    shown, note = _top(
        rows,
        "status",
        "problem cells",
        "worst: failed environments, then errors, invalid and unsupported cells",
        key=lambda s: s.map(SEVERITY).fillna(len(SEVERITY)),
    )
    table = Table(
        ["Environment", "Model", "Format", "Cache", "Status", "Trials", "Reason"],
        numeric=frozenset({5}),
        note=note,
    )
    status = [
        td(text_cell(s, f"status-{'invalid' if s == 'unreadable record' else s}"))
        for s in shown["status"].tolist()
    ]
    trials = pd.to_numeric(shown["trials"], errors="coerce")
    table.add_columns(
        [
            *(text_tds(shown[k].tolist()) for k in KEY),
            status,
            num_tds(trials.where(trials > 0).tolist(), number),
            text_tds(shown["reason"].tolist(), "reason"),
        ]
    )
    return table


def _device(env: dict[str, Any]) -> str:
    gpus = env.get("gpus")
    if isinstance(gpus, (list, tuple)) and gpus:
        return "GPU: " + ", ".join(map(str, gpus))
    return "CPU"


def _build(env: dict[str, Any]) -> str:
    """CUDA and cuDNN versions from `tf.sysconfig.get_build_info()` (flattened `build_info_*`)."""
    info = {
        k.removeprefix("build_info_"): v
        for k, v in env.items()
        if k.startswith("build_info_") and not missing(v)
    }
    if not info:
        return DASH
    versions = [
        f"{k.removesuffix('_version')} {v}" for k, v in info.items() if k.endswith("_version")
    ]
    if versions:
        return ", ".join(versions)
    return "CUDA build" if str(info.get("is_cuda_build")) == "True" else "not a CUDA build"


_META: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("Run", lambda e: e.get("run_id")),
    ("TensorFlow", lambda e: e.get("tensorflow")),
    ("Keras", lambda e: f"{e.get('keras')} ({e.get('keras_impl')})"),
    ("Python", lambda e: e.get("python")),
    ("numpy", lambda e: e.get("numpy")),
    ("TFLite runtime", lambda e: e.get("tflite_runtime")),
    ("Device", _device),
    ("CUDA / cuDNN", _build),
    ("CPU", lambda e: f"{e.get('cpu_model')} × {e.get('cpu_count')}"),
    ("Memory", lambda e: DASH if missing(e.get("memory_gb")) else f"{e.get('memory_gb')} GB"),
    ("Host", lambda e: e.get("host")),
    ("Kernel", lambda e: e.get("kernel")),
    ("In container", lambda e: e.get("in_container")),
    ("Hypervisor", lambda e: e.get("hypervisor")),
    ("Backend", lambda e: e.get("backend")),
    ("Model weights", lambda e: e.get("weights")),
    (
        "CPU calibration",
        lambda e: (
            DASH
            if missing(e.get("calibration_s"))
            else f"{seconds(e.get('calibration_s'))} (end {seconds(e.get('calibration_end_s'))})"
        ),
    ),
    ("Page cache dropped by", lambda e: e.get("drop_caches_via")),
    ("Started", lambda e: e.get("started")),
    ("Tool version", lambda e: e.get("tool_version")),
]


def environments(envs: pd.DataFrame) -> Table:
    """Environments side by side; a row whose values differ is marked, since it may explain."""
    table = Table(["Field", *envs["env"]])
    rows = envs.to_dict("records")
    for name, get in _META:
        values = [str(v) if not missing(v := get(row)) else DASH for row in rows]
        cls = "differs" if len(set(values)) > 1 else ""
        table.add([Cell(name, cls="field"), *(Cell(v, cls=cls) for v in values)])
    return table
