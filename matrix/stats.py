"""Is one set of load times really different from another?

A change is called only when it is both large (beyond a relative threshold) and larger than the
runs' own noise (a two-sided Mann-Whitney U test on the trial samples, as asv does): either
alone flags noise on a busy machine, or a meaningless 1 % shift measured very precisely. The
test is rank-based, so one stalled load cannot make a whole cell look slower.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

THRESHOLD = 0.10  # relative change of the median below which nothing is called a change
ALPHA = 0.05  # p-value below which a difference counts as more than noise
MIN_SAMPLES = 2  # a single load per side has no spread to test against

Samples = Sequence[float]


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
    """Two-sided Mann-Whitney U p of each pair; NaN with fewer than MIN_SAMPLES on a side.

    One scipy call per batch of pairs alike in sizes and in having ties: a call costs ~2 ms,
    which for the 6000 cells of a big sweep would be seconds. Batching this way gives each pair
    the p of a call of its own (scipy picks the exact or the normal method by sizes and ties).
    """
    from scipy.stats import mannwhitneyu  # scipy.stats takes ~1.5 s to import

    found = [math.nan] * len(pairs)
    batches: dict[tuple[int, int, bool], list[int]] = {}
    for i, (a, b) in enumerate(pairs):
        if min(len(a), len(b)) >= MIN_SAMPLES:
            ties = len(set(a) | set(b)) < len(a) + len(b)
            batches.setdefault((len(a), len(b), ties), []).append(i)
    for rows in batches.values():
        result = mannwhitneyu([pairs[i][0] for i in rows], [pairs[i][1] for i in rows], axis=1)
        for i, p in zip(rows, result.pvalue):
            found[i] = float(p)
    return found
