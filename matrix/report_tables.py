"""The report's tables, built from the merged frames (every frame carries an `env` label column).

Each builder returns a `Table` of already-formatted cells; the template only lays them out, so
what a number looks like is decided in one place (`report_text`) and the template stays dumb.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
from markupsafe import Markup

from harness.catalog import CACHE_MODES
from matrix.dataset import NOISY_CV, NOISY_N
from matrix.report_text import (
    DASH,
    Cell,
    Table,
    count,
    factor,
    grouped,
    megabytes,
    missing,
    num_cell,
    number,
    seconds,
    size,
    text_cell,
)

KEY = ["env", "model", "format", "cache_mode"]
PARITY_WARN = 1e-3  # a float32 model reloaded in the same precision should agree far closer


def _fastest(cells: list[Any]) -> tuple[Cell, str]:
    """The cell naming the fastest format and its lead over the slowest; and that format."""
    ordered = sorted(cells, key=lambda row: row.load_median)
    fast, slow = ordered[0], ordered[-1]
    lead = (Markup(' <span class="lead">{} over {}</span>').format(
        factor(slow.load_median / fast.load_median), slow.format) if len(ordered) > 1 else "")
    text = Markup('<b class="win">{}</b> {}{}').format(fast.format, seconds(fast.load_median),
                                                        lead)
    return Cell(text, sort=float(fast.load_median), cls="pick",
                title=f"slowest: {slow.format}, {seconds(slow.load_median)}"), fast.format


def headline(stats: pd.DataFrame, modes: Sequence[str]) -> tuple[Table, list[str]]:
    """Per (model, environment), the fastest format in each cache mode and its lead over the
    slowest; and, per cache mode, how often each format wins."""
    table = Table(["Model", "Environment", *modes],
                  numeric=frozenset(range(2, 2 + len(modes))))
    wins: dict[str, dict[str, int]] = {m: {} for m in modes}
    measured = stats.dropna(subset=["load_median"])
    for (model, env), rows in grouped(measured, ["model", "env"]).items():
        by_mode: dict[str, list[Any]] = {}
        for r in rows:
            by_mode.setdefault(r.cache_mode, []).append(r)
        row = [text_cell(model), text_cell(env)]
        for mode in modes:
            if mode not in by_mode:
                row.append(Cell(DASH, sort=float("inf")))
                continue
            cell, fmt = _fastest(by_mode[mode])
            wins[mode][fmt] = wins[mode].get(fmt, 0) + 1
            row.append(cell)
        table.add(row)
    sentences = []
    for mode, formats in wins.items():
        total = sum(formats.values())
        ranked = sorted(formats.items(), key=lambda kv: -kv[1])
        sentences.append(f"{mode}: " + ", ".join(
            f"{fmt} fastest in {n} of {total}" for fmt, n in ranked))
    return table, sentences


def _pivot(stats: pd.DataFrame, index: list[str], formats: Sequence[str],
           cell: Callable[[Any], Cell], index_cells: Callable[[tuple], list[Cell]],
           index_names: list[str]) -> Table:
    """One row per `index` tuple, one column per format (the seed article's table shape)."""
    table = Table([*index_names, *formats],
                  numeric=frozenset(range(len(index_names), len(index_names) + len(formats))))
    for key, group in grouped(stats, index).items():
        by_format = {row.format: row for row in group}
        table.add([*index_cells(key),
                           *(cell(by_format[f]) if f in by_format else Cell(DASH, sort=float("inf"))
                             for f in formats)])
    return table


def sizes(stats: pd.DataFrame, formats: Sequence[str]) -> Table:
    """Parameters and size on disk per format (files counted where a format is a folder)."""
    per_artifact = stats.drop_duplicates(["env", "model", "format"])

    def cell(row: Any) -> Cell:
        if missing(row.files) or row.files <= 1:
            return num_cell(row.bytes, size)
        return num_cell(row.bytes, lambda v: Markup("{}<small>{} files</small>").format(
            size(v), int(row.files)))

    return _pivot(per_artifact, ["model", "params", "env"], formats, cell,
                  lambda k: [text_cell(k[0]), num_cell(k[1], count), text_cell(k[2])],
                  ["Model", "Parameters", "Environment"])


def load_times(stats: pd.DataFrame, formats: Sequence[str]) -> Table:
    """Median load per format, half the IQR under it; the tooltip has n, min, rank, ratios."""

    def cell(row: Any) -> Cell:
        tip = "\n".join([
            f"n={int(row.n)}, min {seconds(row.load_min)}, IQR {seconds(row.load_iqr)}",
            f"rank {number(row.rank)} in its environment and cache mode",
            f"speed-up vs baseline format {factor(row.speedup_vs_format)}, "
            f"vs baseline environment {factor(row.speedup_vs_env)}",
            f"{factor(row.io_multiple)} the I/O floor"])
        if missing(row.load_median):
            return Cell(DASH, sort=float("inf"), title=tip)
        text = Markup("{}<small>± {}</small>").format(seconds(row.load_median),
                                                      seconds(row.load_iqr / 2))
        return Cell(text, sort=float(row.load_median), cls="noisy" if row.noisy else "",
                    title=tip)

    return _pivot(stats, ["model", "env", "cache_mode"], formats, cell,
                  lambda k: [text_cell(k[0]), text_cell(k[1]), text_cell(k[2])],
                  ["Model", "Environment", "Cache"])


def _long(stats: pd.DataFrame, columns: list[tuple[str, str, Callable[[Any], str]]],
          key: list[str] = KEY) -> Table:
    """One row per cell: the key columns as text, then the given (title, column, format)."""
    names = {"env": "Environment", "model": "Model", "format": "Format", "cache_mode": "Cache"}
    table = Table([names[k] for k in key] + [title for title, _, _ in columns],
                  numeric=frozenset(range(len(key), len(key) + len(columns))))
    for row in stats.itertuples(index=False):
        table.add([text_cell(getattr(row, k)) for k in key]
                          + [num_cell(getattr(row, col), fmt) for _, col, fmt in columns])
    return table


def artifacts(stats: pd.DataFrame) -> Table:
    """Artifact covariates: size, files, save time and the I/O floor; the load held against the
    floor is the coldest one measured (the catalog lists cache modes coldest first)."""
    coldness = stats["cache_mode"].map({m: i for i, m in enumerate(CACHE_MODES)})
    per_artifact = stats.assign(_cold=coldness).sort_values("_cold", kind="stable")
    per_artifact = per_artifact.drop_duplicates(["env", "model", "format"])
    return _long(per_artifact, [
        ("Size", "bytes", size), ("Files", "files", number),
        ("Largest file", "largest_file_bytes", size),
        ("Save / convert", "save_s", seconds), ("I/O floor", "io_floor_s", seconds),
        ("Cold load ÷ I/O floor", "io_multiple", factor),
    ], key=["env", "model", "format"])


def runtime(stats: pd.DataFrame) -> Table:
    """What surrounds the load: import (reported apart), inference and memory."""
    return _long(stats, [
        ("n", "n", number), ("Import", "import_median", seconds),
        ("Load CPU", "load_cpu_median", seconds),
        ("First inference", "first_inference_median", seconds),
        ("Steady inference", "inference_median", seconds),
        ("Peak RSS", "peak_rss_median", megabytes), ("RSS Δ load", "rss_delta_median", megabytes),
    ])


def parity(stats: pd.DataFrame, formats: Sequence[str]) -> Table:
    """Largest prediction difference per format against the saving model's own output."""
    per_artifact = stats.sort_values("parity_max", na_position="first").drop_duplicates(
        ["env", "model", "format"], keep="last")

    def cell(row: Any) -> Cell:
        bad = not missing(row.parity_max) and row.parity_max > PARITY_WARN
        return num_cell(row.parity_max, number, "bad" if bad else "",
                        "differs beyond 1e-3 — expected for quantized formats" if bad else "")

    return _pivot(per_artifact, ["model", "env"], formats, cell,
                  lambda k: [text_cell(k[0]), text_cell(k[1])], ["Model", "Environment"])


def noise(stats: pd.DataFrame) -> Table:
    """Cells whose median should not be trusted alone: spread over 10 % or fewer than 3 loads."""
    table = Table(["Environment", "Model", "Format", "Cache", "n", "CV", "IQR", "Why"],
                  numeric=frozenset({4, 5, 6}))
    for row in stats.itertuples(index=False):
        if missing(row.load_median) or not row.noisy:
            continue
        why = [f"CV {row.load_cv:.0%} > {NOISY_CV:.0%}"] if row.load_cv > NOISY_CV else []
        why += [f"n = {int(row.n)} < {NOISY_N}"] if row.n < NOISY_N else []
        table.add([*(text_cell(getattr(row, k)) for k in KEY), num_cell(row.n, number),
                           num_cell(row.load_cv, lambda v: f"{v:.0%}"),
                           num_cell(row.load_iqr), text_cell("; ".join(why))])
    return table


def problem_rows(problems: pd.DataFrame, unreadable: Sequence[str]) -> Table:
    """Every cell that produced no number, and why; nothing that failed may vanish silently."""
    table = Table(["Environment", "Model", "Format", "Cache", "Status", "Trials", "Reason"],
                  numeric=frozenset({5}))
    for row in problems.itertuples(index=False):
        table.add([*(text_cell(getattr(row, k)) for k in KEY),
                           text_cell(row.status, f"status-{row.status}"),
                           num_cell(getattr(row, "trials", None) or None, number),
                           text_cell(row.reason, "reason")])
    for line in unreadable:
        table.add([*(text_cell(None) for _ in range(4)),
                           text_cell("unreadable record", "status-invalid"), text_cell(None),
                           text_cell(line, "reason")])
    return table


def _device(env: pd.Series) -> str:
    gpus = env.get("gpus")
    if isinstance(gpus, (list, tuple)) and gpus:
        return "GPU: " + ", ".join(map(str, gpus))
    return "CPU"


def _build(env: pd.Series) -> str:
    """CUDA and cuDNN versions from `tf.sysconfig.get_build_info()` (flattened `build_info_*`)."""
    info = {k.removeprefix("build_info_"): v for k, v in env.items()
            if k.startswith("build_info_") and not missing(v)}
    if not info:
        return DASH
    versions = [f"{k.removesuffix('_version')} {v}" for k, v in info.items()
                if k.endswith("_version")]
    if versions:
        return ", ".join(versions)
    return "CUDA build" if str(info.get("is_cuda_build")) == "True" else "not a CUDA build"


_META: list[tuple[str, Callable[[pd.Series], Any]]] = [
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
    ("Page cache dropped by", lambda e: e.get("drop_caches_via")),
    ("Started", lambda e: e.get("started")),
    ("Tool version", lambda e: e.get("tool_version")),
]


def environments(envs: pd.DataFrame) -> Table:
    """Environments side by side; a row whose values differ is marked, since it may explain."""
    table = Table(["Field", *envs["env"]])
    for name, get in _META:
        values = [str(v) if not missing(v := get(row)) else DASH for _, row in envs.iterrows()]
        cls = "differs" if len(set(values)) > 1 else ""
        table.add([Cell(name, cls="field"),
                           *(Cell(v, cls=cls) for v in values)])
    return table
