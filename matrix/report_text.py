"""How numbers become text in the report, and the table shape every section shares.

Load times span five orders of magnitude (a TFLite flatbuffer in microseconds, a SavedModel in
seconds), so every figure picks its own unit instead of a fixed one; a reader compares numbers,
not digits. A missing value is a dash, never `nan`: a reader must not mistake it for a result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

DASH = "—"


def grouped(frame: pd.DataFrame, keys: Sequence[str]) -> dict[tuple, list[Any]]:
    """The rows (namedtuples) of `frame` grouped by `keys`, in order of first appearance.

    One pass over the frame: `itertuples` on each pandas group costs a copy of every column per
    group, which made a report of a few hundred cells take seconds.
    """
    out: dict[tuple, list[Any]] = {}
    for row in frame.itertuples(index=False):
        out.setdefault(tuple(getattr(row, k) for k in keys), []).append(row)
    return out


def missing(value: Any) -> bool:
    """True for None and NaN (pandas gives either for an absent measurement)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def seconds(value: Any) -> str:
    """`1.23 s`, `45.6 ms`, `789 µs`: three significant digits in the unit that fits."""
    if missing(value):
        return DASH
    v = float(value)
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
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
        if abs(v) >= scale:
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


@dataclass
class Table:
    """A sortable table; `numeric` columns sort by their cells' keys, others by text."""

    columns: list[str]
    numeric: frozenset[int] = frozenset()
    rows: list[list[Cell]] = field(default_factory=list)

    def add(self, cells: list[Cell]) -> None:
        """Append a row, its sort keys written short (the page aligns by them: a cell with a
        key is a number, right-aligned by CSS, so no class per cell is needed)."""
        for cell in cells:
            if isinstance(cell.sort, float):
                cell.sort = "inf" if math.isinf(cell.sort) else f"{cell.sort:.6g}"
        self.rows.append(cells)


def num_cell(value: Any, fmt: Any = seconds, cls: str = "", title: str = "") -> Cell:
    """A number cell that sorts by its value, missing values last."""
    if missing(value):
        return Cell(DASH, sort=math.inf, cls=cls, title=title)
    return Cell(fmt(value), sort=float(value), cls=cls, title=title)


def text_cell(value: Any, cls: str = "", title: str = "") -> Cell:
    """A text cell; a missing value shows as a dash."""
    return Cell(DASH if missing(value) else str(value), cls=cls, title=title)
