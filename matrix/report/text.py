"""How numbers become text in the report, and the table shape every section shares.

Load times span five orders of magnitude (a TFLite flatbuffer in microseconds, a SavedModel in
seconds), so every figure picks its own unit instead of a fixed one; a reader compares numbers,
not digits. A missing value is a dash, never `nan`: a reader must not mistake it for a result.
"""

from __future__ import annotations

import math
from collections import namedtuple
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from markupsafe import Markup, escape

DASH = "—"
MAX_ROWS = 1000  # a longer table lists this many rows and counts the rest


def grouped(frame: pd.DataFrame, keys: Sequence[str]) -> dict[tuple, list[Any]]:
    """The rows (namedtuples) of `frame` grouped by `keys`, in order of first appearance.

    One pass over the columns as lists: `itertuples`, and iterating a pyarrow string column
    at all, cost a Python call per value, seconds for the cells of a big sweep.
    """
    row = namedtuple("Row", frame.columns, rename=True)  # type: ignore[misc]
    at = [list(frame.columns).index(k) for k in keys]
    out: dict[tuple, list[Any]] = {}
    for values in zip(*(frame.iloc[:, i].tolist() for i in range(frame.shape[1]))):
        out.setdefault(tuple(values[i] for i in at), []).append(row._make(values))
    return out


def missing(value: Any) -> bool:
    """True for None, NaN and NA (pandas gives any of them for an absent measurement)."""
    return value is None or value is pd.NA or value != value  # NaN alone differs from itself


def seconds(value: Any) -> str:
    """`1.23 s`, `45.6 ms`, `789 µs`: three significant digits in the unit that fits."""
    if missing(value):
        return DASH
    v = float(value)
    size = abs(v)  # 0.9995 rounds to 1.00 at three digits: "1 s", never "1e+03 ms"
    if size >= 0.9995:
        return f"{v:.3g} s"
    if size >= 0.9995e-3:
        return f"{v * 1e3:.3g} ms"
    if size >= 0.9995e-6:
        return f"{v * 1e6:.3g} µs"
    return f"{v * 1e9:.3g} ns" if v else "0 s"


def size(value: Any) -> str:
    """Bytes in decimal units (`70.9 kB`), as `ls -h --si` and download pages show them."""
    if missing(value):
        return DASH
    v = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(v) < 1000:
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.3g} {unit}"
        v /= 1000
    return f"{v:.3g} TB"


def count(value: Any) -> str:
    """Parameter counts the way papers quote them: `9.92k`, `3.54M`."""
    if missing(value):
        return DASH
    v = float(value)
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale * 0.9995:  # 999,950 rounds to "1M" at three digits, not "1e+03k"
            return f"{v / scale:.3g}{unit}"
    return f"{v:.0f}"


def number(value: Any, digits: int = 3) -> str:
    """A plain figure (`0.0012`, `3.5e-07`) for values with no unit of their own."""
    return DASH if missing(value) else f"{float(value):.{digits}g}"


def megabytes(value: Any) -> str:
    """Memory figures the harness records in MB already."""
    return DASH if missing(value) else f"{float(value):.1f} MB"


def percent(value: Any) -> str:
    """A fraction as a signed percentage change (`+31 %`), for comparisons."""
    return DASH if missing(value) else f"{float(value) * 100:+.0f} %"


def factor(value: Any) -> str:
    """A ratio such as a speed-up: `×3.4`."""
    return DASH if missing(value) else f"×{float(value):.3g}"


def median_precision(half: Any, reached: Any) -> str:
    """How well a cell's median load is known: its 95 % interval's relative half-width
    (`±4%`), `max` after it when `--repeats auto` stopped the cell at its maximum short of its
    target; a dash under 6 loads (no distribution-free interval)."""
    if missing(half):
        return DASH
    return f"±{float(half):.0%}" + (" max" if reached is False else "")


# Terminal tables (`matrix run`'s summary, compare, history) name the unit in the column header,
# so a figure is a bare number there, and a missing one is blank.


def ms(seconds: Any) -> str:
    """Seconds as milliseconds with one decimal (blank when not measured)."""
    return "" if missing(seconds) else f"{float(seconds) * 1000:.1f}"


def tenths(value: Any) -> str:
    """A figure with one decimal (blank when missing)."""
    return "" if missing(value) else f"{float(value):.1f}"


def whole(value: Any) -> str:
    """A count as a whole number (blank when missing)."""
    return "" if missing(value) else str(int(value))


@dataclass
class Cell:
    """One table cell: what it shows, its numeric sort key if any, a class and a tooltip.

    A cell without a sort key sorts by its text (the page's script falls back to it), which
    keeps the thousands of text cells of a large report from carrying their text twice.
    """

    text: str
    sort: float | str | None = None
    cls: str = ""
    title: str = ""


def _attr(name: str, value: str) -> str:
    return f' {name}="{escape(value)}"' if value else ""


def _sort_key(value: float) -> str:
    """A number's `data-sort`, written short; a missing value is `inf`, last when ascending
    (the page aligns by it too: a cell with a key is a number, right-aligned by CSS)."""
    return "inf" if math.isinf(value) or math.isnan(value) else f"{value:.6g}"


def td(cell: Cell) -> str:
    """A cell as HTML; its text and tooltip escaped (a `Markup` text is our own markup)."""
    sort = cell.sort
    key = (
        ""
        if sort is None
        else _attr("data-sort", _sort_key(sort) if isinstance(sort, float) else str(sort))
    )
    attrs = f"{key}{_attr('class', cell.cls)}{_attr('title', cell.title)}"
    return f"<td{attrs}>{escape(cell.text)}</td>"


MISSING_TD = td(Cell(DASH, sort=math.inf))


def left_out_note(
    left_out: int,
    what: str,
    kept: str,
    where: str = "<code>matrix report --export FILE</code> writes them all.",
) -> Markup:
    """What a table cut to MAX_ROWS rows says: how many rows are missing, which rows it kept,
    and where to get them all (`where` is our own markup)."""
    return Markup("{} more {} not listed: this table keeps the {} {}. ").format(
        left_out, what, MAX_ROWS, kept
    ) + Markup(where)


@dataclass
class Table:
    """A sortable table; `numeric` columns sort by their cells' keys, others by text.

    Rows are kept as rendered HTML, escaped once here: a big report has 10^5 cells, and
    looping over them in the template cost seconds. `note` says what a shortened table left
    out.
    """

    columns: list[str]
    numeric: frozenset[int] = frozenset()
    rows: list[str] = field(default_factory=list)
    note: str = ""

    def add(self, cells: Iterable[Cell]) -> None:
        """Append a row of cells."""
        self.rows.append("".join(map(td, cells)))

    def add_columns(self, columns: Sequence[Sequence[str]]) -> None:
        """Append rows given column by column (`text_tds`, `num_tds`): building a table a
        column at a time formats each column in one tight loop."""
        self.rows.extend(map("".join, zip(*columns)))

    @property
    def body(self) -> Markup:
        """The `<tr>` elements of the table body."""
        return Markup("".join(f"<tr>{row}</tr>\n" for row in self.rows))


def num_cell(value: Any, fmt: Any = seconds, cls: str = "", title: str = "") -> Cell:
    """A number cell that sorts by its value, missing values last."""
    if missing(value):
        return Cell(DASH, sort=math.inf, cls=cls, title=title)
    return Cell(fmt(value), sort=float(value), cls=cls, title=title)


def text_cell(value: Any, cls: str = "", title: str = "") -> Cell:
    """A text cell; a missing value shows as a dash."""
    return Cell(DASH if missing(value) else str(value), cls=cls, title=title)


def text_tds(values: Iterable[Any], cls: str = "") -> list[str]:
    """A column of text cells (`text_cell` as HTML); a repeated string is escaped once."""
    attrs = _attr("class", cls)
    done: dict[str, str] = {}
    out = []
    for value in values:
        if isinstance(value, str):
            html = done.get(value) or done.setdefault(value, f"<td{attrs}>{escape(value)}</td>")
        else:
            html = f"<td{attrs}>{DASH if missing(value) else escape(str(value))}</td>"
        out.append(html)
    return out


def num_tds(values: Iterable[Any], fmt: Callable[[Any], str] = seconds, cls: str = "") -> list[str]:
    """A column of number cells (`num_cell` as HTML)."""
    attrs = _attr("class", cls)
    missing_td = f'<td data-sort="inf"{attrs}>{DASH}</td>'
    return [
        missing_td if missing(v) else f'<td data-sort="{float(v):.6g}"{attrs}>{escape(fmt(v))}</td>'
        for v in values
    ]
