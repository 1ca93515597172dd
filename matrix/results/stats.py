"""Is one set of load times really different from another, and could the test have told?

One rule for `matrix compare`, `matrix history` and the report (`judge` says why each part):
Welch's t-test on log load times, Benjamini-Hochberg over the cells judged together, a change
only past the threshold AND significant, and `same` only where the test could have seen a
change of the threshold's size (else `underpowered`). README and docs/records.md state it too.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

# THRESHOLD, ALPHA and POWER are defined where the harness applies the same rule in-run
# (`--repeats auto`, forked trials' controls), which may import only the standard library.
from harness.precision import ALPHA, POWER, THRESHOLD

if TYPE_CHECKING:  # imported where it is used: `matrix` starts without it
    import numpy as np

MIN_SAMPLES = 2  # a single load per side has no spread to test against
VERDICTS = ("slower", "faster", "underpowered", "same", "not comparable")

Samples = Sequence[float]


@dataclass(frozen=True)
class Change:
    """What `judge` found for one pair of cells (see `judge` for the rule)."""

    median_a: float
    median_b: float
    change: float  # median_b / median_a - 1: +0.3 is 30 % slower
    p_value: float  # Welch's t-test on the log load times, two-sided, not adjusted
    detectable: float  # the smallest relative change the test would flag with power POWER
    spread: float  # standard deviation of the log load times, pooled over both sides
    verdict: str  # one of VERDICTS


def judge(
    pairs: Sequence[tuple[Samples, Samples]], threshold: float = THRESHOLD, alpha: float = ALPHA
) -> list[Change]:
    """The verdict on each pair's samples `b` against its samples `a` (higher is slower), the
    pairs being one family judged together.

    - Welch's t-test on log(load time): loads vary by ratios (a machine half as fast doubles
      every load), so on the log scale a slowdown is a shift and spreads compare across cells;
      Welch does not assume both runs equally noisy. A rank test cannot serve: 3 loads against
      3 have 20 orderings, so its smallest two-sided p is 0.1, never below alpha 0.05.
    - The family: every cell of a `compare`, every series of a `history` step. A default run
      has ~16 cells, and 16 tests at alpha 0.05 would fail one quiet night in two, so
      significance is Benjamini-Hochberg at alpha over the family: when nothing changed, the
      chance of any flag is at most alpha, and a regression in several cells is not drowned
      by the correction as with Bonferroni.
    - `slower` / `faster`: the medians differ by more than the threshold (change = median_b /
      median_a - 1) AND significantly; either alone flags noise on a busy machine, or a
      meaningless 1 % shift measured very precisely.
    - Otherwise `same` only if the test could have seen a change of the threshold's size: the
      minimal detectable change MDC = exp((t[1 - a/2, df] + t[POWER, df]) * SE) - 1 (SE and df
      Welch's, of the log means; a = `pair_alpha`, the level a lone change among the family
      must reach) is within the threshold; else `underpowered`, as "no change seen" would be
      an empty claim.
    - `not comparable`: fewer than MIN_SAMPLES loads on a side (no spread to test against).
    """
    clean = [
        ([x for x in a if not math.isnan(x)], [x for x in b if not math.isnan(x)]) for a, b in pairs
    ]
    family = sum(1 for a, b in clean if _testable(a) and _testable(b))
    tests = row_tests(
        padded([a for a, _ in clean]), padded([b for _, b in clean]), pair_alpha(alpha, family)
    )
    p_values = tests[0].tolist()
    significant = _benjamini_hochberg(p_values, alpha)
    return [
        _change(a, b, p, mdc, threshold, sig)
        for (a, b), p, mdc, sig in zip(clean, p_values, tests[1].tolist(), significant)
    ]


def pair_alpha(alpha: float, family: int) -> float:
    """The level one pair must reach alone among `family` pairs judged together (Bonferroni's,
    which is Benjamini-Hochberg's when one change stands alone): what the MDC is computed at."""
    return alpha / max(family, 1)


def family_verdicts(
    change: np.ndarray,
    p: np.ndarray,
    detectable: np.ndarray,
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
) -> np.ndarray:
    """`judge`'s verdicts for many families at once, one family a row of the (families, pairs)
    arrays, for the report's every pair of environments: `change` is median_b / median_a - 1,
    `p` Welch's p (NaN: untested, verdict ""), `detectable` the MDC; `threshold` and `alpha`
    as in `judge`."""
    import numpy as np

    tested = ~np.isnan(p)
    ordered = np.sort(p, axis=1)  # NaN last
    ranks = np.arange(1, p.shape[1] + 1)
    bound = alpha * ranks / np.maximum(tested.sum(axis=1, keepdims=True), 1)
    with np.errstate(invalid="ignore"):
        cut = np.where(ordered <= bound, ordered, -1.0).max(axis=1, initial=-1.0)
        significant = tested & (p <= cut[:, None]) & (np.abs(change) > threshold)
    out = np.where(detectable <= threshold, "same", "underpowered").astype(object)
    out[significant] = np.where(change[significant] > 0, "slower", "faster")
    out[~tested] = ""
    return out


def _testable(samples: Samples) -> bool:
    return len(samples) >= MIN_SAMPLES and min(samples) > 0


def _benjamini_hochberg(p_values: list[float], alpha: float) -> list[bool]:
    """Which p-values Benjamini-Hochberg rejects at `alpha` (NaN: untested, never rejected)."""
    tested = sorted(p for p in p_values if not math.isnan(p))
    passing = [p for rank, p in enumerate(tested, start=1) if p <= alpha * rank / len(tested)]
    cut = max(passing, default=-1.0)
    return [not math.isnan(p) and p <= cut for p in p_values]


def _change(
    a: Samples, b: Samples, p_value: float, detectable: float, threshold: float, significant: bool
) -> Change:
    median_a = statistics.median(a) if a else math.nan
    median_b = statistics.median(b) if b else math.nan
    if math.isnan(p_value):  # too few samples, or a non-positive time (no log)
        return Change(median_a, median_b, math.nan, math.nan, math.nan, math.nan, "not comparable")
    change = median_b / median_a - 1
    return Change(
        median_a,
        median_b,
        change,
        p_value,
        detectable,
        _pooled_spread(a, b),
        verdict(change, significant, detectable, threshold),
    )


def verdict(
    change: float, significant: bool, detectable: float, threshold: float = THRESHOLD
) -> str:
    """The rule's verdict on a tested pair (see `judge`)."""
    if abs(change) > threshold and significant:
        return "slower" if change > 0 else "faster"
    return "same" if detectable <= threshold else "underpowered"


def _pooled_spread(a: Samples, b: Samples) -> float:
    """Standard deviation of the log times, the two sides' variances averaged."""
    variances = [statistics.variance([math.log(x) for x in side]) for side in (a, b)]
    return math.sqrt(sum(variances) / 2)


def detectable_at(spread: float, repeats: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The MDC of two cells of `repeats` loads each whose log times have standard deviation
    `spread` (Welch's df is then 2 * repeats - 2)."""
    return float(_detectable(spread * math.sqrt(2 / repeats), 2 * repeats - 2, alpha, power))


def repeats_needed(
    spread: float,
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
    power: float = POWER,
    cap: int = 1000,
) -> int | None:
    """The fewest repeats per side (at most `cap`) whose MDC at `spread` (SD of log load times)
    is within `threshold`, testing at level `alpha` with `power`; None if even `cap` is not
    enough."""
    import numpy as np

    repeats = np.arange(MIN_SAMPLES, cap + 1)
    enough = np.flatnonzero(
        _detectable(spread * np.sqrt(2 / repeats), 2 * repeats - 2, alpha, power) <= threshold
    )
    return int(repeats[enough[0]]) if enough.size else None


def _detectable(
    se: float | np.ndarray, df: float | np.ndarray, alpha: float | np.ndarray, power: float
) -> np.ndarray:
    """exp((t[1 - alpha/2, df] + t[power, df]) * se) - 1, elementwise; 0 where se is 0 (two
    constant samples: any shift is certain), whatever df (then NaN: 0 / 0)."""
    import numpy as np
    from scipy.special import stdtrit  # Student's t quantile: what scipy.stats.t.ppf calls

    with np.errstate(invalid="ignore"):
        mdc = np.expm1((stdtrit(df, 1 - alpha / 2) + stdtrit(df, power)) * se)
    return np.where(np.asarray(se) == 0, 0.0, mdc)


def padded(samples: Sequence[Samples]) -> np.ndarray:
    """Samples as the rows of one array, each row's values first and NaN after them."""
    import numpy as np

    out = np.full((len(samples), max(map(len, samples), default=0)), np.nan)
    for row, values in zip(out, samples):
        row[: len(values)] = values
    return out


def row_tests(
    x: np.ndarray, y: np.ndarray, alpha: float | np.ndarray = ALPHA, power: float = POWER
) -> np.ndarray:
    """Welch's two-sided p and the MDC of each row of `x` against the same row of `y` (rows as
    `padded` makes them), as the rows of a (2, rows) array; NaN where a side has fewer than
    MIN_SAMPLES values or a value is not positive.

    The t statistic comes from each row's log mean and variance, all rows at once: scipy's
    `ttest_ind(equal_var=False)` gives the same p one row at a time (rows differ in length, and
    its NaN-omitting path loops over them), and the report tests every pair of environments on
    every cell, 10^5 tests for a big sweep. The t distribution is scipy.special's, which
    scipy.stats itself calls: importing scipy.stats would cost every command that tests a second.
    """
    import numpy as np
    from scipy.special import stdtr  # Student's t CDF: what scipy.stats.t.sf calls

    found = np.full((2, len(x)), np.nan)
    moments = []
    for side in (x, y):
        with np.errstate(all="ignore"):  # log of NaN padding; empty rows divide by zero
            logs = np.log(side)
            n = np.count_nonzero(~np.isnan(side), axis=1)
            mean = np.nansum(logs, axis=1) / n
            moments.append((n, mean, np.nansum((logs - mean[:, None]) ** 2, axis=1) / (n - 1)))
    (n_x, mean_x, var_x), (n_y, mean_y, var_y) = moments
    positive = ~((x <= 0).any(axis=1) | (y <= 0).any(axis=1))
    rows = np.flatnonzero((np.minimum(n_x, n_y) >= MIN_SAMPLES) & positive)
    if not rows.size:
        return found
    share_x, share_y = var_x[rows] / n_x[rows], var_y[rows] / n_y[rows]
    se = np.sqrt(share_x + share_y)
    shift = mean_y[rows] - mean_x[rows]
    with np.errstate(all="ignore"):  # se 0: both sides constant, handled below
        df = (share_x + share_y) ** 2 / (
            share_x**2 / (n_x[rows] - 1) + share_y**2 / (n_y[rows] - 1)
        )
        p = 2 * stdtr(df, -np.abs(shift) / se)
    found[0, rows] = np.where(se == 0, np.where(shift == 0, 1.0, 0.0), p)
    level = np.broadcast_to(alpha, (len(x),))[rows]  # one level for all rows, or one a row
    found[1, rows] = _detectable(se, df, level, power)
    return found
