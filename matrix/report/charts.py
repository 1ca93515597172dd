"""Inline SVG charts, drawn in Python so the report needs no chart library and no network.

Every string placed into the markup goes through `_e` (HTML escaping); everything else is a
number formatted here or a colour of our own palettes. Model names and error messages come from
users, and an SVG `<text>` can carry a `<script>` as well as any other HTML. (f-strings, not
`Markup.format`, which is several times slower: a nightly sweep draws thousands of bars.)
Tooltips are native `<title>` elements (they work offline, in print previews and with JavaScript
off); the page's small script only adds hover highlighting via `data-series`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup
from markupsafe import escape as _e

from harness.catalog import CACHE_MODES, FORMATS

# Okabe–Ito (distinguishable with the common colour-vision deficiencies), yellow swapped for a
# brown that reads on white; one fixed colour per format so every chart of a report agrees.
_CATEGORICAL = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#000000",
    "#999999",
    "#8C564B",
)
FORMAT_COLOURS = dict(zip(FORMATS, _CATEGORICAL))
CACHE_COLOURS = dict(zip(CACHE_MODES, ("#08306B", "#4292C6", "#F28E2B")))
_OTHER = "#777777"
# Viridis stops, light (fast) to dark (slow).
_HEAT = ((253, 231, 37), (94, 201, 98), (33, 145, 140), (59, 82, 139), (68, 1, 84))
_CHAR_W = 6.6  # average width of a character of the 11px sans-serif labels


@dataclass
class Mark:
    """One measured value with its spread and the tooltip that explains it."""

    value: float | None
    tooltip: str
    low: float | None = None
    high: float | None = None


def colour(name: str, palette: dict[str, str]) -> str:
    return palette.get(name, _OTHER)


def legend(items: Sequence[tuple[str, str]]) -> Markup:
    """An HTML legend (name, colour); its entries highlight their series on hover too."""
    return Markup(
        "".join(
            f'<span class="key" data-series="{_e(name)}"><i style="background:{_e(col)}"></i>'
            f"{_e(name)}</span>"
            for name, col in items
        )
    )


def _svg(width: float, height: float, label: str, parts: Sequence[str]) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" role="img" aria-label="{_e(label)}">'
        f"{''.join(parts)}</svg>"
    )


def _text(x: float, y: float, text: str, cls: str = "", anchor: str = "start") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}">{_e(text)}</text>'


def _clip(text: str, width: float) -> str:
    """Shorten a label to fit `width` pixels; the full text stays in the tooltip."""
    chars = max(4, int(width / _CHAR_W))
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _heat_fill(t: float) -> str:
    """Viridis colour for t in [0, 1]."""
    t = min(max(t, 0.0), 1.0) * (len(_HEAT) - 1)
    i = min(int(t), len(_HEAT) - 2)
    a, b = _HEAT[i], _HEAT[i + 1]
    rgb = (round(a[k] + (b[k] - a[k]) * (t - i)) for k in range(3))
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _log_position(values: Sequence[float]) -> Callable[[float], float]:
    """Map a value to [0, 1] on a log scale spanning `values` (a single value maps to 0.5)."""
    logs = [math.log10(v) for v in values if v > 0]
    low, high = (min(logs), max(logs)) if logs else (0.0, 0.0)
    if high - low < 1e-12:
        return lambda v: 0.5
    return lambda v: (math.log10(v) - low) / (high - low) if v > 0 else 0.0


def heat_map(
    rows: Sequence[str],
    cols: Sequence[str],
    cells: dict[tuple[str, str], Mark],
    fmt: Callable[[float], str],
    label: str,
) -> Markup:
    """Rows × columns coloured by log value; a missing cell is hatched with its reason."""
    label_w = min(260.0, max(len(r) for r in rows) * _CHAR_W + 16) if rows else 60.0
    cell_w = min(130.0, max([80.0, *(len(c) * _CHAR_W + 12 for c in cols)]))
    cell_h, top = 26.0, 22.0
    position = _log_position([m.value for m in cells.values() if m.value])
    parts = [
        _text(label_w + i * cell_w + cell_w / 2, 15, _clip(c, cell_w), "head", "middle")
        for i, c in enumerate(cols)
    ]
    for j, row in enumerate(rows):
        y = top + j * cell_h
        parts.append(
            f"<g><title>{_e(row)}</title>"
            f"{_text(label_w - 8, y + 17, _clip(row, label_w - 8), '', 'end')}</g>"
        )
        for i, col in enumerate(cols):
            mark = cells.get((row, col))
            x = label_w + i * cell_w
            parts.append(_heat_cell(x, y, cell_w, cell_h, col, mark, fmt, position))
    height = top + len(rows) * cell_h + 4
    return _svg(label_w + len(cols) * cell_w + 2, height, label, parts)


def _heat_cell(
    x: float,
    y: float,
    w: float,
    h: float,
    series: str,
    mark: Mark | None,
    fmt: Callable[[float], str],
    position: Callable[[float], float],
) -> str:
    rect = f'<rect x="{x + 1:.1f}" y="{y + 1:.1f}" width="{w - 2:.1f}" height="{h - 2:.1f}"'
    if mark is None or mark.value is None:
        tip = mark.tooltip if mark else "not measured"
        return (
            f'<g data-series="{_e(series)}"><title>{_e(tip)}</title>{rect} class="nodata"/>'
            f"{_text(x + w / 2, y + 17, '—', '', 'middle')}</g>"
        )
    t = position(mark.value)
    ink = "light" if t > 0.45 else ""
    return (
        f'<g data-series="{_e(series)}"><title>{_e(mark.tooltip)}</title>'
        f'{rect} fill="{_heat_fill(t)}"/>'
        f"{_text(x + w / 2, y + 17, fmt(mark.value), ink, 'middle')}</g>"
    )


def _nice_ticks(high: float) -> list[float]:
    """Round ticks from 0 to at least `high`: 3 to 7 intervals of 1, 2, 2.5 or 5 times a power
    of ten, the set that overshoots `high` least (so bars use the width they are given)."""
    if high <= 0:
        return [0.0]
    power = 10 ** math.floor(math.log10(high))
    steps = [m * power for m in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5)]

    def intervals(step: float) -> int:
        return math.ceil(high / step - 1e-9)

    step = min((s for s in steps if 3 <= intervals(s) <= 7), key=lambda s: intervals(s) * s)
    return [i * step for i in range(intervals(step) + 1)]


def bar_chart(
    groups: Sequence[str],
    series: Sequence[str],
    bars: dict[tuple[str, str], Mark],
    high: float,
    fmt: Callable[[float], str],
    label: str,
) -> Markup:
    """Horizontal grouped bars (one group per format), whiskers from `low` to `high`.

    `high` is the shared axis maximum, so the panels of one model compare at a glance.
    """
    label_w, plot_w, value_w = 128.0, 380.0, 74.0
    bar_h, group_gap, top = 10.0, 9.0, 6.0
    ticks = _nice_ticks(high)
    scale = plot_w / (ticks[-1] or 1.0)
    group_h = bar_h * len(series) + group_gap
    bottom = top + group_h * len(groups)
    parts: list[str] = []
    for tick in ticks:
        x = label_w + tick * scale
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" class="grid"/>'
        )
        parts.append(_text(x, bottom + 13, fmt(tick) if tick else "0", "tick", "middle"))
    for g, group in enumerate(groups):
        y0 = top + g * group_h
        parts.append(
            _text(
                label_w - 6, y0 + bar_h * len(series) / 2 + 4, _clip(group, label_w - 6), "", "end"
            )
        )
        marks = [(s, name, bars.get((group, name))) for s, name in enumerate(series)]
        drawn = [(s, name, m) for s, name, m in marks if m is not None and m.value is not None]
        for s, name, mark in drawn:
            parts.append(_bar(label_w, y0 + s * bar_h, bar_h, scale, name, mark, fmt))
        if not drawn:
            parts.append(_text(label_w + 4, y0 + bar_h * len(series) / 2 + 4, "no result", "tick"))
    width = label_w + plot_w + value_w
    return _svg(width, bottom + 20, label, parts)


def _bar(
    x0: float, y: float, h: float, scale: float, name: str, mark: Mark, fmt: Callable[[float], str]
) -> str:
    value = mark.value or 0.0
    low = mark.low if mark.low is not None else value
    high = mark.high if mark.high is not None else value
    mid = y + h / 2
    end = x0 + max(value, high) * scale
    return (
        f'<g data-series="{_e(name)}"><title>{_e(mark.tooltip)}</title>'
        f'<rect x="{x0:.1f}" y="{y + 1:.1f}" width="{max(value * scale, 1.0):.1f}" '
        f'height="{h - 2:.1f}" fill="{colour(name, CACHE_COLOURS)}"/>'
        f'<line x1="{x0 + low * scale:.1f}" x2="{x0 + high * scale:.1f}" y1="{mid:.1f}" '
        f'y2="{mid:.1f}" class="whisker"/>{_text(end + 4, mid + 3.5, fmt(value), "value")}</g>'
    )


def _decades(values: Sequence[float]) -> tuple[float, float]:
    """Whole-decade log10 bounds around `values`, with room so no point sits on the frame."""
    logs = [math.log10(v) for v in values if v > 0] or [0.0]
    return math.floor(min(logs) - 0.15), math.ceil(max(logs) + 0.15)


def scatter(
    series: dict[str, list[tuple[float, float, str]]],
    x_fmt: Callable[[float], str],
    y_fmt: Callable[[float], str],
    x_label: str,
    y_label: str,
    label: str,
) -> Markup:
    """Log–log scatter; each series' points (x, y, tooltip) are joined in x order."""
    left, right, top, bottom, plot_w, plot_h = 64.0, 16.0, 10.0, 42.0, 480.0, 260.0
    points = [p for pts in series.values() for p in pts]
    x_lo, x_hi = _decades([p[0] for p in points])
    y_lo, y_hi = _decades([p[1] for p in points])

    def px(v: float) -> float:
        return left + (math.log10(v) - x_lo) / (x_hi - x_lo) * plot_w

    def py(v: float) -> float:
        return top + plot_h - (math.log10(v) - y_lo) / (y_hi - y_lo) * plot_h

    parts = _log_axes(left, top, plot_w, plot_h, (x_lo, x_hi), (y_lo, y_hi), x_fmt, y_fmt)
    parts.append(_text(left + plot_w / 2, top + plot_h + 36, x_label, "head", "middle"))
    parts.append(
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" '
        f'class="head" text-anchor="middle">{_e(y_label)}</text>'
    )
    for name, pts in series.items():
        col = colour(name, FORMAT_COLOURS)
        pts = sorted(p for p in pts if p[0] > 0 and p[1] > 0)
        line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in pts)
        dots = "".join(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4.5" fill="{col}">'
            f"<title>{_e(tip)}</title></circle>"
            for x, y, tip in pts
        )
        parts.append(
            f'<g data-series="{_e(name)}"><polyline points="{line}" stroke="{col}" '
            f'class="trend"/>{dots}</g>'
        )
    return _svg(left + plot_w + right, top + plot_h + bottom, label, parts)


def _log_axes(
    left: float,
    top: float,
    w: float,
    h: float,
    xs: tuple[float, float],
    ys: tuple[float, float],
    x_fmt: Callable[[float], str],
    y_fmt: Callable[[float], str],
) -> list[str]:
    """Grid lines and labels at every whole decade of both log axes."""
    parts = [f'<rect x="{left}" y="{top}" width="{w}" height="{h}" class="frame"/>']
    for k in range(math.ceil(xs[0]), math.floor(xs[1]) + 1):
        x = left + (k - xs[0]) / (xs[1] - xs[0]) * w
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + h}" class="grid"/>')
        parts.append(_text(x, top + h + 15, x_fmt(10.0**k), "tick", "middle"))
    for k in range(math.ceil(ys[0]), math.floor(ys[1]) + 1):
        y = top + h - (k - ys[0]) / (ys[1] - ys[0]) * h
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(_text(left - 6, y + 4, y_fmt(10.0**k), "tick", "end"))
    return parts


def sparkline(points: Sequence[tuple[float | None, str]], label: str) -> Markup:
    """A small line over runs (oldest first); a run without a value has no point."""
    width, height, pad = 180.0, 26.0, 4.0
    values = [v for v, _ in points if v is not None]
    if not values:
        return Markup("")
    low, high = min(values), max(values)

    def y(v: float) -> float:  # a flat series runs along the middle
        t = (v - low) / (high - low) if high > low else 0.5
        return height - pad - t * (height - 2 * pad)

    step = (width - 2 * pad) / max(len(points) - 1, 1)
    coords = [(pad + i * step, y(v), tip) for i, (v, tip) in enumerate(points) if v is not None]
    line = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy, _ in coords)
    dots = "".join(
        f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.5"><title>{_e(tip)}</title></circle>'
        for cx, cy, tip in coords
    )
    return _svg(width, height, label, [f'<g class="spark"><polyline points="{line}"/>{dots}</g>'])


def _log_ticks(low: float, high: float) -> list[float]:
    """Round values (1, 2 and 5 times a power of ten) between two log10 bounds; only the
    powers of ten when those alone are at least three (a wide range stays readable)."""
    decades = [10.0**k for k in range(math.floor(low), math.ceil(high) + 1)]
    inside = [v for v in decades if low <= math.log10(v) <= high]
    if len(inside) >= 3:
        return inside
    return [v * m for v in decades for m in (1, 2, 5) if low <= math.log10(v * m) <= high]


def _log_range(values: Sequence[float], include: float | None = None) -> tuple[float, float]:
    """log10 bounds around the positive `values` (and `include`), padded so no mark sits on
    the frame, and at least a factor of four wide (so a flat series is not magnified)."""
    logs = [math.log10(v) for v in values if v > 0] + (
        [math.log10(include)] if include else []
    ) or [0.0]
    low, high = min(logs), max(logs)
    pad = max(0.08, (math.log10(4) - (high - low)) / 2)
    return low - pad, high + pad


def _y_axis(
    left: float,
    top: float,
    w: float,
    h: float,
    bounds: tuple[float, float],
    fmt: Callable[[float], str],
) -> tuple[Callable[[float], float], list[str]]:
    """A log y axis: the value → pixel function, and its frame, grid lines and labels."""
    low, high = bounds

    def y(v: float) -> float:
        return top + h - (math.log10(v) - low) / (high - low) * h

    parts = [f'<rect x="{left}" y="{top}" width="{w:.1f}" height="{h}" class="frame"/>']
    for tick in _log_ticks(low, high):
        parts.append(
            f'<line x1="{left}" x2="{left + w:.1f}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'class="grid"/>'
        )
        parts.append(_text(left - 5, y(tick) + 3.5, fmt(tick), "tick", "end"))
    return y, parts


def _x_labels(x: float, y: float, lines: Sequence[str], width: float) -> str:
    """A category's label under the axis, one `<tspan>` line each (version, then its Python)."""
    spans = "".join(
        f'<tspan x="{x:.1f}" dy="{0 if i == 0 else 12}">{_e(_clip(line, width))}</tspan>'
        for i, line in enumerate(lines)
        if line
    )
    return f'<text x="{x:.1f}" y="{y:.1f}" class="tick" text-anchor="middle">{spans}</text>'


def trend_chart(
    ticks: Sequence[Sequence[str]],
    series: dict[str, list[Mark | None]],
    fmt: Callable[[float], str],
    label: str,
) -> Markup:
    """Lines over ordered categories (versions), one per series on a shared log y axis, each
    point's whisker its spread; a missing point breaks the line rather than bridging it."""
    left, right, top, plot_h, bottom = 58.0, 10.0, 8.0, 190.0, 36.0
    step = min(90.0, max(46.0, 420.0 / max(len(ticks), 1)))
    plot_w = step * len(ticks)
    values = [
        v
        for marks in series.values()
        for m in marks
        if m is not None and m.value is not None
        for v in (m.value, m.low or m.value, m.high or m.value)
    ]
    y, parts = _y_axis(left, top, plot_w, plot_h, _log_range(values), fmt)
    for i, lines in enumerate(ticks):
        parts.append(_x_labels(left + (i + 0.5) * step, top + plot_h + 14, lines, step - 4))
    spread = min(4.0, step / (2 * max(len(series), 1)))  # whiskers of one x side by side
    for s, (name, marks) in enumerate(series.items()):
        col = colour(name, FORMAT_COLOURS)
        dx = (s - (len(series) - 1) / 2) * spread
        points = [(left + (i + 0.5) * step + dx, m) for i, m in enumerate(marks) if m and m.value]
        runs: list[list[str]] = [[]]
        for i, m in enumerate(marks):
            if m is None or not m.value:
                runs.append([])
            else:
                runs[-1].append(f"{left + (i + 0.5) * step + dx:.1f},{y(m.value):.1f}")
        lines = "".join(
            f'<polyline points="{" ".join(run)}" stroke="{col}" class="trend"/>'
            for run in runs
            if len(run) > 1
        )
        dots = "".join(
            f"<g><title>{_e(m.tooltip)}</title>"
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y(m.low or m.value):.1f}" '
            f'y2="{y(m.high or m.value):.1f}" stroke="{col}" class="spread"/>'
            f'<circle cx="{x:.1f}" cy="{y(m.value):.1f}" r="3.5" fill="{col}"/></g>'
            for x, m in points
            if m.value
        )
        parts.append(f'<g data-series="{_e(name)}">{lines}{dots}</g>')
    return _svg(left + plot_w + right, top + plot_h + bottom, label, parts)


def ratio_chart(
    groups: Sequence[Sequence[str]],
    series: Sequence[str],
    bars: dict[tuple[int, str], Mark],
    settled: set[tuple[int, str]],
    fmt: Callable[[float], str],
    label: str,
) -> Markup:
    """Bars of a ratio from the 1× line on a log axis, grouped by category (a TF version), one
    per series (a format) with its whisker. Bars not in `settled` (no change the test could
    call) are drawn faint: their length alone is no evidence."""
    left, right, top, plot_h, bottom = 58.0, 10.0, 8.0, 170.0, 36.0
    bar_w = 14.0 if len(series) <= 4 else 8.0
    group_w = max(bar_w * len(series) + 20.0, 72.0)
    plot_w = group_w * len(groups)
    values = [v for m in bars.values() for v in (m.value, m.low, m.high) if v]
    y, parts = _y_axis(left, top, plot_w, plot_h, _log_range(values, 1.0), fmt)
    one = y(1.0)
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w:.1f}" y1="{one:.1f}" y2="{one:.1f}" class="unit"/>'
    )
    for g, lines in enumerate(groups):
        x0 = left + g * group_w + (group_w - bar_w * len(series)) / 2
        parts.append(_x_labels(left + (g + 0.5) * group_w, top + plot_h + 14, lines, group_w))
        for s, name in enumerate(series):
            mark = bars.get((g, name))
            if mark is None or not mark.value:
                continue
            x, end = x0 + s * bar_w, y(mark.value)
            mid = x + bar_w / 2
            faint = "" if (g, name) in settled else ' class="unsure"'
            parts.append(
                f'<g data-series="{_e(name)}"{faint}><title>{_e(mark.tooltip)}</title>'
                f'<rect x="{x + 1:.1f}" y="{min(one, end):.1f}" width="{bar_w - 2:.1f}" '
                f'height="{max(abs(one - end), 1.0):.1f}" fill="{colour(name, FORMAT_COLOURS)}"/>'
                f'<line x1="{mid:.1f}" x2="{mid:.1f}" y1="{y(mark.low or mark.value):.1f}" '
                f'y2="{y(mark.high or mark.value):.1f}" class="whisker"/></g>'
            )
    return _svg(left + plot_w + right, top + plot_h + bottom, label, parts)
