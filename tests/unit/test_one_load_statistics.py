"""A cell's statistics come from one process kind: its forked trials or its fresh ones, never
both (matrix.results.dataset.measured); the summary says which, how precise, and the forks'
check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest import approx
from rich.console import Console

from matrix.report.summary import summarize, summary_table
from matrix.results.dataset import cell_stats, dataset_of

Record = Callable[..., dict[str, Any]]


def _loads(record: Record, fmt: str, process: str, loads: list[float]) -> list[dict[str, Any]]:
    return [
        record(
            "trial",
            model="m",
            format=fmt,
            cache_mode="warm",
            process=process,
            load_s=load,
            first_inference_s=0.01,
            first_prediction_s=load + 0.01,
        )
        for load in loads
    ]


def test_forked_loads_and_their_fresh_controls_are_never_mixed(record: Record) -> None:
    forked = [1.0, 1.02, 0.98, 1.01, 0.99, 1.0]
    records = [
        *_loads(record, "h5", "forked", forked),
        *_loads(record, "h5", "fresh", [2.0, 2.1]),  # controls, slower: must not pull it up
        # After a disagreement: its forked trials of the control rounds, then fresh ones.
        *_loads(record, "tflite", "forked", [0.01, 0.01]),
        *_loads(record, "tflite", "fresh", [0.02] * 7),
        record("precision", model="m", format="h5", cache_mode="warm", process="forked",
               reached=True),
        record("precision", model="m", format="tflite", cache_mode="warm", process="fresh",
               reached=False),
        record("fork_check", verdict="disagree", pairs=6, fallback=True),
    ]  # fmt: skip
    stats = cell_stats(dataset_of(records)).set_index("format")
    assert stats.loc["h5", "process"] == "forked" and stats.loc["h5", "n"] == 6
    assert stats.loc["h5", "load_median"] == 1.0
    assert stats.loc["h5", "load_precision"] == approx(0.02)  # (min, max) of 6 around it
    assert stats.loc["tflite", "process"] == "fresh" and stats.loc["tflite", "n"] == 7
    assert stats.loc["h5", "precision_reached"] == True  # noqa: E712 - a pandas object column
    assert stats.loc["tflite", "precision_reached"] == False  # noqa: E712

    console = Console(width=200, record=True, color_system=None)
    console.print(summary_table(summarize(dataset_of(records))))
    text = console.export_text()
    h5 = next(line for line in text.splitlines() if " h5 " in line)
    tflite = next(line for line in text.splitlines() if " tflite " in line)
    assert "forked" in h5 and "±2%" in h5 and "max" not in h5
    assert "fresh" in tflite and "±0% max" in tflite
    assert "forked trials checked against fresh ones: disagree" in text
