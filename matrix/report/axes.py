"""Views along one axis of the matrix (TF version, device, Keras, Python), the others held fixed.

An engineer picking a TensorFlow version, a device, a Keras or a Python asks what that one
change does to each format's start-up, so each view compares environments that differ in its
axis alone. Python is the exception: `python: auto` moves it with TF, and holding it fixed would
leave nothing to compare, so it is then released and each point names its Python.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from matrix.report.charts import FORMAT_COLOURS, Mark, colour, legend, ratio_chart, trend_chart
from matrix.report.order import natural_rank, natural_sorted
from matrix.report.sections import ReportFrames, Section
from matrix.report.text import factor, grouped, seconds
from matrix.results.dataset import measured, sample_lists
from matrix.results.stats import (
    ALPHA,
    MIN_SAMPLES,
    family_verdicts,
    padded,
    pair_alpha,
    row_tests,
)

# The axes in the order their views are shown: the design card's first questions first.
AXES = {"tf": "TensorFlow", "device": "CPU vs GPU", "keras": "Keras", "python": "Python"}
# The figures a view can show, by trial field; the first is shown first.
METRICS = {
    "first_prediction_s": "time to first prediction",
    "load_s": "load",
    "import_s": "import",
    "cold_start_s": "cold start",
}
POINT = ["env", "model", "format", "cache_mode"]
# Panels a view draws in all (its metrics × cache modes share them): past this, each metric and
# cache mode keeps its fullest panels. Every panel is drawn once per metric and cache mode, so
# this bounds a big sweep's page (a panel of nine formats over six versions is ~15 kB).
MAX_PANELS = 24
_ORDER = {"device": ["cpu", "gpu"], "keras": ["default", "legacy"]}  # baseline first


@dataclass(frozen=True)
class Arrangement:
    """How a view compares: the axes it holds fixed, whether Python was released to move with
    its axis, and the environments it uses (one per held values and axis value)."""

    axis: str
    held: list[str]
    released: bool
    envs: pd.DataFrame
    values: list[str]
    named: list[str]  # the held axes a panel's title names: those that vary in the runs


@dataclass
class Panel(abc.ABC):
    """One panel of a view: its name, the metric and cache mode it shows, its category ticks
    (each one to two lines: a version, then the Python it ran on where that moves too)."""

    title: str
    metric: str
    cache_mode: str
    ticks: list[list[str]]

    @property
    def size(self) -> int:
        return len(self.ticks)

    @property
    def figure(self) -> str:
        return METRICS[self.metric]

    @property
    @abc.abstractmethod
    def svg(self) -> Markup:
        """The panel drawn (only for the panels kept: drawing is most of a view's cost)."""


@dataclass
class TrendPanel(Panel):
    """A panel along a version axis: per format, a mark per tick (None: not measured)."""

    series: dict[str, list[Mark | None]]

    @property
    def svg(self) -> Markup:
        return trend_chart(self.ticks, self.series, seconds, f"{self.figure} of {self.title}")


@dataclass
class RatioPanel(Panel):
    """A panel of ratios to an axis's baseline: per (tick, format) a ratio mark; `settled`
    the bars whose difference the rule of `matrix compare` confirmed."""

    formats: list[str]
    bars: dict[tuple[int, str], Mark]
    settled: set[tuple[int, str]]

    @property
    def svg(self) -> Markup:
        label = f"{self.figure}: {self.title}"
        return ratio_chart(self.ticks, self.formats, self.bars, self.settled, factor, label)


@dataclass
class AxisView:
    """A view of one axis: its panels, or the one line saying why it has nothing to compare."""

    axis: str
    name: str
    note: str
    panels: list[Panel] = field(default_factory=list)
    left_out: int = 0  # panels of the fullest metric and cache mode not drawn
    per_figure: int = 0  # panels kept per metric and cache mode


def environment_axes(environments: pd.DataFrame) -> pd.DataFrame:
    """Per reported environment (its `env` label): its value on each axis.

    TF is the release recorded; Python its minor (a patch is the base image's business); the
    device `gpu` when TF saw one; Keras `legacy` for tf-keras, else `default` (Keras 2 up to
    TF 2.15, Keras 3 from 2.16: that change is part of the TF trend, not of the Keras axis).
    """
    envs = environments.dropna(subset=["tensorflow"])
    python = envs["python"].astype(str)
    return pd.DataFrame(
        {
            "run_id": envs["run_id"].astype(str),
            "env": envs["env"].astype(str),
            "tf": envs["tensorflow"].astype(str),
            "python": python.str.extract(r"^(\d+\.\d+)", expand=False).fillna(python),
            "device": envs["gpus"].map(_device),
            "keras": envs["keras_impl"].map(lambda k: "legacy" if k == "tf-keras" else "default"),
            "keras_impl": envs["keras_impl"].fillna("").astype(str),
            "machine": _machine(envs),
        }
    ).reset_index(drop=True)


def _machine(envs: pd.DataFrame) -> pd.Series:
    """The CPU model each environment ran on: held fixed by every view (never an axis), so
    runs merged from two machines are never compared across them."""
    if "cpu_model" not in envs:
        return pd.Series("unknown", index=envs.index)
    return envs["cpu_model"].fillna("unknown").astype(str)


def _device(gpus: Any) -> str:
    return "gpu" if isinstance(gpus, (list, tuple)) and len(gpus) else "cpu"


def metric_points(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (env, model, format, cache mode, metric): n, median, quartiles and the samples of
    each METRICS figure over the measured trials (`trials` carries the `env` label)."""
    ok = measured(trials)
    # A forked trial carries its zygote's one import: N copies of it are not N samples.
    once = [m for m in ("import_s", "cold_start_s") if m in METRICS]
    ok = ok.assign(**{m: ok[m].where(ok["process"].ne("forked")) for m in once})
    ok = ok[POINT + list(METRICS)].assign(env=ok["env"].astype(str))
    long = ok.melt(id_vars=POINT, var_name="metric", value_name="value")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    long = long[long["value"] > 0]  # log scales and tests: a time is positive
    keys = [*POINT, "metric"]
    values = long.groupby(keys, sort=False)["value"]
    stats = pd.DataFrame(
        {
            "n": values.count(),
            "median": values.median(),
            "q1": values.quantile(0.25),
            "q3": values.quantile(0.75),
        }
    ).reset_index()
    return stats.merge(sample_lists(long, keys, "value"), on=keys)


def ordered_values(axis: str, values: Sequence[str]) -> list[str]:
    """An axis's values, baseline first: versions in natural order, CPU before GPU, the
    default Keras before tf-keras."""
    if axis in _ORDER:
        return sorted(set(values), key=lambda v: (_ORDER[axis] + [v]).index(v))
    return natural_sorted(set(values))


def arrange(envs: pd.DataFrame, axis: str) -> Arrangement | str:
    """How the view of `axis` compares `envs` (`environment_axes`), or why it cannot."""
    values = ordered_values(axis, envs[axis].tolist())
    if len(values) < 2:
        return _single(axis, values)
    held = [a for a in AXES if a != axis] + ["machine"]
    released = "python" in held and not _every_value_compared(envs, axis, held)
    if released:
        held.remove("python")
    # Merged runs may repeat an environment, and a released Python may offer several: the
    # latest run and the newest Python stand for the point.
    latest = envs.sort_values("run_id", kind="stable")
    latest = latest.sort_values("python", key=natural_rank, kind="stable")
    chosen = latest.drop_duplicates([*held, axis], keep="last")
    compared = chosen.groupby(held, dropna=False)[axis].transform("nunique") >= 2
    if not compared.any():
        return (
            f"{AXES[axis]} varies ({', '.join(values)}) only together with another axis or "
            "the CPU model: no two environments differ in it alone."
        )
    named = [a for a in held if envs[a].nunique() > 1]
    return Arrangement(axis, held, released, chosen[compared], values, named)


def _every_value_compared(envs: pd.DataFrame, axis: str, held: list[str]) -> bool:
    """Whether holding `held` fixed still compares every value of `axis` with another."""
    compared = envs.groupby(held, dropna=False)[axis].transform("nunique") >= 2
    return set(envs.loc[compared, axis]) == set(envs[axis])


def _single(axis: str, values: list[str]) -> str:
    """The one line of a view whose axis did not vary."""
    only = values[0] if values else "none"
    return {
        "tf": f"One TensorFlow version ({only}): no trend to draw.",
        "device": f"Only {value_label('device', only)} environments ran: nothing to compare "
        "(GPU environments need a host with a GPU).",
        "keras": f"Every environment used {value_label('keras', only)}: tf-keras "
        "(`keras: legacy`, TF >= 2.16) was not measured.",
        "python": f"One Python ({only}): nothing to compare.",
    }[axis]


def value_label(axis: str, value: str) -> str:
    """How a value of an axis is named on the page."""
    return {
        "tf": f"TF {value}",
        "python": f"Python {value}",
        "device": value.upper(),
        "keras": "tf-keras" if value == "legacy" else "the default Keras",
        "machine": value,
    }[axis]


def _title(model: str, held: dict[str, str], arr: Arrangement) -> str:
    """A panel's name: its model and the held values that vary in the runs."""
    names = {"keras": lambda v: "tf-keras" if v == "legacy" else "default Keras"}
    named = [a for a in arr.named if a in held]
    parts = [names.get(a, lambda v, a=a: value_label(a, v))(held[a]) for a in named]
    return " · ".join([model, *parts])


def _tooltip(row: Any, what: str) -> str:
    return (
        f"{row.format} · {METRICS[row.metric]} · {what}\n{row.env}: median "
        f"{seconds(row.median)} (n={int(row.n)}), IQR {seconds(row.q1)} – {seconds(row.q3)}"
    )


def _panels(frame: pd.DataFrame, keys: list[str], models: list[str]) -> dict[tuple, list[Any]]:
    """The rows of each panel (`keys`) in page order: models as the report orders them, the
    other keys naturally. Rows as `grouped` makes them: a sweep has thousands of panels."""
    rank = {m: i for i, m in enumerate(models)}
    order = frame.assign(_model=frame["model"].map(rank))
    order = order.sort_values(
        ["_model", *keys[1:]], key=lambda c: c if c.name == "_model" else natural_rank(c)
    )
    shown = [c for c in order.columns if not c.startswith(("_", "samples"))]
    return grouped(order[shown], keys)


def trend_panels(
    points: pd.DataFrame, arr: Arrangement, formats: list[str], models: list[str]
) -> list[Panel]:
    """Per model and held values: one line per format along the axis (versions), whiskers the
    IQR."""
    pts = points.merge(arr.envs, on="env")
    keys = ["model", *arr.held, "metric", "cache_mode"]
    out: list[Panel] = []
    for key, rows in _panels(pts, keys, models).items():
        at = {(r.format, getattr(r, arr.axis)): r for r in rows}
        xs = [v for v in arr.values if v in {x for _, x in at}]
        if len(xs) < 2:
            continue
        pythons = {getattr(r, arr.axis): r.python for r in rows}
        named = arr.released and len(set(pythons.values())) > 1
        ticks = [[x, f"py{pythons[x]}" if named else ""] for x in xs]
        series = {
            f: [
                Mark(r.median, _tooltip(r, value_label(arr.axis, x)), r.q1, r.q3)
                if (r := at.get((f, x)))
                else None
                for x in xs
            ]
            for f in formats
            if f in {r.format for r in rows}
        }
        held = dict(zip(arr.held, key[1:-2]))
        out.append(TrendPanel(_title(key[0], held, arr), key[-2], key[-1], ticks, series))
    return out


def judged(pairs: pd.DataFrame) -> pd.DataFrame:
    """`pairs` (with `samples_a`, `samples_b`) plus `change`, `p_value` and `verdict` by the rule
    of `matrix compare`, all pairs one family: `judge`'s rule, on arrays (10^4 pairs in a
    sweep; `judge` loops in Python)."""
    a, b = padded(pairs["samples_a"].tolist()), padded(pairs["samples_b"].tolist())
    counts = np.minimum((~np.isnan(a)).sum(axis=1), (~np.isnan(b)).sum(axis=1))
    tests = row_tests(a, b, pair_alpha(ALPHA, int((counts >= MIN_SAMPLES).sum())))
    with np.errstate(all="ignore"):
        change = np.nanmedian(b, axis=1) / np.nanmedian(a, axis=1) - 1 if len(pairs) else a[:, 0]
    verdicts = family_verdicts(change[None, :], tests[:1], tests[1:])[0]
    return pairs.assign(
        change=change,
        p_value=tests[0],
        verdict=np.where(verdicts == "", "not comparable", verdicts).astype(str),
    )


def ratio_pairs(points: pd.DataFrame, arr: Arrangement) -> pd.DataFrame:
    """Every cell measured at the axis's baseline value and at another, all else held: the
    two sides' figures (`_a` baseline, `_b` other) and their verdict (`judged`, one family
    per metric)."""
    pts = points.merge(arr.envs, on="env")
    base = pts[pts[arr.axis] == arr.values[0]]
    on = ["model", "format", "cache_mode", "metric", *arr.held]
    frames = [
        base.merge(pts[pts[arr.axis] == other], on=on, suffixes=("_a", "_b"))
        for other in arr.values[1:]
    ]
    pairs = pd.concat(frames, ignore_index=True)
    parts = [judged(family) for _, family in pairs.groupby("metric", sort=False)]
    return pd.concat(parts, ignore_index=True) if parts else judged(pairs)


def adjacent_pairs(points: pd.DataFrame, arr: Arrangement) -> pd.DataFrame:
    """Every cell measured at two neighbouring values of the axis (the next one measured),
    all else held: the two sides' figures, `_a` the earlier value and `_b` the later."""
    pts = points.merge(arr.envs, on="env")
    on = ["model", "format", "cache_mode", "metric", *arr.held]
    rank = {v: i for i, v in enumerate(arr.values)}
    ordered = pts.iloc[pts[arr.axis].map(rank).argsort(kind="stable")]
    sides = [c for c in ordered.columns if c not in on]
    later = ordered.groupby(on, dropna=False, sort=False)[sides].shift(-1)
    pairs = pd.concat(
        [ordered[on], ordered[sides].add_suffix("_a"), later.add_suffix("_b")], axis=1
    )
    return pairs[pairs["env_b"].notna()].reset_index(drop=True)


def ratio_panels(
    points: pd.DataFrame, arr: Arrangement, formats: list[str], models: list[str]
) -> list[Panel]:
    """Per model and held values: per TF version, each format's ratio of the other value to the
    baseline (GPU ÷ CPU, tf-keras ÷ Keras 3, newer ÷ older Python), side by side."""
    pairs = ratio_pairs(points, arr)
    rest = [a for a in arr.held if a != "tf"]
    keys = ["model", *rest, f"{arr.axis}_b", "metric", "cache_mode"]
    base = value_label(arr.axis, arr.values[0])
    out: list[Panel] = []
    for key, rows in _panels(pairs, keys, models).items():
        other = value_label(arr.axis, key[len(rest) + 1])
        versions = natural_sorted({r.tf for r in rows})
        steps: dict[str, set[str]] = {}
        for r in rows:
            steps.setdefault(r.tf, set()).add(
                f"py{r.python_a}→{r.python_b}" if arr.released else ""
            )
        ticks = [[v, " ".join(sorted(steps[v]))] for v in versions]
        slot = {v: i for i, v in enumerate(versions)}
        bars, settled = {}, set()
        for r in rows:
            where = (slot[r.tf], r.format)
            bars[where] = Mark(
                r.median_b / r.median_a,
                f"{r.format} · {METRICS[r.metric]} · TF {r.tf}\n{other} ÷ {base}: "
                f"{factor(r.median_b / r.median_a)} ({seconds(r.median_b)} in {r.env_b}, "
                f"{seconds(r.median_a)} in {r.env_a}; n={int(r.n_b)}/{int(r.n_a)})\n"
                f"verdict: {r.verdict}",
                r.q1_b / r.q3_a,
                r.q3_b / r.q1_a,
            )
            if r.verdict in ("slower", "faster"):
                settled.add(where)
        shown = [f for f in formats if f in {r.format for r in rows}]
        title = f"{_title(key[0], dict(zip(rest, key[1:-3])), arr)} · {other} ÷ {base}"
        out.append(RatioPanel(title, key[-2], key[-1], ticks, shown, bars, settled))
    return out


def points_of(f: ReportFrames) -> pd.DataFrame:
    """`metric_points` of the report's trials, made once for every section that reads them."""
    return f.shared("axis points", lambda: metric_points(f.trials))


def axis_views(f: ReportFrames) -> list[AxisView]:
    """One view per axis (AXES order): TF as lines over versions, the others as ratios to
    their baseline per TF version."""
    envs, points, formats, models = environment_axes(f.reported), points_of(f), f.formats, f.models
    views = []
    for axis, name in AXES.items():
        arr = arrange(envs, axis)
        if isinstance(arr, str):
            views.append(AxisView(axis, name, arr))
            continue
        found = (trend_panels if axis == "tf" else ratio_panels)(points, arr, formats, models)
        view = AxisView(axis, name, _held_note(arr))
        _keep_fullest(view, found)
        if not view.panels:
            view.note = f"{name}: no cell was measured on both sides of a comparison."
        views.append(view)
    return views


def _held_note(arr: Arrangement) -> str:
    """What a view holds fixed, and what it released, in one line."""
    names = {**AXES, "device": "device", "machine": "CPU model"}
    held = ", ".join(names[a] for a in arr.held)
    note = f"Held fixed in each panel: model, cache mode, {held}."
    if arr.released:
        note += (
            " Python moves with this axis in these runs (as with python: auto), so it is not "
            "held: each point names its Python."
        )
    return note


def _keep_fullest(view: AxisView, found: list[Panel]) -> None:
    """At most MAX_PANELS panels in all, shared evenly by the metrics and cache modes, each
    keeping those with most points, in page order (a panel is drawn only if kept)."""
    by_choice: dict[tuple[str, str], list[tuple[int, Panel]]] = {}
    for i, panel in enumerate(found):
        by_choice.setdefault((panel.metric, panel.cache_mode), []).append((i, panel))
    view.per_figure = max(1, MAX_PANELS // max(len(by_choice), 1))
    kept = []
    for panels in by_choice.values():
        kept.extend(sorted(panels, key=lambda p: (-p[1].size, p[0]))[: view.per_figure])
        view.left_out = max(view.left_out, len(panels) - view.per_figure)
    view.panels = [panel for _, panel in sorted(kept, key=lambda p: p[0])]


def section(f: ReportFrames) -> Section:
    """The axis views, one tab each; the page shows one metric and cache mode at a time."""
    views = axis_views(f)
    envs = f.reported["env"].astype(str).tolist()
    alone = (
        f"One environment ({envs[0]}): no axis varies, so nothing is drawn along one."
        if len(envs) == 1
        else " ".join(v.note for v in views)
    )
    return Section(
        "axes",
        "Along an axis",
        {
            "views": views,
            "drawn": any(v.panels for v in views),
            "alone": alone,
            "metrics": list(METRICS.items()),
            "modes": f.modes,
            "mode": f.mode,
            "legend": legend([(name, colour(name, FORMAT_COLOURS)) for name in f.formats]),
        },
    )
