"""Data for the environment-against-environment view: every cell of every environment, plus a
Mann–Whitney p for every pair of environments that measured the same cell.

The page picks the two environments in JavaScript, so everything a pair needs is precomputed
here and embedded as JSON. p-values are computed in batches (one vectorised scipy call per sample
size) because a nightly sweep has hundreds of environment pairs; without scipy the page says
"n/a" rather than inventing a test.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from harness.catalog import CACHE_MODES, FORMATS
from matrix.dataset import CELL, Dataset, load_samples, measured
from matrix.report_tables import KEY
from matrix.report_text import missing, seconds
from matrix.stats import ALPHA, MIN_SAMPLES, THRESHOLD

Labels = dict[tuple[str, str], str]


def _label(labels: Labels, row: Any) -> str:
    return labels.get((str(row.run_id), str(row.env_id)), str(row.env_id))


def _by_label(frame: pd.DataFrame, column: str, labels: Labels) -> dict[tuple, Any]:
    """`column` of a per-cell frame keyed by (env label, model, format, cache mode)."""
    return {(_label(labels, r), r.model, r.format, r.cache_mode): getattr(r, column)
            for r in frame.itertuples(index=False)}


def _evictions(ds: Dataset, labels: Labels) -> dict[tuple, str]:
    """How each cell's cache state was produced; cells produced differently are not comparable."""
    used = measured(ds.trials)[[*CELL, "eviction"]].dropna().drop_duplicates()
    found: dict[tuple, set[str]] = {}
    for r in used.itertuples(index=False):
        found.setdefault((_label(labels, r), r.model, r.format, r.cache_mode), set()).add(
            r.eviction)
    return {key: "+".join(sorted(ways)) for key, ways in found.items()}


def _samples(ds: Dataset, labels: Labels) -> dict[tuple, list[float]]:
    """Each cell's measured load times (NaN dropped), keyed like `_by_label`."""
    return {key: [v for v in values if not missing(v)]
            for key, values in _by_label(load_samples(ds, CELL), "samples", labels).items()}


def _p_values(samples: dict[tuple, list[float]], envs: list[str], rows: list[tuple]
              ) -> dict[str, list[float | None]] | None:
    """Two-sided Mann–Whitney p per (environment pair, row), or None without scipy."""
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:
        return None
    out = {f"{i},{j}": [None] * len(rows) for i, j in itertools.combinations(range(len(envs)), 2)}
    # scipy picks its method (exact or asymptotic) once per call, from the sizes and from ties
    # anywhere in the batch, so rows are batched by both: each p is what a lone call would give.
    batches: dict[tuple[int, int, bool], list[tuple[str, int, list[float], list[float]]]] = (
        defaultdict(list))
    for (i, a), (j, b) in itertools.combinations(enumerate(envs), 2):
        for r, row in enumerate(rows):
            x, y = samples.get((a, *row), []), samples.get((b, *row), [])
            if min(len(x), len(y)) >= MIN_SAMPLES:
                ties = len(set(x + y)) < len(x) + len(y)
                batches[(len(x), len(y), ties)].append((f"{i},{j}", r, x, y))
    for batch in batches.values():
        with np.errstate(all="ignore"):
            result = mannwhitneyu(np.array([x for *_, x, _ in batch], dtype=float),
                                  np.array([y for *_, y in batch], dtype=float), axis=1)
        for (pair, r, _, _), p in zip(batch, np.atleast_1d(result.pvalue)):
            out[pair][r] = None if np.isnan(p) else round(float(p), 4)
    return out


def _by_cell(frame: pd.DataFrame) -> dict[tuple, Any]:
    """Rows of a per-cell frame keyed by (env label, model, format, cache mode)."""
    return {(str(r.env), r.model, r.format, r.cache_mode): r
            for r in frame.itertuples(index=False)}


def _cell(stat: Any, problem: Any, eviction: str, keras: str) -> dict[str, Any] | None:
    """One environment's side of a row: its median, or its status and why; None if absent.

    `eviction` and `keras` travel along so the page can tell cells that measured different
    things apart from cells that merely differ.
    """
    if stat is None and problem is None:
        return None
    if stat is not None and not missing(stat.load_median):
        return {"status": "ok", "median": float(stat.load_median), "n": int(stat.n),
                "text": seconds(stat.load_median), "eviction": eviction, "keras": keras}
    status, reason = ("missing", "") if problem is None else (problem.status, problem.reason)
    return {"status": str(status), "reason": "" if missing(reason) else str(reason),
            "eviction": eviction, "keras": keras}


def _ordered_rows(keys: list[tuple]) -> list[tuple]:
    """(model, format, cache) rows: models in the order given (the report's size order),
    formats and cache modes in catalog order."""
    model_rank = {m: i for i, m in enumerate(dict.fromkeys(k[1] for k in keys))}
    fmt_rank = {f: i for i, f in enumerate(FORMATS)}
    cache_rank = {c: i for i, c in enumerate(CACHE_MODES)}
    return sorted({k[1:] for k in keys}, key=lambda r: (
        model_rank[r[0]], fmt_rank.get(r[1], len(fmt_rank)), r[1], cache_rank.get(r[2], 9), r[2]))


def _default_pair(envs: list[str], keras: dict[str, str]) -> list[int]:
    """The pair the page opens on: the first two environments with the same Keras, whose cells
    can be compared at all (else simply the first two)."""
    for i, j in itertools.combinations(range(len(envs)), 2):
        if keras.get(envs[i]) == keras.get(envs[j]):
            return [i, j]
    return [0, min(1, len(envs) - 1)]


def pair_payload(ds: Dataset, stats: pd.DataFrame, problems: pd.DataFrame,
                 labels: Labels) -> dict[str, Any]:
    """Every (model, format, cache) row with each environment's cell, and the pair p-values.

    `stats` and `problems` carry the `env` label column; environments without any cell (a
    skipped one, say) are left out of the selector, the problems table lists them.
    """
    stat_at = _by_cell(stats)
    problem_at = _by_cell(problems.dropna(subset=KEY))
    present = {k[0] for k in [*stat_at, *problem_at]}
    envs = [e for e in labels.values() if e in present]
    rows = _ordered_rows([*stat_at, *problem_at])
    evictions = _evictions(ds, labels)
    keras = {_label(labels, r): str(r.keras_impl) for r in ds.environments.itertuples(index=False)}
    cells = [[_cell(stat_at.get((e, *r)), problem_at.get((e, *r)), evictions.get((e, *r), ""),
                    keras.get(e, "")) for r in rows] for e in envs]
    return {"envs": envs, "rows": [list(r) for r in rows], "cells": cells,
            "p": _p_values(_samples(ds, labels), envs, rows), "threshold": THRESHOLD,
            "alpha": ALPHA, "default": _default_pair(envs, keras)}


def embed_json(value: Any) -> Markup:
    """JSON safe inside `<script type="application/json">`: no `<`, `>` or `&` survives raw,
    so a name containing `</script>` cannot end the element early."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return Markup(text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))
