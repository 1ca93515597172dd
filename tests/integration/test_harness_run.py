"""One real harness run of a tiny model in every format, and what its records must prove."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness import cache
from harness.catalog import FORMATS, SCHEMA_VERSION
from harness.runner import COLD_MIN_READ_FRACTION
from tests.integration.harness_helpers import (
    ABORTING_TFLITE,
    FLOAT_FORMATS,
    ROOT,
    of_kind,
    read_records,
    run_harness,
)

MODES = ("cold-model", "warm")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """dense-10k, every format, cold-model + warm, one warm-up round and one measured round."""
    out = tmp_path_factory.mktemp("tiny")
    proc = run_harness(
        out,
        "--models",
        "dense-10k",
        "--cache",
        ",".join(MODES),
        "--repeats",
        "1",
        "--warmup",
        "1",
        "--inference-runs",
        "3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_records(out)


def _measured(records):
    return [r for r in of_kind(records, "trial") if r["phase"] == "measure"]


def test_run_is_framed_by_plan_environment_and_done(tiny_run):
    assert [r["kind"] for r in tiny_run[:2]] == ["plan", "environment"]
    assert tiny_run[-1]["kind"] == "done"
    assert {r["schema_version"] for r in tiny_run} == {SCHEMA_VERSION}
    assert {r["env_id"] for r in tiny_run} == {"test-env"}
    env = tiny_run[1]
    assert env["tensorflow"].startswith("2.") and env["keras_impl"] == "keras3"
    assert env["cpu_count"] >= 1 and env["python"].count(".") == 2
    flags = next(
        (
            ln.split()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("flags")
        ),
        [],
    )
    assert (env["hypervisor"] is None) == ("hypervisor" not in flags)


def test_every_format_has_an_artifact_record(tiny_run):
    artifacts = {r["format"]: r for r in of_kind(tiny_run, "artifact")}
    assert set(artifacts) == set(FORMATS)
    for fmt, record in artifacts.items():
        if record["status"] == "ok":
            assert record["bytes"] > 0 and record["files"] >= 1, fmt
            assert record["params"] > 5_000 and record["save_s"] > 0, fmt
            assert record["io_floor_s"] is not None and record["io_floor_s"] > 0, fmt
            assert record["storage"]["kind"] in (
                "host",
                "image-layer",
                "bind-mount",
                "volume",
                "tmpfs",
            ), fmt
    assert artifacts["savedmodel"]["files"] > 1  # a directory


def test_unsupported_format_has_a_record_with_its_reason(tiny_run):
    ckpt = [r for r in tiny_run if r.get("format") == "weights-ckpt"]
    assert ckpt and {r["status"] for r in ckpt} == {"unsupported"}
    assert all("Keras 3" in r["reason"] for r in ckpt)
    # one record per cell, not one per planned trial
    assert Counter(r["cell_id"] for r in ckpt if r["kind"] == "trial") == {
        f"test-env/dense-10k/weights-ckpt/{mode}": 1 for mode in MODES
    }


def test_every_supported_cell_was_measured_and_proved(tiny_run):
    measured = [r for r in _measured(tiny_run) if r["format"] != "weights-ckpt"]
    assert {(r["format"], r["cache_mode"]) for r in measured} == {
        (f, m) for f in FORMATS if f != "weights-ckpt" for m in MODES
    }
    for r in measured:
        assert r["status"] == "ok", r
        assert r["import_s"] > 0 and r["load_s"] > 0 and r["load_cpu_s"] >= 0
        assert r["first_inference_s"] > 0 and r["inference_s"] > 0
        assert r["peak_rss_mb"] > 10
        if r["cache_mode"] == "cold-model":
            assert r["resident_before"] <= 0.01 and r["eviction"] == "fadvise"
        else:
            assert r["resident_before"] >= 0.95 and r["eviction"] == "read"


def test_every_trial_warms_and_proves_its_runtimes_libraries(tiny_run):
    """warm and cold-model trials never inherit the previous trial's import: the runtime's
    libraries (numpy, h5py and Keras with TensorFlow's) are read in and proved resident."""
    for r in _measured(tiny_run):
        if r["status"] != "ok":
            continue
        assert r["import_libs_resident_before"] >= cache.WARM_MIN_RESIDENT, r
        expected = (
            ["ai_edge_litert", "numpy"]
            if r["import_target"] == "tflite"
            else ["tensorflow", "numpy", "h5py", "keras"]
        )
        assert r["import_libs_checked"] == expected, r


def test_a_cold_load_shows_it_read_its_artifact_and_a_warm_one_does_not(tiny_run):
    """The in-process proof: bytes read from storage across the load (/proc/self/io). A load
    may also fault in a page of a library now and then (a warm TFLite load of this 41 kB
    model once read 192 kB of them), so the warm side is held to its artifact's residency
    and, together, to far less than the cold-model loads of the same artifacts read."""
    sizes = {r["format"]: r["bytes"] for r in of_kind(tiny_run, "artifact") if r["status"] == "ok"}
    read = {"cold-model": 0, "warm": 0}
    for r in _measured(tiny_run):
        if r["status"] != "ok":
            continue
        if r["cache_mode"] == "cold-model":
            assert r["load_read_bytes"] >= COLD_MIN_READ_FRACTION * sizes[r["format"]], r
        else:
            assert r["resident_before"] == 1.0, r
        read[r["cache_mode"]] += r["load_read_bytes"]
        assert r["load_major_faults"] >= 0
    assert read["warm"] < COLD_MIN_READ_FRACTION * read["cold-model"], read
    # TFLite maps its file: a cold load takes major page faults to read it.
    mapped = [
        r
        for r in _measured(tiny_run)
        if r["format"].startswith("tflite") and r["cache_mode"] == "cold-model"
    ]
    assert mapped and all(r["load_major_faults"] > 0 for r in mapped)


def test_derived_figures_equal_their_definitions(tiny_run):
    for r in _measured(tiny_run):
        if r["status"] != "ok":
            continue
        assert r["startup_s"] > 0
        assert r["first_prediction_s"] == pytest.approx(r["load_s"] + r["first_inference_s"])
        assert r["cold_start_s"] == pytest.approx(
            r["import_s"] + r["device_init_s"] + r["load_s"] + r["first_inference_s"]
        )
        if r["import_target"] == "tflite":
            assert r["device_init_s"] == 0.0  # the interpreter's delegates are built in the load
        else:
            assert r["device_init_s"] > 0


def test_device_creation_happens_before_the_load_clock():
    """In a real TF process the first device init pays for creating the device and a second
    one finds it made: so the load timed after it does not pay for it either."""
    code = (
        "from harness.runtime import import_tensorflow\n"
        "from harness.trial_worker import _init_device\n"
        "rt = import_tensorflow(with_keras=False)\n"
        "print(_init_device(rt, 'tensorflow'), _init_device(rt, 'tensorflow'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = map(float, proc.stdout.split())
    assert second < first / 2, (first, second)


def test_float_formats_predict_what_the_saved_model_predicted(tiny_run):
    for r in _measured(tiny_run):
        if r["format"] in FLOAT_FORMATS:
            assert r["parity_max_abs_diff"] <= 1e-4, r
    int8 = [r for r in _measured(tiny_run) if r["format"] == "tflite-int8"]
    assert int8 and all(r["parity_max_abs_diff"] > 0 for r in int8)  # quantization shows


def test_tflite_imports_litert_not_tensorflow(tiny_run):
    tflite = [r for r in _measured(tiny_run) if r["format"].startswith("tflite")]
    assert {r["import_target"] for r in tflite} == {"tflite"}
    assert all(r["tflite_runtime"].startswith("ai-edge-litert") for r in tflite)
    keras_loads = [r for r in _measured(tiny_run) if r["format"] == "h5"]
    assert {r["import_target"] for r in keras_loads} == {"tensorflow+keras"}


def test_rounds_interleave_formats_and_warmup_is_flagged(tiny_run):
    trials = [r for r in of_kind(tiny_run, "trial") if "round" in r]
    rounds = [r["round"] for r in trials]
    assert rounds == sorted(rounds), "a round must finish before the next starts"
    warm, measure = ([r for r in trials if r["round"] == n] for n in (0, 1))
    assert {r["phase"] for r in warm} == {"warmup"} and {r["phase"] for r in measure} == {"measure"}
    # A forked cell's measured round also has its fresh-process control: leave those out.
    process = {(r["format"], r["cache_mode"]): r["process"] for r in warm}
    measure = [r for r in measure if r["process"] == process[(r["format"], r["cache_mode"])]]
    cells = [(r["format"], r["cache_mode"]) for r in warm]
    assert sorted(cells) == sorted((r["format"], r["cache_mode"]) for r in measure)
    assert cells != [(r["format"], r["cache_mode"]) for r in measure], "order reshuffled"
    assert cells != sorted(cells), "not one format after another"


def test_records_doc_names_every_field_written(tiny_run):
    doc = (ROOT / "docs" / "records.md").read_text()
    documented = set(re.findall(r"`([a-z_0-9]+)`", doc))
    written = {key for record in tiny_run for key in record}
    assert written - documented == set()


@pytest.fixture(scope="module")
def aborting_run(tmp_path_factory):
    """The TFLite converter aborts the save worker (as LLVM does); the rest must go on.

    The abort is a test double (`ABORTING_TFLITE`): the real save worker, whose `tflite` saver
    calls the real os.abort(); no GPU or broken wheel is needed to reproduce the crash.
    """
    out = tmp_path_factory.mktemp("abort")
    proc = run_harness(
        out,
        "--models",
        "dense-10k",
        "--formats",
        "h5,tflite,tflite-fp16",
        "--cache",
        "cold",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--process",
        "both",
        env=ABORTING_TFLITE,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_records(out)


def test_a_converter_that_dies_is_an_error_and_the_rest_completes(aborting_run):
    artifacts = {r["format"]: r for r in of_kind(aborting_run, "artifact")}
    assert artifacts["tflite"]["status"] == "error"
    assert "SIGABRT" in artifacts["tflite"]["reason"]
    assert artifacts["h5"]["status"] == "ok" and artifacts["tflite-fp16"]["status"] == "ok"
    ok = {r["format"] for r in of_kind(aborting_run, "trial") if r["status"] == "ok"}
    assert ok == {"h5", "tflite-fp16"}


def test_cold_mode_drops_the_whole_cache_so_the_import_is_cold_too(aborting_run):
    """Cold means the runtime's own libraries too; a cold trial whose import was warm is
    `invalid`. (Libraries another process has mapped cannot be dropped: the suite imports no
    TF itself, but it does import numpy, which is why numpy's residency is recorded and does
    not decide.)
    """
    cold = [
        r
        for r in of_kind(aborting_run, "trial")
        if r["cache_mode"] == "cold" and r["status"] in ("ok", "invalid")
    ]
    assert cold, "cold trials ran (the suite runs as root, like CI)"
    for r in cold:
        assert r["eviction"] == "drop_caches" and r["resident_before"] <= 0.01
        assert r["load_read_bytes"] > 0, r  # the trial process itself read its artifact
        runtime = r["import_libs_checked"][0]  # tensorflow, or ai_edge_litert for TFLite
        if r["status"] == "ok":
            assert r["import_libs_resident"][runtime] <= 0.01, r
        else:
            assert "import was not cold" in r["reason"], r
    assert any(r["status"] == "ok" for r in cold)


def test_reused_process_mode_loads_repeatedly_in_one_process(aborting_run):
    reused = [r for r in of_kind(aborting_run, "trial") if r["process"] == "reused"]
    assert {r["format"] for r in reused} == {"h5", "tflite-fp16"}
    assert all(r["cell_id"].endswith("/reused") for r in reused)
    # Only the process's first load paid for the import: later loads have no cold start.
    for r in reused:
        assert (r["cold_start_s"] is None) == (r["load_index"] > 0), r
        assert r["first_prediction_s"] == pytest.approx(r["load_s"] + r["first_inference_s"])


@pytest.fixture(scope="module")
def litert_missing_run(tmp_path_factory):
    """A TFLite trial where ai_edge_litert cannot be imported, so tf.lite runs it.

    Real import machinery: a sitecustomize on PYTHONPATH sets sys.modules["ai_edge_litert"] to
    None in the harness and in every child, which makes find_spec say it is absent and an
    import fail, as on a machine without the wheel.
    """
    out = tmp_path_factory.mktemp("no-litert")
    shadow = out / "shadow"
    shadow.mkdir()
    (shadow / "sitecustomize.py").write_text("import sys\nsys.modules['ai_edge_litert'] = None\n")
    path = os.pathsep.join(p for p in (str(shadow), os.environ.get("PYTHONPATH", "")) if p)
    proc = run_harness(
        out,
        "--models",
        "dense-10k",
        "--formats",
        "tflite",
        "--cache",
        "cold-model",
        "--repeats",
        "1",
        "--warmup",
        "0",
        env={"PYTHONPATH": path},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_records(out)


def test_a_tflite_trial_falling_back_to_tf_lite_checks_tensorflows_libraries(litert_missing_run):
    assert litert_missing_run[1]["tflite_runtime"] == "tf.lite"
    trials = of_kind(litert_missing_run, "trial")
    assert trials and {r["tflite_runtime"] for r in trials} == {"tf.lite"}
    for r in trials:
        assert r["status"] == "ok", r
        assert r["import_libs_checked"] == ["tensorflow", "numpy", "h5py", "keras"]
        assert r["import_libs_resident_before"] >= cache.WARM_MIN_RESIDENT


def test_the_harness_process_imports_no_runtime_library() -> None:
    """Whatever the parent maps stays cached through drop_caches, so no `cold` trial could pass."""
    code = (
        "import sys, harness.__main__\n"
        "print(sorted({'numpy', 'h5py', 'keras', 'tensorflow', 'ai_edge_litert'}"
        " & set(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_a_cold_check_without_libraries_never_proves_cold() -> None:
    from harness.runner import Run

    assert "cannot be proven" in Run._check_libs("cold", {})


def test_only_the_runtimes_own_libraries_decide_a_cold_import(tmp_path: Path) -> None:
    """numpy mapped by another process (the local orchestrator imports pandas) stays cached:
    recorded, not fatal. TensorFlow cached would make the import warm: invalid."""
    from harness import cache
    from harness.runner import Run

    cold_lib, warm_lib = tmp_path / "cold.so", tmp_path / "warm.so"
    for lib in (cold_lib, warm_lib):
        lib.write_bytes(os.urandom(1 << 20))
    cache.evict([str(cold_lib)])
    cache.read_all([str(warm_lib)])
    cold, warm = cache.residency([str(cold_lib)]), cache.residency([str(warm_lib)])
    assert cold <= 0.01 < warm
    assert Run._check_libs("cold", {"tensorflow": cold, "numpy": warm}) == ""
    reason = Run._check_libs("cold", {"tensorflow": warm, "numpy": cold})
    assert reason.startswith("the import was not cold: tensorflow ")


def test_bad_names_and_values_fail_in_one_line(tmp_path: Path):
    cases = {
        ("--models", "MobileNetV9"): "MobileNetV9",
        ("--formats", "h6"): "savedmodel, savedmodel-keras",
        ("--cache", "lukewarm"): "cold, cold-model, warm",
        ("--models", str(tmp_path / "missing.keras")): "missing.keras",
        ("--repeats", "0"): "--repeats must be >= 1",
    }
    for args, expected in cases.items():
        proc = run_harness(tmp_path / "out", *args)
        assert proc.returncode == 2, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, proc.stderr)
        assert not (tmp_path / "out").exists(), "nothing written for bad input"


def test_cold_cells_without_a_way_to_drop_caches_are_unsupported(tmp_path: Path) -> None:
    """Not root, no host to ask: `cold` cannot be produced, and says what would allow it."""
    from harness.catalog import parse_model
    from harness.contract import RunSpec
    from harness.runner import COLD_REFUSED, ModelArtifacts, Run, Saved

    run = Run(
        RunSpec(
            out=str(tmp_path),
            run_id="r",
            env_id="e",
            models=["dense-10k"],
            formats=["h5"],
            cache_modes=["cold"],
        )
    )
    run.drop_via = None
    arts = ModelArtifacts(spec=parse_model("dense-10k"), saved={"h5": Saved("ok")})
    assert run.not_runnable(arts, "h5", "cold") == ("unsupported", COLD_REFUSED)
    assert run.not_runnable(arts, "h5", "cold-model") is None
    assert "matrix doctor" in COLD_REFUSED and "cold-model" in COLD_REFUSED
