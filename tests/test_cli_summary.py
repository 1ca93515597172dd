"""The end-of-run table, from records written as docs/records.md defines them."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from matrix.dataset import dataset_of
from matrix.summary import render, summarize


@pytest.fixture
def records(record) -> list[dict]:
    def trial(fmt: str, cache: str, load_s: float, **extra: object) -> dict:
        fields = {"import_s": 2.0, "first_inference_s": 0.05, "parity_max_abs_diff": 1e-6}
        return record(
            "trial",
            model="MobileNetV2",
            format=fmt,
            cache_mode=cache,
            load_s=load_s,
            **{**fields, **extra},
        )

    return [
        record("plan", trials_planned=12),
        record("environment", tensorflow="2.21.0"),
        record("artifact", model="MobileNetV2", format="h5", status="ok", bytes=14_000_000),
        record("artifact", model="MobileNetV2", format="tflite", status="ok", bytes=3_500_000),
        record(
            "artifact",
            model="MobileNetV2",
            format="weights-ckpt",
            status="unsupported",
            reason="Keras 3 cannot save TF checkpoints\nmore detail",
        ),
        record(
            "artifact",
            model="MobileNetV2",
            format="tflite-int8",
            status="error",
            reason="converter died: LLVM ERROR",
        ),
        # h5 cold: 4 measured loads, the warm-up (slow) must not count.
        trial("h5", "cold", 9.0, phase="warmup"),
        *[
            trial("h5", "cold", s, import_s=i)
            for s, i in [(1.0, 3.0), (2.0, 4.0), (3.0, 5.0), (4.0, 6.0)]
        ],
        # tflite warm: fast; one trial's parity is worse; a reused-process load is separate.
        trial("tflite", "warm", 0.010),
        trial("tflite", "warm", 0.020, parity_max_abs_diff=3e-4),
        trial("tflite", "warm", 0.001, process="reused"),
        # tflite cold: one ok and one whose eviction did not take.
        trial("tflite", "cold", 0.030),
        trial("tflite", "cold", 0.002, status="invalid", reason="12 % resident before load"),
        # keras cold: nothing ok at all.
        trial("keras", "cold", math.nan, status="error", reason="OSError: bad zip"),
        record("failure", scope="model", model="DenseNet201", reason="cannot build: no memory"),
        record("done", trials_written=11, elapsed_s=10.0),
    ]


def _row(summary, fmt: str, cache: str, process: str = "fresh") -> dict:
    match = summary[
        (summary["format"] == fmt)
        & (summary["cache_mode"] == cache)
        & (summary["process"] == process)
    ]
    assert len(match) == 1
    return match.iloc[0].to_dict()


def test_statistics_use_only_ok_measured_trials(records) -> None:
    h5 = _row(summarize(dataset_of(records)), "h5", "cold")
    assert h5["n"] == 4
    assert h5["load_median"] == pytest.approx(2.5)  # the 9 s warm-up is excluded
    assert h5["load_iqr"] == pytest.approx(1.5)  # q75 3.25 - q25 1.75
    assert h5["import_median"] == pytest.approx(4.5)
    assert h5["first_inference_median"] == pytest.approx(0.05)
    assert h5["artifact_mb"] == pytest.approx(14.0)
    assert h5["status"] == "ok"


def test_parity_is_the_worst_trial(records) -> None:
    row = _row(summarize(dataset_of(records)), "tflite", "warm")
    assert row["parity_max"] == pytest.approx(3e-4)


def test_invalid_trials_are_left_out_and_noted(records) -> None:
    cold = _row(summarize(dataset_of(records)), "tflite", "cold")
    assert cold["n"] == 1
    assert cold["load_median"] == pytest.approx(0.030)
    assert cold["note"] == "1 invalid: 12 % resident before load"


def test_reused_process_loads_get_their_own_row(records) -> None:
    summary = summarize(dataset_of(records))
    assert _row(summary, "tflite", "warm", "reused")["load_median"] == pytest.approx(0.001)
    assert _row(summary, "tflite", "warm")["n"] == 2


def test_failed_cells_get_a_row_with_their_reason(records) -> None:
    summary = summarize(dataset_of(records))
    keras = _row(summary, "keras", "cold", "—")  # a failed cell has no process to speak of
    assert (keras["status"], keras["note"], keras["n"]) == ("error", "OSError: bad zip", 0)
    ckpt = _row(summary, "weights-ckpt", "—", "—")
    assert (ckpt["status"], ckpt["note"]) == ("unsupported", "Keras 3 cannot save TF checkpoints")
    assert _row(summary, "tflite-int8", "—", "—")["status"] == "error"
    failure = summary[summary["model"] == "DenseNet201"].iloc[0]
    assert (failure["status"], failure["note"]) == ("error", "cannot build: no memory")


def test_rows_sort_by_model_then_median_load_with_failures_last(records) -> None:
    summary = summarize(dataset_of(records))
    assert list(summary["model"]) == ["DenseNet201"] + ["MobileNetV2"] * 7
    mobile = summary[summary["model"] == "MobileNetV2"]
    loads = mobile["load_median"].dropna().tolist()
    assert loads == sorted(loads) and len(loads) == 4
    assert mobile["load_median"].iloc[4:].isna().all()  # failed cells after measured ones


def test_rendered_table_shows_values_status_and_reasons(records) -> None:
    console = Console(width=200, record=True, color_system=None)
    console.print(render(summarize(dataset_of(records))))
    text = console.export_text()
    assert "2500.0" in text and "1500.0" in text  # h5 cold median and IQR, in ms
    assert "14.0" in text  # artifact MB
    assert "unsupported Keras 3 cannot save TF checkpoints" in text
    assert "more detail" not in text  # only the first line of a reason
    assert "process" in text  # fresh and reused rows are told apart
    assert "env" not in text.split("\n", 3)[2]  # a single environment needs no column


def test_no_trials_at_all_still_summarizes_failures(record) -> None:
    failure = record("failure", scope="environment", reason="TensorFlow missing")
    summary = summarize(dataset_of([failure]))
    assert list(summary["status"]) == ["failed-environment"]
    assert summary["note"].iloc[0] == "TensorFlow missing"
