"""Parity can fail: the default untrained model is informative, a corrupted artifact fails.

Real TensorFlow runs in the harness's child processes. This process maps neither TensorFlow's
nor h5py's libraries (a cold trial elsewhere in the suite proves them evicted): the h5 file is
corrupted by a child too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.parity import TOLERANCES, compare
from tests.integration.harness_helpers import ROOT, of_kind, read_records, run_harness

CONSTANT_MODEL = """
import sys
import keras
zeros = keras.Sequential([keras.Input((8,)), keras.layers.Dense(
    4, kernel_initializer="zeros", bias_initializer="ones")])
zeros.save(sys.argv[1])
"""
# Overwrite the file's largest weight tensor with its own values in a seeded shuffle: same
# shape, dtype and statistics, wrong weights. Prints the tensor's name.
SHUFFLE_LARGEST_TENSOR = """
import sys
import h5py
import numpy as np
with h5py.File(sys.argv[1], "r+") as handle:
    tensors = []
    handle.visititems(lambda _, obj: tensors.append(obj)
                      if isinstance(obj, h5py.Dataset) and obj.ndim else None)
    largest = max(tensors, key=lambda d: d.size)
    values = largest[()]
    largest[()] = np.random.default_rng(0).permutation(values.ravel()).reshape(values.shape)
    print(largest.name)
"""


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """The default model at the default weights (none), two formats, one measured trial each."""
    out = tmp_path_factory.mktemp("mobilenet")
    proc = run_harness(
        out,
        "--models",
        "MobileNetV2",
        "--formats",
        "h5,tflite",
        "--cache",
        "warm",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--inference-runs",
        "1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, read_records(out)


def _trials(records: list[dict]) -> dict[str, dict]:
    return {r["format"]: r for r in of_kind(records, "trial") if r["status"] == "ok"}


def test_untrained_default_model_gives_an_informative_reference(mobilenet):
    out, records = mobilenet
    assert {r["parity_informative"] for r in of_kind(records, "artifact")} == {True}
    folder = out / "artifacts" / "test-env" / "MobileNetV2"
    with np.load(folder / "reference-0.npz") as outputs:
        reference = outputs["output_0"]
    assert reference.shape == (4, 1000)
    # Keras's own untrained MobileNetV2 gives exactly 0.001 everywhere, whatever the input.
    assert np.ptp(reference, axis=0).max() > 0.1 * np.abs(reference).max()
    trials = _trials(records)
    assert set(trials) == {"h5", "tflite"}
    for r in trials.values():
        assert r["parity_status"] == "pass" and r["parity_family"] == "float", r
        assert r["parity_rel_err"] <= r["parity_tolerance"] == TOLERANCES["float"]
        assert r["parity_top1_agreement"] == 1.0 and r["parity_cosine"] > 0.9999
    assert trials["h5"]["inference_call"] == "predict_on_batch"
    assert trials["tflite"]["inference_call"] == "tflite invoke"


def _trial_worker(fmt: str, artifact: Path, folder: Path, result: Path) -> dict:
    argv = [
        sys.executable,
        "-m",
        "harness.trial_worker",
        "--format",
        fmt,
        "--artifact",
        str(artifact),
        "--input",
        str(folder / "parity-inputs.npz"),
        "--reference",
        str(folder / "reference-0.npz"),
        "--inference-runs",
        "1",
        "--result",
        str(result),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(result.read_text())["loads"][0]


def test_a_corrupted_artifact_fails_parity_while_the_untouched_one_passes(mobilenet, tmp_path):
    out, records = mobilenet
    folder = out / "artifacts" / "test-env" / "MobileNetV2"
    corrupt = tmp_path / "model.h5"
    shutil.copy(folder / "model.h5", corrupt)
    shuffled = subprocess.run(
        [sys.executable, "-c", SHUFFLE_LARGEST_TENSOR, str(corrupt)], capture_output=True, text=True
    )
    assert shuffled.returncode == 0 and "kernel" in shuffled.stdout, shuffled.stderr[-2000:]
    broken = _trial_worker("h5", corrupt, folder, tmp_path / "broken.json")
    assert broken["parity_status"] == "fail", broken
    assert broken["parity_rel_err"] > TOLERANCES["float"]
    untouched = _trials(records)["tflite"]
    assert untouched["parity_status"] == "pass"


def test_a_model_whose_output_ignores_its_input_is_not_informative(tmp_path):
    model = tmp_path / "constant.keras"
    made = subprocess.run(
        [sys.executable, "-c", CONSTANT_MODEL, str(model)], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr[-2000:]
    out = tmp_path / "out"
    proc = run_harness(
        out,
        "--models",
        str(model),
        "--formats",
        "h5,tflite-int8",
        "--cache",
        "warm",
        "--repeats",
        "1",
        "--warmup",
        "0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records(out)
    assert {r["parity_informative"] for r in of_kind(records, "artifact")} == {False}
    trials = of_kind(records, "trial")
    assert {r["format"] for r in trials} == {"h5", "tflite-int8"}
    assert {r["parity_status"] for r in trials} == {"not-informative"}


# ---- the metric itself, on plain arrays (fast, beside the real runs above) ----------------------

REFERENCE = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.3, 0.3, 0.4], [0.2, 0.1, 0.7]])


@pytest.mark.parametrize("fmt", ["h5", "tflite-fp16", "tflite-int8"])
def test_an_output_that_ignores_the_input_fails_every_family(fmt):
    constant = np.tile(REFERENCE.mean(axis=0), (len(REFERENCE), 1))
    fields = compare(constant, REFERENCE, fmt)
    assert fields["parity_rel_err"] >= 0.5 > fields["parity_tolerance"]
    assert fields["parity_status"] == "fail"


def test_exact_outputs_pass_and_wrong_shapes_or_nan_fail():
    assert compare(REFERENCE.copy(), REFERENCE, "keras")["parity_status"] == "pass"
    assert compare(REFERENCE[:, :2], REFERENCE, "keras")["parity_status"] == "fail"
    with_nan = REFERENCE.copy()
    with_nan[0, 0] = np.nan
    fields = compare(with_nan, REFERENCE, "tflite")
    assert fields["parity_status"] == "fail" and fields["parity_rel_err"] is None


def test_a_constant_reference_is_never_a_pass():
    flat = np.full((4, 3), 0.001)
    for outputs in (flat, flat + 1.0):
        fields = compare(outputs, flat, "h5")
        assert fields["parity_status"] == "not-informative", fields
