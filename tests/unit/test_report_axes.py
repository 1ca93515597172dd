"""The report's views along an axis, on a fake sweep (tests/conftest.py `fake_sweep_records`):
GPUs and nine TensorFlow images cannot run here, and the records they would write have exactly
this shape. The real four-TF docker sweep's report is tested in tests/integration/.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from matrix.report import axes, changes
from matrix.report.html import render, report_frames
from matrix.report.order import natural_key, natural_rank, natural_sorted
from matrix.report.sections import ReportFrames
from matrix.report.summary import summarize
from matrix.results.dataset import cell_problems, cell_stats, dataset_of
from tests.conftest import FAKE_LOAD_S, fake_environment, fake_sweep_records

# python: auto as the planner resolves it: each TF on the newest Python it supports.
AUTO = [("2.5.3", "3.9"), ("2.9.3", "3.10"), ("2.10.1", "3.10"), ("2.15.1", "3.11")]
AUTO += [("2.16.2", "3.12"), ("2.21.0", "3.13")]
TFLITE_JUMP = 12.0  # TFLite's load at TF >= 2.9, against before (the real sweep's story)


def _frames(records: list[dict[str, Any]], manifests: list[dict] | None = None) -> ReportFrames:
    ds = dataset_of(records, manifests=manifests)
    return report_frames(ds, cell_stats(ds), cell_problems(ds), None)


def _loads(env: dict[str, Any], fmt: str, field: str) -> float:
    """Load times with the real sweep's shape: TFLite 12× slower from TF 2.9, SavedModel
    3.5× H5 up to TF 2.15 and about H5's from 2.16; a GPU halves SavedModel alone."""
    if field != "load_s":
        return 1.0 if field == "import_s" else 0.01
    tf = tuple(int(p) for p in env["tensorflow"].split(".")[:2])
    load = FAKE_LOAD_S[fmt]
    if fmt == "tflite" and tf >= (2, 9):
        load *= TFLITE_JUMP
    if fmt == "savedmodel" and tf >= (2, 16):
        load /= 3.5
    if fmt == "savedmodel" and env["gpus"]:
        load /= 2
    return load


def _view(f: ReportFrames, axis: str) -> axes.AxisView:
    return next(v for v in axes.axis_views(f) if v.axis == axis)


def _panel(view: axes.AxisView, metric: str = "load_s") -> Any:
    return next(p for p in view.panels if p.metric == metric)


def test_versions_sort_as_versions() -> None:
    ids = ["tf2.21-py3.11-cpu", "tf2.5-py3.9-cpu", "tf2.10-py3.11-cpu", "tf2.9-py3.10-cpu"]
    assert natural_sorted(ids) == [ids[1], ids[3], ids[2], ids[0]]
    assert natural_sorted(["3.13", "3.9", "3.10"]) == ["3.9", "3.10", "3.13"]
    assert natural_key(None) > natural_key("tf2.99")  # a missing value sorts last
    column = pd.Series(["2.10.1", "2.9.3", None, "2.9.3"])
    assert natural_rank(column).tolist() == [1, 0, 2, 0]


def test_every_environment_list_of_the_page_is_in_version_order() -> None:
    envs = [fake_environment(tf, py) for tf, py in reversed(AUTO)]
    f = _frames(fake_sweep_records(envs, _loads))
    expected = [f"tf{tf.rsplit('.', 1)[0]}-py{py}-cpu" for tf, py in AUTO]
    assert f.labels == expected
    assert f.reported["env"].tolist() == expected
    assert list(dict.fromkeys(f.stats["env"])) == expected


def test_tf_trend_with_python_auto_releases_python_and_names_it() -> None:
    f = _frames(fake_sweep_records([fake_environment(tf, py) for tf, py in AUTO], _loads))
    view = _view(f, "tf")
    assert "Python moves with this axis" in view.note
    panel = _panel(view)
    assert [t[0] for t in panel.ticks] == [tf for tf, _ in AUTO]
    assert [t[1] for t in panel.ticks] == [f"py{py}" for _, py in AUTO]
    tflite = [m.value for m in panel.series["tflite"]]
    assert tflite[1] / tflite[0] == pytest.approx(TFLITE_JUMP)
    assert all(m.low <= m.value <= m.high for m in panel.series["h5"])  # IQR whiskers
    assert {p.metric for p in view.panels} == set(axes.METRICS)
    assert "only together with" in _view(f, "python").note  # Python never varies alone


def test_a_python_grid_is_held_fixed_in_the_tf_trend_and_compared_per_tf() -> None:
    grid = [("2.5.3", "3.9"), ("2.15.1", "3.9"), ("2.15.1", "3.11"), ("2.16.2", "3.11")]
    grid += [("2.16.2", "3.9"), ("2.21.0", "3.11")]
    f = _frames(fake_sweep_records([fake_environment(tf, py) for tf, py in grid], _loads))
    trend = [p for p in _view(f, "tf").panels if p.metric == "load_s"]
    assert [p.title for p in trend] == ["dense-10k · Python 3.9", "dense-10k · Python 3.11"]
    assert [[t[0] for t in p.ticks] for p in trend] == [
        ["2.5.3", "2.15.1", "2.16.2"],
        ["2.15.1", "2.16.2", "2.21.0"],
    ]
    python = _panel(_view(f, "python"))
    assert [t[0] for t in python.ticks] == ["2.15.1", "2.16.2"]  # the TFs with both Pythons
    assert python.title == "dense-10k · Python 3.11 ÷ Python 3.9"
    assert python.bars[(0, "h5")].value == pytest.approx(1.0)


def test_cpu_vs_gpu_is_a_ratio_per_format_per_tf_version() -> None:
    envs = [fake_environment(tf, "3.11", d) for tf in ("2.15.1", "2.16.2") for d in ("cpu", "gpu")]
    f = _frames(fake_sweep_records(envs, _loads))
    panel = _panel(_view(f, "device"))
    assert panel.title == "dense-10k · GPU ÷ CPU"
    assert [t[0] for t in panel.ticks] == ["2.15.1", "2.16.2"]
    assert panel.formats == ["savedmodel", "h5", "tflite"]  # catalog order, as every table
    for tick in (0, 1):
        assert panel.bars[(tick, "savedmodel")].value == pytest.approx(0.5)
        assert panel.bars[(tick, "h5")].value == pytest.approx(1.0)
        assert (tick, "savedmodel") in panel.settled  # halved, and the rule confirms it
        assert (tick, "h5") not in panel.settled
    first = _panel(_view(f, "device"), "first_prediction_s").bars[(0, "savedmodel")]
    assert 0.5 < first.value < 1.0  # + the same first inference on both sides
    assert "Fake GPU" not in panel.title and "tf2.15-py3.11-gpu" in panel.bars[(0, "h5")].tooltip


def test_keras_generations_compare_tf_keras_with_keras_3_from_tf_2_16() -> None:
    envs = [fake_environment(tf) for tf in ("2.15.1", "2.16.2", "2.21.0")]
    envs += [fake_environment(tf, keras="legacy") for tf in ("2.16.2", "2.21.0")]
    f = _frames(fake_sweep_records(envs, _loads))
    panel = _panel(_view(f, "keras"))
    assert [t[0] for t in panel.ticks] == ["2.16.2", "2.21.0"]
    assert panel.title == "dense-10k · tf-keras ÷ the default Keras"
    trend = [p.title for p in _view(f, "tf").panels if p.metric == "load_s"]
    assert trend == ["dense-10k · default Keras", "dense-10k · tf-keras"]


def test_an_axis_that_does_not_vary_is_one_line() -> None:
    f = _frames(fake_sweep_records([fake_environment(tf, py) for tf, py in AUTO[:2]], _loads))
    notes = {v.axis: (v.note, v.panels) for v in axes.axis_views(f)}
    assert notes["device"] == (
        "Only CPU environments ran: nothing to compare (GPU environments need a host with a GPU).",
        [],
    )
    assert notes["keras"][1] == [] and "tf-keras" in notes["keras"][0]


def test_what_changed_lists_the_steps_the_rule_confirms_largest_first() -> None:
    f = _frames(fake_sweep_records([fake_environment(tf, py) for tf, py in AUTO], _loads))
    section = changes.section(f)
    assert section is not None
    lines = section.data["lines"]
    assert lines[0].startswith("TF 2.5.3 → 2.9.3: tflite load 12× slower")
    assert "TF 2.15.1 → 2.16.2: savedmodel load 3.5× faster" in lines[1]
    assert not any("h5" in line for line in lines)  # h5 never moved
    steps = changes.version_steps(axes.environment_axes(f.reported), axes.points_of(f))
    assert len(steps) == 5 * 3 * 3  # neighbouring TFs × formats × (first prediction, load, import)
    assert "the rule of <code>matrix compare</code>" in section.data["tally"]


def test_noise_alone_is_no_change() -> None:
    """Two TF versions whose loads differ by 10 %: under the threshold, never in the summary."""

    def ten_percent(env: dict[str, Any], fmt: str, field: str) -> float:
        slower = 1.1 if env["tensorflow"] == "2.16.2" else 1.0
        return FAKE_LOAD_S[fmt] * slower if field == "load_s" else 0.01

    f = _frames(
        fake_sweep_records([fake_environment(tf) for tf in ("2.15.1", "2.16.2")], ten_percent)
    )
    section = changes.section(f)
    assert section is not None and section.data["lines"] == []


def test_one_environment_collapses_what_has_nothing_to_compare() -> None:
    f = _frames(fake_sweep_records([fake_environment("2.21.0")], _loads))
    html = render(f, "one environment")
    assert changes.section(f) is None and 'id="changes"' not in html
    assert "One environment (tf2.21-py3.11-cpu): no axis varies" in html
    assert "One model size per environment (dense-10k: 9.92k parameters)" in html
    assert "One environment: there is no other to compare it with." in html
    assert 'id="axis-controls"' not in html and 'id="pairs-data"' not in html


def test_the_header_counts_what_ran_was_skipped_and_failed() -> None:
    envs = [fake_environment(tf) for tf in ("2.15.1", "2.16.2")]
    manifest = {
        "run_id": "20261127-183000-ab12",
        "outcomes": [
            {"env_id": "tf2.15-py3.11-cpu", "status": "ok"},
            {"env_id": "tf2.16-py3.11-cpu", "status": "ok"},
            {"env_id": "tf2.21-py3.11-cpu", "status": "build-failed", "reason": "pip failed"},
        ],
        "skipped": [
            {"id": "tf2.5-py3.11-cpu", "reason": "TensorFlow 2.5 has wheels for Python 3.7–3.9"},
            {"id": "tf2.4-py3.11-cpu", "reason": "TensorFlow 2.5 has wheels for Python 3.7–3.9"},
        ],
    }
    html = render(_frames(fake_sweep_records(envs, _loads), [manifest]), "counts")
    header = html[html.index('<div class="meta"') : html.index("<nav>")]
    assert "<strong>2 ran</strong>" in header and "2 skipped" in header and "1 failed" in header
    assert "tf2.4-py3.11-cpu, tf2.5-py3.11-cpu: TensorFlow 2.5 has wheels" in header
    assert "6 measured cells" in header


def test_a_big_sweep_draws_a_bounded_number_of_panels_and_stays_small() -> None:
    """9 TF versions × CPU and GPU × 2 Keras × 30 models: every view draws MAX_PANELS panels,
    shared by its figures, says how many it left out, and the page stays within budget."""
    tfs = ["2.5.3", "2.9.3", "2.10.1", "2.12.1", "2.13.1", "2.15.1", "2.16.2", "2.19.0", "2.21.0"]
    envs = [fake_environment(tf, "3.11", d) for tf in tfs for d in ("cpu", "gpu")]
    envs += [fake_environment(tf, "3.11", d, "legacy") for tf in tfs[6:] for d in ("cpu", "gpu")]
    models = tuple(f"model-{m:02d}" for m in range(30))
    f = _frames(fake_sweep_records(envs, _loads, models=models, repeats=2))
    views = {v.axis: v for v in axes.axis_views(f)}
    assert views["python"].panels == []  # one Python
    for view in (views["tf"], views["device"], views["keras"]):
        per_figure = [p for p in view.panels if p.metric == "load_s"]
        assert len(per_figure) == view.per_figure == axes.MAX_PANELS // len(axes.METRICS)
        assert len(view.panels) == axes.MAX_PANELS
        assert view.left_out > 0
    html = render(f, "big")
    assert "more panels per figure not drawn" in html
    assert len(html.encode()) < 10 * 1024 * 1024


def test_the_terminal_summary_lists_environments_in_version_order() -> None:
    envs = [fake_environment(tf, py) for tf, py in reversed(AUTO)]
    rows = summarize(dataset_of(fake_sweep_records(envs, _loads)))
    order = list(dict.fromkeys(rows["env_id"]))
    assert order == [f"tf{tf.rsplit('.', 1)[0]}-py{py}-cpu" for tf, py in AUTO]


def test_runs_from_two_machines_are_never_compared_across_them() -> None:
    """Merged runs of two hosts: a TF step is judged only between environments of one CPU
    model, and a version measured on one machine alone is no trend."""

    def on(cpu: str, tf: str, run_id: str) -> list[dict[str, Any]]:
        env = {**fake_environment(tf), "cpu_model": cpu}
        return fake_sweep_records([env], _loads, run_id=run_id)

    apart = on("CPU A", "2.15.1", "20261130-000000-aaaa") + on(
        "CPU B", "2.21.0", "20261130-000001-bbbb"
    )
    view = _view(_frames(apart), "tf")
    assert not view.panels and "only together with another axis" in view.note

    both = [
        on(cpu, tf, f"20261130-00000{i}-{cpu[-1].lower() * 4}")
        for i, (cpu, tf) in enumerate(
            [("CPU A", "2.15.1"), ("CPU A", "2.21.0"), ("CPU B", "2.15.1"), ("CPU B", "2.21.0")]
        )
    ]
    f = _frames([r for records in both for r in records])
    assert "CPU model" in _view(f, "tf").note
    steps = changes.version_steps(axes.environment_axes(f.reported), axes.points_of(f))
    assert {"CPU A", "CPU B"} == set(steps["machine"])
