"""Natural order for names that carry versions: tf2.9 before tf2.10, py3.9 before py3.11.

Environment ids, TensorFlow and Python versions are compared as text by default, which puts
2.10 … 2.21 before 2.5; every table, chart and terminal listing sorts through here instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

_DIGITS = re.compile(r"(\d+)")


def natural_key(value: Any) -> tuple[Any, ...]:
    """A sort key that compares digit runs as numbers: `("tf", 2, ".", 10, "-py", 3, …)`.

    Splitting on digit runs alternates text and number, so the same position of two keys always
    holds the same type and tuples compare without error. A missing value sorts last.
    """
    if value is None or value != value:  # None or NaN
        return (1,)
    parts = _DIGITS.split(str(value))
    return (0, *(int(part) if i % 2 else part for i, part in enumerate(parts)))


def natural_sorted(values: Iterable[Any]) -> list[Any]:
    """`values` in natural order."""
    return sorted(values, key=natural_key)


def natural_rank(column: pd.Series) -> pd.Series:
    """Each value's position in the natural order of the column's distinct values, for
    `sort_values(key=natural_rank)`: one key per distinct value, not per row."""
    rank = {value: i for i, value in enumerate(natural_sorted(column.dropna().unique()))}
    return column.map(rank).fillna(len(rank)).astype(int)
