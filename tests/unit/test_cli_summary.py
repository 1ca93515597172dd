"""The end-of-run table, from records written as docs/records.md defines them."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from matrix.report.summary import summarize, summary_table
from matrix.results.dataset import dataset_of


@pytest.fixture
def records(record) -> list[dict]:
    def trial(fmt: str, cache: str, load_s: float, **extra: object) -> dict:
        fields = {
            "import_s": 2.0,
            "device_init_s": 0.01,
            "first_inference_s": 0.05,
            "parity_max_abs_diff": 1e-6,
            "parity_status": "pass",
            "parity_rel_err": 1e-6,
            "inference_call": "tflite invoke" if fmt == "tflite" else "predict_on_batch",
            **extra,
        }
        first = load_s + fields["first_inference_s"]  # as the harness derives them
        fields.setdefault("first_prediction_s", first)
        fields.setdefault("cold_start_s", fields["import_s"] + fields["device_init_s"] + first)
        return record(
            "trial", model="MobileNetV2", format=fmt, cache_mode=cache, load_s=load_s, **fields
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


def test_rows_sort_by_model_then_first_prediction_with_failures_last(records) -> None:
    summary = summarize(dataset_of(records))
    assert list(summary["model"]) == ["DenseNet201"] + ["MobileNetV2"] * 7
    mobile = summary[summary["model"] == "MobileNetV2"]
    firsts = mobile["first_prediction_median"].dropna().tolist()
    assert firsts == sorted(firsts) and len(firsts) == 4
    assert mobile["first_prediction_median"].iloc[4:].isna().all()  # failed cells last


def test_first_prediction_outranks_a_load_that_defers_work(record) -> None:
    """SavedModel loads fastest but traces its function at the first call: h5 predicts first.
    The headline figure is load + first inference, so h5 ranks first; load is still shown."""

    def trial(fmt: str, load_s: float, first_s: float) -> dict:
        return record(
            "trial",
            model="m",
            format=fmt,
            cache_mode="warm",
            load_s=load_s,
            first_inference_s=first_s,
            first_prediction_s=load_s + first_s,
            import_s=2.0,
            device_init_s=0.1,
            cold_start_s=2.1 + load_s + first_s,
        )

    records = [
        trial(fmt, load, first)
        for _ in range(3)
        for fmt, load, first in (("savedmodel", 0.10, 0.40), ("h5", 0.30, 0.02))
    ]
    summary = summarize(dataset_of(records))
    assert list(summary["format"]) == ["h5", "savedmodel"]
    assert summary["load_median"].is_monotonic_decreasing  # load alone would rank the other way
    text = _text(summary)
    assert "Time to first prediction" in text.splitlines()[0]
    h5 = next(line for line in text.splitlines() if " h5 " in line)
    # ±95% (none under 6 loads), 1st pred, IQR, cold, load
    assert h5.split()[4:9] == ["—", "320.0", "0.0", "2420.0", "300.0"]


def _text(summary, **options) -> str:
    console = Console(**{"width": 200, "record": True, "color_system": None, **options})
    console.print(summary_table(summary))
    return console.export_text(styles=bool(options))


def test_parity_is_a_verdict_never_a_green_number(records, record) -> None:
    """A failure is red with its relative error; not informative is never green; a record of
    schema 1 (no verdict) says not checked."""
    cells = [
        record(
            "trial",
            model="m",
            format="tflite-int8",
            cache_mode="warm",
            load_s=0.01,
            parity_status="fail",
            parity_rel_err=0.31,
            parity_max_abs_diff=0.0,
        ),
        record(
            "trial",
            model="m",
            format="h5",
            cache_mode="warm",
            load_s=0.2,
            parity_status="not-informative",
            parity_rel_err=0.0,
            parity_max_abs_diff=0.0,
        ),
        record(
            "trial",
            model="m",
            format="keras",
            cache_mode="warm",
            load_s=0.2,
            parity_status="pass",
            parity_rel_err=0.0,
            parity_max_abs_diff=0.0,
        ),
        {
            **record(
                "trial",
                model="m",
                format="savedmodel",
                cache_mode="warm",
                load_s=0.3,
                parity_max_abs_diff=0.0,
            ),
            "schema_version": 1,
        },
    ]
    summary = summarize(dataset_of(cells))
    text = _text(summary, force_terminal=True, color_system="standard")
    lines = {
        fmt: next(line for line in text.splitlines() if f" {fmt} " in line)
        for fmt in ("tflite-int8", "h5", "keras", "savedmodel")
    }
    assert "\x1b[31mfail 3.1e-01" in lines["tflite-int8"]  # red
    green = "\x1b[32m"  # (the status column's `ok` is green in every line)
    assert "\x1b[33mnot informative" in lines["h5"]  # yellow, not green
    assert f"{green}pass" in lines["keras"]
    assert "not checked" in lines["savedmodel"] and f"{green}not" not in lines["savedmodel"]


def test_a_schema_1_run_gets_first_prediction_and_cold_start_derived(record) -> None:
    old = [
        {
            **record(
                "trial",
                model="m",
                format="h5",
                cache_mode="warm",
                load_s=load,
                first_inference_s=0.1,
                import_s=3.0,
            ),
            "schema_version": 1,
        }
        for load in (0.2, 0.4, 0.6)
    ]
    row = summarize(dataset_of(old)).iloc[0]
    assert row["first_prediction_median"] == pytest.approx(0.5)
    assert row["cold_start_median"] == pytest.approx(3.5)  # import + load + first inference
    assert math.isnan(row["device_init_median"])  # schema 1 had none: inside its load
    assert "not checked" in _text(summarize(dataset_of(old)))


def test_reused_rows_are_labelled_as_the_articles_method(record) -> None:
    """A run with only reused-process loads must not read like plain warm cells."""
    loads = [
        record(
            "trial",
            model="m",
            format="h5",
            cache_mode="warm",
            process="reused",
            load_index=i,
            load_s=s,
            first_inference_s=0.01,
            first_prediction_s=s + 0.01,
        )
        for i, s in enumerate((0.9, 0.2, 0.1))
    ]
    summary = summarize(dataset_of(loads))
    assert list(summary["process"]) == ["reused"]
    text = _text(summary)
    assert "reused*" in text and "seed article's method" in text
    assert "GC enabled, no collection between loads" in " ".join(text.split())
    assert " 400.0 " in text  # its load is the mean of the loads, the article's figure


def test_a_vm_fast_io_floor_notes_cold_only_inside_the_guest(record) -> None:
    """2 GB read at an I/O floor of 0.5 s is 4 GB/s: on a VM, the host's cache served it."""
    records = [
        record("environment", hypervisor="KVM"),
        record(
            "artifact", model="m", format="h5", status="ok", bytes=2_000_000_000, io_floor_s=0.5
        ),
        *[
            record("trial", model="m", format="h5", cache_mode=cache, load_s=1.0)
            for cache in ("cold", "warm")
        ],
    ]
    summary = summarize(dataset_of(records))
    notes = summary.set_index("cache_mode")["note"]
    assert notes["cold"] == "cold only inside the guest"
    assert notes["warm"] == ""  # a warm load claims nothing about the disk
    assert (
        "cold only inside the guest: local-tf2.21-py3.11-cpu runs on KVM and read artifacts "
        "at an I/O floor of up to 4.0 GB/s"
    ) in " ".join(_text(summary).split())
    host = summarize(dataset_of([{**records[0], "hypervisor": None}, *records[1:]]))
    assert not host["note"].str.contains("guest").any()


def test_rendered_table_shows_values_status_and_reasons(records) -> None:
    text = _text(summarize(dataset_of(records)))
    assert "2550.0" in text and "1500.0" in text  # h5 cold first prediction and IQR, in ms
    assert "2500.0" in text  # and its load alone
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
