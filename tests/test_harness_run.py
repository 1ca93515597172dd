"""One real harness run of a tiny model in every format, and what its records must prove."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from harness.catalog import FORMATS, SCHEMA_VERSION
from tests.harness_helpers import FLOAT_FORMATS, ROOT, of_kind, read_records, run_harness

MODES = ("cold-model", "warm")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """dense-10k, every format, cold-model + warm, one warm-up round and one measured round."""
    out = tmp_path_factory.mktemp("tiny")
    proc = run_harness(out, "--models", "dense-10k", "--cache", ",".join(MODES),
                       "--repeats", "1", "--warmup", "1", "--inference-runs", "3")
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


def test_every_format_has_an_artifact_record(tiny_run):
    artifacts = {r["format"]: r for r in of_kind(tiny_run, "artifact")}
    assert set(artifacts) == set(FORMATS)
    for fmt, record in artifacts.items():
        if record["status"] == "ok":
            assert record["bytes"] > 0 and record["files"] >= 1, fmt
            assert record["params"] > 5_000 and record["save_s"] > 0, fmt
            assert record["io_floor_s"] is not None and record["io_floor_s"] > 0, fmt
            assert record["storage"]["kind"] in ("host", "image-layer", "bind-mount",
                                                 "volume", "tmpfs"), fmt
    assert artifacts["savedmodel"]["files"] > 1  # a directory


def test_unsupported_format_has_a_record_with_its_reason(tiny_run):
    ckpt = [r for r in tiny_run if r.get("format") == "weights-ckpt"]
    assert ckpt and {r["status"] for r in ckpt} == {"unsupported"}
    assert all("Keras 3" in r["reason"] for r in ckpt)
    # one record per cell, not one per planned trial
    assert Counter(r["cell_id"] for r in ckpt if r["kind"] == "trial") == {
        f"test-env/dense-10k/weights-ckpt/{mode}": 1 for mode in MODES}


def test_every_supported_cell_was_measured_and_proved(tiny_run):
    measured = [r for r in _measured(tiny_run) if r["format"] != "weights-ckpt"]
    assert {(r["format"], r["cache_mode"]) for r in measured} == {
        (f, m) for f in FORMATS if f != "weights-ckpt" for m in MODES}
    for r in measured:
        assert r["status"] == "ok", r
        assert r["import_s"] > 0 and r["load_s"] > 0 and r["load_cpu_s"] >= 0
        assert r["first_inference_s"] > 0 and r["inference_s"] > 0
        assert r["peak_rss_mb"] > 10
        if r["cache_mode"] == "cold-model":
            assert r["resident_before"] <= 0.01 and r["eviction"] == "fadvise"
        else:
            assert r["resident_before"] >= 0.95 and r["eviction"] == "read"


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
    assert {r["phase"] for r in warm} == {"warmup"} and {r["phase"] for r in measure} == {
        "measure"}
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

    The abort is injected with HARNESS_TEST_ABORT_ARTIFACT, a test-only hook that calls the real
    os.abort() in the real worker: no GPU or broken wheel is needed to reproduce the crash.
    """
    out = tmp_path_factory.mktemp("abort")
    proc = run_harness(out, "--models", "dense-10k", "--formats", "h5,tflite,tflite-fp16",
                       "--cache", "cold", "--repeats", "1", "--warmup", "0",
                       "--process", "both", env={"HARNESS_TEST_ABORT_ARTIFACT": "tflite"})
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
    """Cold means TF's own libraries too; a cold trial whose import was warm is `invalid`.

    (Libraries another process has mapped cannot be dropped: the suite imports no TF itself.)
    """
    cold = [r for r in of_kind(aborting_run, "trial")
            if r["cache_mode"] == "cold" and r["status"] in ("ok", "invalid")]
    assert cold, "cold trials ran (the suite runs as root, like CI)"
    for r in cold:
        assert r["eviction"] == "drop_caches" and r["resident_before"] <= 0.01
        if r["status"] == "ok":
            assert r["import_libs_resident_before"] <= 0.01
        else:
            assert "import was not cold" in r["reason"], r
    assert any(r["status"] == "ok" for r in cold)


def test_reused_process_mode_loads_repeatedly_in_one_process(aborting_run):
    reused = [r for r in of_kind(aborting_run, "trial") if r["process"] == "reused"]
    assert {r["format"] for r in reused} == {"h5", "tflite-fp16"}
    assert all(r["cell_id"].endswith("/reused") for r in reused)


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
    from harness.runner import COLD_REFUSED, ModelArtifacts, Options, Run, Saved

    run = Run(Options(out=str(tmp_path), run_id="r", env_id="e", models=["dense-10k"],
                      formats=["h5"], cache_modes=["cold"]))
    run.drop_via = None
    arts = ModelArtifacts(spec=parse_model("dense-10k"), saved={"h5": Saved("ok")})
    assert run.not_runnable(arts, "h5", "cold") == ("unsupported", COLD_REFUSED)
    assert run.not_runnable(arts, "h5", "cold-model") is None
    assert "--allow-cache-drop" in COLD_REFUSED and "cold-model" in COLD_REFUSED
