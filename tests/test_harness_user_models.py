"""A user's own model files are converted to the other formats; unrebuildable ones are reported."""

from __future__ import annotations

import subprocess
import sys

from tests.harness_helpers import of_kind, read_records, run_harness

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
    made = subprocess.run([sys.executable, "-c", MAKE_MODELS, str(tmp_path)],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-2000:]
    out = tmp_path / "out"
    models = ",".join(str(tmp_path / n) for n in ("mine.keras", "mine_savedmodel",
                                                 "custom.keras"))
    proc = run_harness(out, "--models", models, "--formats", "h5,tflite,savedmodel",
                       "--cache", "warm", "--repeats", "1", "--warmup", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records(out)
    ok = {(r["model"], r["format"]) for r in of_kind(records, "trial") if r["status"] == "ok"}
    assert {("mine.keras", f) for f in ("h5", "tflite", "savedmodel")} <= ok
    assert ("mine_savedmodel", "savedmodel") in ok
    failures = of_kind(records, "failure")
    assert [f["model"] for f in failures] == ["custom.keras"]
    assert "cannot rebuild" in failures[0]["reason"] and "Twice" in failures[0]["reason"]
    custom_cells = [r for r in of_kind(records, "trial") if r["model"] == "custom.keras"]
    assert custom_cells and {r["status"] for r in custom_cells} == {"error"}
