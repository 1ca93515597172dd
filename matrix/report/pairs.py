"""Data for the environment-against-environment view: every cell of every environment, plus a
p and the verdict of `matrix.results.stats`'s rule (the one `compare` and `history` use: each pair
of
environments is one family of cells) for every pair of environments (with the same Keras)
that measured the same cell.

The page picks the two environments in JavaScript, so everything a pair needs is precomputed
here and embedded as JSON. A nightly sweep has hundreds of environment pairs (10^5 tests), so
the samples are packed into one array and tested in batches (`row_tests`); without scipy the
page says "n/a" rather than inventing a test.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from harness.catalog import CACHE_MODES, FORMATS
from matrix.report.tables import KEY
from matrix.report.text import missing, seconds
from matrix.results.dataset import distinct_values
from matrix.results.stats import ALPHA, THRESHOLD, family_verdicts, row_tests

ROW = ["model", "format", "cache_mode"]
_BATCH = 100_000  # (pair, row) tests per batch: bounds the memory of the packed samples


def _evictions(trials: pd.DataFrame) -> dict[tuple, str]:
    """How each cell's cache state was produced; cells produced differently are not comparable."""
    ways = distinct_values(trials, KEY, "eviction", "+")
    return dict(zip(zip(*(ways[k].tolist() for k in KEY)), ways["eviction"].tolist()))


def _sample_grid(trials: pd.DataFrame, envs: list[str], rows: list[tuple]) -> np.ndarray:
    """Each cell's measured load times as `grid[environment, row]`, NaN-padded (see `padded`)."""
    index = pd.DataFrame(rows, columns=ROW).assign(_row=np.arange(len(rows)))
    named = trials["env"].astype(str)  # an environment without any cell is not in `envs`
    loads = trials.assign(
        load_s=pd.to_numeric(trials["load_s"], errors="coerce"),
        _env=pd.Categorical(named.where(named.isin(envs)), categories=envs).codes,
    )
    loads = loads[loads["_env"].ge(0) & loads["load_s"].notna()].merge(index, on=ROW)
    place = loads.groupby(["_env", "_row"]).cumcount().to_numpy()
    grid = np.full((len(envs), len(rows), int(place.max(initial=-1)) + 1), np.nan)
    grid[loads["_env"].to_numpy(), loads["_row"].to_numpy(), place] = loads["load_s"].to_numpy()
    return grid


def _tests(grid: np.ndarray, keras: list[str]) -> dict[str, list[list[Any]]] | None:
    """`[p, verdict]` per (environment pair `"i,j"`, row), or None without scipy: p of
    `row_tests`, verdict of `family_verdicts` (null where the row was not tested).

    Only pairs of environments with the same Keras (`keras[i]`) are tested: the page calls
    every cell of any other pair not comparable and shows no p, and a sweep mixing Keras 3 and
    tf-keras would spend half its tests on them.
    """
    if importlib.util.find_spec("scipy") is None:
        return None
    pairs = [(i, j) for i, j in itertools.combinations(range(len(grid)), 2) if keras[i] == keras[j]]
    first, second = np.array(pairs, dtype=int).reshape(-1, 2).T
    _, rows, width = grid.shape
    counts = np.count_nonzero(~np.isnan(grid), axis=2)  # loads per (environment, row)
    with warnings.catch_warnings():  # a cell no environment measured: its median is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.nanmedian(np.where(grid > 0, grid, np.nan), axis=2) if width else counts * 0.0
    found = np.empty((2, len(first), rows))
    step = max(1, _BATCH // max(rows, 1))
    for start in range(0, len(first), step):
        a, b = first[start : start + step], second[start : start + step]
        family = (np.minimum(counts[a], counts[b]) >= 2).sum(axis=1)  # rows each pair tests
        level = np.repeat(ALPHA / np.maximum(family, 1), rows)  # `pair_alpha` of each family
        shape = (len(a) * rows, width)  # spelled out: -1 cannot be inferred when width is 0
        found[:, start : start + step] = row_tests(
            grid[a].reshape(shape), grid[b].reshape(shape), level
        ).reshape(2, len(a), rows)
    with np.errstate(all="ignore"):
        change = medians[second] / medians[first] - 1
    verdicts = family_verdicts(change, found[0], found[1])
    p_values = np.round(found[0], 4).tolist()
    return {
        f"{i},{j}": [[None if math.isnan(p) else p, v or None] for p, v in zip(ps, vs)]
        for i, j, ps, vs in zip(first.tolist(), second.tolist(), p_values, verdicts.tolist())
    }


def _cell(
    stat: tuple | None, problem: tuple | None, eviction: str, keras: str
) -> dict[str, Any] | None:
    """One environment's side of a row: its median, or its status and why; None if absent.

    `eviction` and `keras` travel along so the page can tell cells that measured different
    things apart from cells that merely differ.
    """
    if stat is None and problem is None:
        return None
    if stat is not None and not missing(stat[0]):
        return {
            "status": "ok",
            "median": float(stat[0]),
            "n": int(stat[1]),
            "text": seconds(stat[0]),
            "eviction": eviction,
            "keras": keras,
        }
    status, reason = ("missing", "") if problem is None else problem
    return {
        "status": str(status),
        "reason": "" if missing(reason) else str(reason),
        "eviction": eviction,
        "keras": keras,
    }


def _by_cell(frame: pd.DataFrame, columns: list[str]) -> dict[tuple, tuple]:
    """`columns` of a per-cell frame keyed by (env label, model, format, cache mode)."""
    return dict(
        zip(zip(*(frame[k].tolist() for k in KEY)), zip(*(frame[c].tolist() for c in columns)))
    )


def _ordered_rows(keys: list[tuple]) -> list[tuple]:
    """(model, format, cache) rows: models in the order given (the report's size order),
    formats and cache modes in catalog order."""
    model_rank = {m: i for i, m in enumerate(dict.fromkeys(k[1] for k in keys))}
    fmt_rank = {f: i for i, f in enumerate(FORMATS)}
    cache_rank = {c: i for i, c in enumerate(CACHE_MODES)}
    return sorted(
        {k[1:] for k in keys},
        key=lambda r: (
            model_rank[r[0]],
            fmt_rank.get(r[1], len(fmt_rank)),
            r[1],
            cache_rank.get(r[2], 9),
            r[2],
        ),
    )


def _default_pair(envs: list[str], keras: dict[str, str]) -> list[int]:
    """The pair the page opens on: the first two environments with the same Keras, whose cells
    can be compared at all (else simply the first two)."""
    for i, j in itertools.combinations(range(len(envs)), 2):
        if keras.get(envs[i]) == keras.get(envs[j]):
            return [i, j]
    return [0, min(1, len(envs) - 1)]


def pair_payload(
    trials: pd.DataFrame,
    stats: pd.DataFrame,
    problems: pd.DataFrame,
    environments: pd.DataFrame,
    labels: list[str],
) -> dict[str, Any]:
    """Every (model, format, cache) row with each environment's cell, and the pair p-values.

    Every frame carries the `env` label column (`labels` lists them in report order); `trials`
    are the measured ones. Environments without any cell (a skipped one, say) are left out of
    the selector, the problems table lists them.
    """
    stat_at = _by_cell(stats, ["load_median", "n"])
    problem_at = _by_cell(problems.dropna(subset=KEY), ["status", "reason"])
    present = {k[0] for k in [*stat_at, *problem_at]}
    envs = [e for e in labels if e in present]
    rows = _ordered_rows([*stat_at, *problem_at])
    evictions = _evictions(trials)
    keras = dict(zip(environments["env"].tolist(), map(str, environments["keras_impl"])))
    cells = [
        [
            _cell(
                stat_at.get((e, *r)),
                problem_at.get((e, *r)),
                evictions.get((e, *r), ""),
                keras.get(e, ""),
            )
            for r in rows
        ]
        for e in envs
    ]
    return {
        "envs": envs,
        "rows": [list(r) for r in rows],
        "cells": cells,
        "p": _tests(_sample_grid(trials, envs, rows), [keras.get(e, "") for e in envs]),
        "threshold": THRESHOLD,
        "alpha": ALPHA,
        "default": _default_pair(envs, keras),
    }


def embed_json(value: Any) -> Markup:
    """JSON safe inside `<script type="application/json">`: no `<`, `>` or `&` survives raw,
    so a name containing `</script>` cannot end the element early."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return Markup(text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))
