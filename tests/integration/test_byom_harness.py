"""Bring your own model (issue 12), harness side: real models of each kind a user brings, built
with the real TensorFlow here and measured by the real harness CLI with `--model-options`.

One harness run measures them all (tiny models, four formats, one trial each), which also shows
that a model that cannot be measured never hides the others.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from harness.modelio import DEFAULT_DIM, InputError, InputSpec, Layout, pair, synthesise
from harness.parity import compare_outputs
from tests.integration.harness_helpers import of_kind, read_records, run_harness
from tests.integration.user_code import SCALE_LAYER

# The user's own module: one layer registered with Keras, one only passed as custom_objects.
USER_LAYERS = (
    SCALE_LAYER
    + """

class Offset(keras.layers.Layer):
    def call(self, x):
        return x + 1.0
"""
)

MAKE_MODELS = """
import os
import sys

import keras
import numpy as np
import tensorflow as tf

folder = sys.argv[1]
sys.path.insert(0, folder)
from byom_layers import Offset, Scale  # noqa: E402

keras.utils.set_random_seed(0)
custom = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), Scale(3.0), Offset()])
custom.save(os.path.join(folder, "custom.keras"))

feat, extra = keras.Input((8,), name="feat"), keras.Input((4,), name="extra")
hidden = keras.layers.Dense(6, activation="tanh")(keras.layers.Concatenate()([feat, extra]))
multi = keras.Model({"feat": feat, "extra": extra},
                    {"score": keras.layers.Dense(1)(hidden),
                     "probs": keras.layers.Dense(3, activation="softmax")(hidden)})
multi.save(os.path.join(folder, "multi.keras"))
multi.save(os.path.join(folder, "multi_data.keras"))
rng = np.random.default_rng(5)
np.savez(os.path.join(folder, "multi_data.npz"), feat=rng.standard_normal((3, 8)),
         extra=rng.standard_normal((3, 4)))

sequence = keras.Sequential([keras.Input((None, 3), name="seq"), keras.layers.GRU(4),
                             keras.layers.Dense(2)])
sequence.save(os.path.join(folder, "sequence.keras"))

tokens = keras.Sequential([keras.Input((None,), dtype="int32", name="tokens"),
                           keras.layers.Embedding(1000, 8),
                           keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])
tokens.save(os.path.join(folder, "tokens.keras"))


class Affine(tf.Module):
    def __init__(self):
        self.w = tf.Variable(tf.random.stateless_normal((6, 3), seed=(1, 2)))
        self.b = tf.Variable(tf.zeros(3))

    @tf.function(input_signature=[tf.TensorSpec((None, 6), tf.float32, name="x")])
    def __call__(self, x):
        return {"y": tf.tanh(tf.matmul(x, self.w) + self.b)}


affine = Affine()
tf.saved_model.save(affine, os.path.join(folder, "affine_module"),
                    signatures={"serving_default": affine.__call__})


class Lengths(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="text")])
    def __call__(self, text):
        return {"length": tf.cast(tf.strings.length(text), tf.float32)}


lengths = Lengths()
tf.saved_model.save(lengths, os.path.join(folder, "text_module"),
                    signatures={"serving_default": lengths.__call__})
"""

MODELS = (
    "custom.keras",
    "multi.keras",
    "multi_data.keras",
    "sequence.keras",
    "tokens.keras",
    "affine_module",
    "text_module",
)
FORMATS = ("h5", "savedmodel", "savedmodel-keras", "tflite")


@pytest.fixture(scope="module")
def byom(tmp_path_factory):
    """Every kind of model, measured in one harness run; (folder, records)."""
    folder = tmp_path_factory.mktemp("byom")
    (folder / "byom_layers.py").write_text(USER_LAYERS)
    made = subprocess.run(
        [sys.executable, "-c", MAKE_MODELS, str(folder)], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr[-3000:]
    models = [str(folder / name) for name in MODELS]
    options = {
        models[0]: {"code": [str(folder / "byom_layers.py")]},
        models[2]: {"inputs": str(folder / "multi_data.npz")},
        models[3]: {"dims": {"seq": 5}},
        models[4]: {"dims": {"tokens": 12}},
    }
    options_file = folder / "options.json"
    options_file.write_text(json.dumps(options))
    out = folder / "out"
    proc = run_harness(
        out,
        "--models",
        ",".join(models),
        "--formats",
        ",".join(FORMATS),
        "--cache",
        "warm",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--inference-runs",
        "1",
        "--model-options",
        str(options_file),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, read_records(out)


def _by_format(records: list[dict], kind: str, model: str) -> dict[str, dict]:
    return {r["format"]: r for r in of_kind(records, kind) if r["model"] == model}


def _assert_loaded(trials: dict[str, dict]) -> None:
    """Every format loaded: `ok`, or `invalid` when a busy host evicted what a warm trial needs
    resident (a cache proof, not the model's doing)."""
    assert set(trials) == set(FORMATS)
    for fmt, trial in trials.items():
        assert trial["status"] == "ok" or (
            trial["status"] == "invalid" and "resident" in trial.get("reason", "")
        ), (fmt, trial["status"], trial.get("reason"))


def _parity_inputs(out, model: str) -> dict[str, np.ndarray]:
    with np.load(out / "artifacts" / "test-env" / model / "parity-inputs.npz") as data:
        return {name: data[name] for name in data.files}


def test_no_model_fails_as_a_whole(byom):
    _, records = byom
    assert of_kind(records, "failure") == []
    assert {r["model"] for r in of_kind(records, "artifact")} == set(MODELS)


def test_custom_layers_load_with_the_users_code(byom):
    _, records = byom
    trials = _by_format(records, "trial", "custom.keras")
    _assert_loaded(trials)
    assert {r["parity_status"] for r in trials.values()} == {"pass"}
    # The user's code is imported, and timed apart, in every process that loads it with Keras.
    assert trials["h5"]["user_code_import_s"] > 0
    assert trials["savedmodel-keras"]["user_code_import_s"] > 0
    assert trials["tflite"]["user_code_import_s"] is None  # the interpreter runs no Python
    artifact = _by_format(records, "artifact", "custom.keras")["h5"]
    assert artifact["user_code_import_s"] > 0


def test_several_named_inputs_and_dict_outputs_are_fed_and_all_compared(byom):
    _, records = byom
    artifact = _by_format(records, "artifact", "multi.keras")["h5"]
    assert {(i["name"], tuple(i["shape"])) for i in artifact["inputs"]} == {
        ("extra", (4,)),
        ("feat", (8,)),
    }
    assert {o["name"] for o in artifact["outputs"]} == {"score", "probs"}
    trials = _by_format(records, "trial", "multi.keras")
    _assert_loaded(trials)
    for trial in trials.values():
        assert trial["parity_status"] == "pass" and trial["parity_outputs"] == 2, trial
    assert trials["savedmodel-keras"]["inference_call"] == "TFSMLayer"


def test_the_users_npz_is_the_parity_and_inference_input(byom):
    out, records = byom
    artifact = _by_format(records, "artifact", "multi_data.keras")["savedmodel"]
    assert artifact["input_source"].endswith("multi_data.npz")
    used = _parity_inputs(out, "multi_data.keras")
    assert used["feat"].shape == (3, 8)  # the user's three rows, not the synthetic four
    given = np.load(out.parent / "multi_data.npz")
    np.testing.assert_allclose(used["feat"], given["feat"].astype("float32"))
    trials = _by_format(records, "trial", "multi_data.keras")
    assert {r["parity_status"] for r in trials.values()} == {"pass"}


def test_a_dynamic_time_dimension_takes_the_size_given(byom):
    out, records = byom
    assert _parity_inputs(out, "sequence.keras")["seq"].shape == (4, 5, 3)
    artifact = _by_format(records, "artifact", "sequence.keras")["tflite"]
    assert artifact["inputs"][0]["shape"] == [None, 3]
    # TFLite cannot lower the GRU's loop over a dynamic time axis: the harness retries and
    # records which converter options produced the file, and why the others failed.
    assert artifact["status"] == "ok", artifact
    assert artifact["tflite_converter_options"] == ["fixed_input_shapes", "TFLITE_BUILTINS"]
    assert "TensorList" in artifact["tflite_converter_failed"][0]
    trials = _by_format(records, "trial", "sequence.keras")
    assert {f: r["parity_status"] for f, r in trials.items()} == dict.fromkeys(FORMATS, "pass")


def test_token_ids_are_drawn_from_the_embeddings_range(byom):
    out, records = byom
    ids = _parity_inputs(out, "tokens.keras")["tokens"]
    assert ids.shape == (4, 12) and ids.dtype == np.int32
    assert ids.min() >= 0 and 10 < ids.max() < 1000  # the whole vocabulary, not a small range
    artifact = _by_format(records, "artifact", "tokens.keras")["h5"]
    assert artifact["inputs"][0]["id_range"] == 1000
    trials = _by_format(records, "trial", "tokens.keras")
    assert {f: r["parity_status"] for f, r in trials.items()} == dict.fromkeys(FORMATS, "pass")


def test_a_tf_module_savedmodel_is_measured_through_its_signature(byom):
    _, records = byom
    artifacts = _by_format(records, "artifact", "affine_module")
    assert artifacts["savedmodel"]["status"] == artifacts["tflite"]["status"] == "ok"
    for fmt in ("h5", "savedmodel-keras"):
        assert artifacts[fmt]["status"] == "unsupported", artifacts[fmt]
        assert "SavedModel" in artifacts[fmt]["reason"]
    trials = _by_format(records, "trial", "affine_module")
    assert trials["savedmodel"]["parity_status"] == trials["tflite"]["parity_status"] == "pass"
    assert {trials[f]["status"] for f in ("h5", "savedmodel-keras")} == {"unsupported"}


def test_an_input_the_tool_cannot_synthesise_is_named(byom):
    _, records = byom
    for record in _by_format(records, "artifact", "text_module").values():
        assert record["status"] == "unsupported"
        assert "'text'" in record["reason"] and "string" in record["reason"], record


# ---- the pieces on plain arrays (fast, beside the real run above) -------------------------------


def test_one_broken_output_of_two_fails_parity():
    rng = np.random.default_rng(0)
    reference = {"score": rng.standard_normal((4, 1)), "probs": rng.random((4, 3))}
    exact = compare_outputs(dict(reference), reference, "h5")
    assert exact["parity_status"] == "pass" and exact["parity_outputs"] == 2
    broken = {"score": reference["score"], "probs": reference["probs"][::-1]}
    assert compare_outputs(broken, reference, "h5")["parity_status"] == "fail"
    missing = {"score": reference["score"]}
    assert compare_outputs(missing, reference, "h5")["parity_status"] == "fail"


def test_outputs_pair_by_name_else_position_else_shape():
    assert pair({"a": (1, 3), "b": (1, 1)}, {"b": (1, 1), "a": (1, 3)}) == {"a": "a", "b": "b"}
    assert pair({"output_0": (1, 3)}, {"dense_1": (1, 3)}) == {"output_0": "dense_1"}
    assert pair({"a": (1, 3), "b": (1, 1)}, {"x": (1, 1), "y": (-1, 3)}) == {"a": "y", "b": "x"}


def test_synthetic_inputs_fill_dynamic_dims_and_refuse_strings():
    layout = Layout(
        [InputSpec("tokens", [None], "int32", id_range=50), InputSpec("seq", [None, 3], "float32")],
        "list",
        dims={"tokens": 7},
    )
    batch = synthesise(layout)
    assert batch["tokens"].shape == (4, 7) and batch["tokens"].max() < 50
    assert batch["seq"].shape == (4, DEFAULT_DIM, 3)
    with pytest.raises(InputError, match="'text'"):
        synthesise(Layout([InputSpec("text", [], "string")], "single"))
