"""A user's own model files are converted to the other formats; unrebuildable ones are reported."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.integration.harness_helpers import of_kind, read_records, run_harness

MAKE_MODELS = """
import sys
import keras  # Keras 3: tf.keras is its compatibility namespace, without `saving`
plain = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
plain.save(sys.argv[1] + "/mine.keras")
plain.export(sys.argv[1] + "/mine_savedmodel")

@keras.saving.register_keras_serializable(package="only_in_this_process")
class Twice(keras.layers.Layer):
    def call(self, x):
        return 2 * x

custom = keras.Sequential([keras.Input((8,)), Twice()])
custom.save(sys.argv[1] + "/custom.keras")
"""


def test_user_files_are_converted_and_custom_objects_reported(tmp_path):
    made = subprocess.run(
        [sys.executable, "-c", MAKE_MODELS, str(tmp_path)], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr[-2000:]
    out = tmp_path / "out"
    models = ",".join(str(tmp_path / n) for n in ("mine.keras", "mine_savedmodel", "custom.keras"))
    proc = run_harness(
        out,
        "--models",
        models,
        "--formats",
        "h5,tflite,savedmodel",
        "--cache",
        "warm",
        "--repeats",
        "1",
        "--warmup",
        "0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records(out)
    ok = {(r["model"], r["format"]) for r in of_kind(records, "trial") if r["status"] == "ok"}
    assert {("mine.keras", f) for f in ("h5", "tflite", "savedmodel")} <= ok
    assert ("mine_savedmodel", "savedmodel") in ok
    # Keras 3 cannot rebuild a Keras model from a SavedModel: its Keras formats say so.
    h5_of_savedmodel = next(
        r
        for r in of_kind(records, "artifact")
        if r["model"] == "mine_savedmodel" and r["format"] == "h5"
    )
    assert h5_of_savedmodel["status"] == "unsupported"
    assert "SavedModel" in h5_of_savedmodel["reason"]
    failures = of_kind(records, "failure")
    assert [f["model"] for f in failures] == ["custom.keras"]
    assert "cannot rebuild" in failures[0]["reason"] and "Twice" in failures[0]["reason"]
    assert "`code`" in failures[0]["reason"]  # the fix: give the module that defines it
    custom_cells = [r for r in of_kind(records, "trial") if r["model"] == "custom.keras"]
    assert custom_cells and {r["status"] for r in custom_cells} == {"error"}


def test_bad_model_options_are_one_line_and_exit_2(tmp_path):
    """Checked before anything runs (no TensorFlow): a typo in a model name, a missing file."""
    model = tmp_path / "mine.keras"
    model.write_bytes(b"")
    cases = {
        "not one of --models": {"other.keras": {}},
        "not an existing .py file": {str(model): {"code": [str(tmp_path / "missing.py")]}},
        "not an existing .npz file": {str(model): {"inputs": str(tmp_path / "data.csv")}},
        "`dims` must map": {str(model): {"dims": {"tokens": 0}}},
    }
    for expected, options in cases.items():
        path = tmp_path / "options.json"
        path.write_text(json.dumps(options))
        proc = run_harness(tmp_path / "out", "--models", str(model), "--model-options", str(path))
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()
