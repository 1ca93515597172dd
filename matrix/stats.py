"""Is one set of load times really different from another?

A change is called only when it is both large (beyond a relative threshold) and larger than the
runs' own noise (a two-sided Mann-Whitney U test on the trial samples, as asv does): either
alone flags noise on a busy machine, or a meaningless 1 % shift measured very precisely. The
test is rank-based, so one stalled load cannot make a whole cell look slower.
"""

from __future__ import annotations

import importlib
import math
import multiprocessing
import os
import statistics
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where they are used: `matrix` starts without them
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np

THRESHOLD = 0.10  # relative change of the median below which nothing is called a change
ALPHA = 0.05  # p-value below which a difference counts as more than noise
MIN_SAMPLES = 2  # a single load per side has no spread to test against

Samples = Sequence[float]
_tester: ProcessPoolExecutor | None = None  # the worker `start_tests` started, if any


@dataclass(frozen=True)
class Change:
    """Median before and after, the relative change, its p-value and the verdict."""

    median_a: float
    median_b: float
    change: float  # (b - a) / a: +0.3 is 30 % slower
    p_value: float
    verdict: str  # slower | faster | same | not comparable


def judge(
    pairs: Sequence[tuple[Samples, Samples]], threshold: float = THRESHOLD, alpha: float = ALPHA
) -> list[Change]:
    """The verdict on each pair's samples `b` against its samples `a` (higher is slower)."""
    clean = [([x for x in a if not math.isnan(x)], [x for x in b if not math.isnan(x)])
             for a, b in pairs]
    return [_verdict(a, b, p, threshold, alpha) for (a, b), p in zip(clean, p_values(clean))]


def _verdict(a: Samples, b: Samples, p_value: float, threshold: float, alpha: float) -> Change:
    median_a = statistics.median(a) if a else math.nan
    median_b = statistics.median(b) if b else math.nan
    if math.isnan(p_value) or median_a <= 0:
        return Change(median_a, median_b, math.nan, math.nan, "not comparable")
    change = (median_b - median_a) / median_a
    if abs(change) <= threshold or p_value >= alpha:
        verdict = "same"
    else:
        verdict = "slower" if change > 0 else "faster"
    return Change(median_a, median_b, change, p_value, verdict)


def p_values(pairs: Sequence[tuple[Samples, Samples]]) -> list[float]:
    """Two-sided Mann-Whitney U p of each pair; NaN with fewer than MIN_SAMPLES on a side."""
    xs, ys = padded([a for a, _ in pairs]), padded([b for _, b in pairs])
    return [float(p) for p in row_p_values(xs, ys)]


def padded(samples: Sequence[Samples]) -> np.ndarray:
    """Samples as the rows of one array, each row's values first and NaN after them."""
    import numpy as np

    out = np.full((len(samples), max(map(len, samples), default=0)), np.nan)
    for row, values in zip(out, samples):
        row[: len(values)] = values
    return out


def start_tests() -> None:
    """Start importing scipy.stats in a worker process, where `row_p_values` then tests.

    The import takes ~1.2 s, a third of reporting 10^5 records, and every command that tests
    (report, compare, history) first spends seconds parsing records on one core: a second core
    does the import meanwhile (on a host with no core to spare it gains nothing, and costs only
    the worker's start). Calling it again does nothing; the worker exits with the interpreter:
    concurrent.futures joins it, which waits for the import if it is still running.
    """
    from concurrent.futures import ProcessPoolExecutor

    global _tester
    if _tester is None:
        _tester = ProcessPoolExecutor(max_workers=1, initializer=_end_with_parent)
        _tester.submit(importlib.import_module, "scipy.stats")


def _end_with_parent() -> None:
    """In the worker: end it as soon as its parent ends, however that ends.

    concurrent.futures stops its workers when the interpreter exits normally; `matrix` exits
    with os._exit (see `matrix.cli.main`), and a kill or a crash skips the exit too, which would
    leave the worker waiting for work forever.
    """
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(0)), daemon=True).start()


def row_p_values(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-sided Mann-Whitney U p of each row of `x` against the same row of `y` (rows as
    `padded` makes them); NaN where a side has fewer than MIN_SAMPLES values.

    Computed in the worker of `start_tests` if one was started; here if not, or if it died
    (a report must not fail because a helper process was killed).
    """
    global _tester
    if _tester is not None:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return _tester.submit(_row_p_values, x, y).result()
        except BrokenProcessPool:
            _tester = None
    return _row_p_values(x, y)


def _row_p_values(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`row_p_values`, in this process.

    One scipy call per group of rows alike in sizes and in having ties: a call costs ~2 ms,
    and the report tests every pair of environments on every cell (10^5 tests for a big sweep).
    Grouping this way gives each row the p of a call of its own (scipy picks the exact or the
    normal method by sizes and ties).
    """
    import numpy as np
    from scipy.stats import mannwhitneyu  # scipy.stats takes ~1 s to import

    found = np.full(len(x), np.nan)
    n_x, n_y = (np.count_nonzero(~np.isnan(side), axis=1) for side in (x, y))
    both = np.sort(np.concatenate([x, y], axis=1), axis=1)  # NaN sorts last and equals nothing
    ties = (both[:, 1:] == both[:, :-1]).any(axis=1)
    tested = np.flatnonzero(np.minimum(n_x, n_y) >= MIN_SAMPLES)
    kind = ((n_x * (y.shape[1] + 1) + n_y) * 2 + ties)[tested]  # one number per (sizes, ties)
    order = np.argsort(kind, kind="stable")
    starts = np.flatnonzero(np.diff(kind[order]))
    for rows in np.split(tested[order], starts + 1) if tested.size else []:
        size_x, size_y = n_x[rows[0]], n_y[rows[0]]
        with np.errstate(all="ignore"):  # identical samples: scipy's p is NaN, not a warning
            found[rows] = mannwhitneyu(x[rows, :size_x], y[rows, :size_y], axis=1).pvalue
    return found
