"""How well a cell's median load time is known, and whether it is known well enough to stop.

Standard library only: the harness decides in-run, inside the measured environment, when a cell
has had enough trials (`--repeats auto`) and whether forked trials agree with fresh ones. The
interval is distribution-free (order statistics, exact binomial coverage); the power check is
the minimal detectable change of `matrix.results.stats`, with Student's t quantiles by Hill's
approximation (a unit test holds it to scipy's).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# The verdict rule's defaults (matrix.results.stats imports them from here: one source).
# THRESHOLD: the relative change of the median below which nothing is called a change. 20 %:
# this 2-core machine's speed drifts ±20 % over a day, and at the default model's spread of
# fresh-process loads (SD of log load time ~0.1) a 10 % gate over one environment's 16 cells
# would need 34 repeats a cell, 20 % needs 11 (`matrix schedule` raises repeats to that).
THRESHOLD = 0.20
ALPHA = 0.05  # p-value below which a difference counts as more than noise
POWER = 0.80  # chance of flagging a true change of the detectable size (the MDC's definition)
CONFIDENCE = 0.95
# The target half-width of a cell's median interval, relative to the median: half the
# threshold, so two cells each known that well tell a change of the threshold apart.
PRECISION = THRESHOLD / 2
# The most trials `auto` gives a cell: at the default model's fresh-process spread (SD of log
# load time ~0.1) the verdict rule's power needs 11, ±10 % needs ~6; past 20 a machine's own
# drift (±20 % over a day here) outweighs what more trials of one run would pin down.
MAX_REPEATS = 20
# The fewest loads with a 95 % interval of the median at all: (min, max) of 6 covers
# 1 - 2 / 2**6 = 96.9 %, of 5 only 93.8 %.
MIN_REPEATS = 6


def _binomial_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def median_ci(
    samples: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The distribution-free interval of the median: (x(k), x(n+1-k)) of the sorted samples,
    k the largest rank whose exact coverage 1 - 2 P(Binomial(n, 1/2) <= k-1) is at least
    `confidence`. None when even (min, max) covers less (n < 6 at 95 %)."""
    ordered = sorted(samples)
    n, k = len(ordered), 0
    while k < n // 2 and 1 - 2 * _binomial_cdf(k, n) >= confidence:
        k += 1
    if k == 0:
        return None
    return ordered[k - 1], ordered[n - k]


def relative_half_width(samples: Sequence[float], confidence: float = CONFIDENCE) -> float | None:
    """The median's interval as a relative half-width: the farther end's distance from the
    median over the median (0.1: known within ±10 %); None without an interval."""
    interval = median_ci(samples, confidence)
    median = statistics.median(samples) if samples else 0.0
    if interval is None or median <= 0:
        return None
    low, high = interval
    return max(high / median - 1, 1 - low / median)


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile t[p, df] for 0.5 < p < 1 (G. W. Hill, CACM Algorithm 396, 1970)."""
    two_tailed = 2 * (1 - p)
    if df == 1:
        return 1 / math.tan(two_tailed * math.pi / 2)
    if df == 2:
        return math.sqrt(2 / (two_tailed * (2 - two_tailed)) - 2)
    a = 1 / (df - 0.5)
    b = 48 / a**2
    c = ((20700 * a / b - 98) * a - 16) * a + 96.36
    d = ((94.5 / (b + c) - 3) / b + 1) * math.sqrt(a * math.pi / 2) * df
    x = d * two_tailed
    y = x ** (2 / df)
    if y > 0.05 + a:
        x = statistics.NormalDist().inv_cdf(two_tailed / 2)
        y = x * x
        if df < 5:
            c += 0.3 * (df - 4.5) * (x + 0.6)
        c = (((0.05 * d * x - 5) * x - 7) * x - 2) * x + b + c
        y = (((((0.4 * y + 6.3) * y + 36) * y + 94.5) / c - y - 3) / b + 1) * x
        y = math.expm1(a * y * y)
    else:
        inner = 1 / (((df + 6) / (df * y) - 0.089 * d - 0.822) * (df + 2) * 3)
        y = ((inner + 0.5 / (df + 4)) * y - 1) * (df + 1) / (df + 2) + 1 / y
    return math.sqrt(df * y)


def detectable(spread: float, repeats: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The minimal detectable change of two cells of `repeats` loads each whose log load times
    have standard deviation `spread`, at level `alpha`: exp((t[1-alpha/2, df] + t[power, df]) *
    spread * sqrt(2 / repeats)) - 1, df = 2 repeats - 2 (Welch's for equal sides)."""
    if spread == 0:
        return 0.0
    df = 2 * repeats - 2
    t_sum = t_quantile(1 - alpha / 2, df) + t_quantile(power, df)
    return math.expm1(t_sum * spread * math.sqrt(2 / repeats))


@dataclass(frozen=True)
class Target:
    """When `--repeats auto` stops a cell: its median known within `precision` (the interval's
    relative half-width at `confidence`) and a change of `threshold` detectable against a cell
    like it at the level one pair of a `family` of cells must reach; or `max_repeats` done."""

    precision: float = PRECISION
    max_repeats: int = MAX_REPEATS
    confidence: float = CONFIDENCE
    threshold: float = THRESHOLD
    alpha: float = ALPHA
    power: float = POWER


@dataclass(frozen=True)
class Progress:
    """Where a cell stands: its relative interval half-width (None: too few loads for one),
    the change it could detect, and whether it may leave the rotation (`reached`: by its
    target, not by the maximum)."""

    n: int
    half_width: float | None
    detectable: float | None
    reached: bool
    done: bool


def progress(samples: Sequence[float], target: Target, family: int) -> Progress:
    """Whether a cell of load times `samples` (all positive) has reached `target`."""
    n = len(samples)
    half = relative_half_width(samples, target.confidence)
    mdc = None
    if n >= 2:
        spread = statistics.stdev(math.log(x) for x in samples)
        mdc = detectable(spread, n, target.alpha / max(family, 1), target.power)
    reached = (
        half is not None
        and half <= target.precision
        and mdc is not None
        and mdc <= target.threshold
    )
    return Progress(n, half, mdc, reached, reached or n >= target.max_repeats)


@dataclass(frozen=True)
class Agreement:
    """Forked against fresh-process loads of the same cells, paired by round: the median of
    log(fresh / forked) as a relative change, its interval, and the verdict."""

    pairs: int
    change: float | None  # median fresh / forked - 1
    low: float | None
    high: float | None
    verdict: str  # agree | disagree | undecided


def agreement(
    pairs: Sequence[tuple[float, float]],
    threshold: float = THRESHOLD,
    confidence: float = CONFIDENCE,
) -> Agreement:
    """The verdict rule on (forked, fresh) load pairs: `disagree` when the median change is
    beyond `threshold` and its interval excludes no change (significant), `agree` when the
    whole interval is within the threshold, else `undecided` (too few pairs to tell)."""
    logs = [math.log(fresh / forked) for forked, fresh in pairs if forked > 0 and fresh > 0]
    interval = median_ci(logs, confidence)
    if not logs:
        return Agreement(0, None, None, None, "undecided")
    change = math.expm1(statistics.median(logs))
    if interval is None:
        return Agreement(len(logs), change, None, None, "undecided")
    low, high = (math.expm1(v) for v in interval)
    if abs(change) > threshold and (low > 0 or high < 0):
        verdict = "disagree"
    elif -threshold <= low and high <= threshold:
        verdict = "agree"
    else:
        verdict = "undecided"
    return Agreement(len(logs), change, low, high, verdict)
