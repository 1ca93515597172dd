"""Every format is a saver and a loader, chosen by what the running TF/Keras supports.

Savers write *artifacts*; several formats may read the same artifact (`savedmodel` and
`savedmodel-keras` load one SavedModel two ways). A saver that the running Keras cannot do says
why instead of guessing: the reason becomes an `unsupported` record. The rules follow
shared/reference/tf-compat.md §3 (save/load API per Keras generation).

No TensorFlow import at module level: the trial worker imports this before its import clock.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.runtime import Runtime

if TYPE_CHECKING:  # annotations only: collections.abc.Callable[...] fails at run time on 3.8
    Predictor = Callable[[Any], Any]
ARCHITECTURE = "architecture.json"


@dataclass(frozen=True)
class Artifact:
    """How one artifact is written."""

    name: str
    filename: str
    save: Callable[[Runtime, Any, str, Any], None]  # (runtime, model, path, sample input)
    unsupported: Callable[[Runtime], str | None]


@dataclass(frozen=True)
class Format:
    """How one format is loaded, and which runtime its import clock covers."""

    name: str
    artifact: str
    import_target: str  # "tensorflow", "tensorflow+keras" or "tflite"
    load: Callable[[Runtime, str], Predictor]


def _always(_rt: Runtime) -> str | None:
    return None


# ---- savers -----------------------------------------------------------------------------------

def _save_savedmodel(rt: Runtime, model: Any, path: str, _x: Any) -> None:
    if rt.keras3:
        model.export(path)  # Keras 3's model.save refuses a directory
    else:
        model.save(path, save_format="tf")


def _save_h5(_rt: Runtime, model: Any, path: str, _x: Any) -> None:
    model.save(path)


def _keras_zip_unsupported(rt: Runtime) -> str | None:
    if rt.keras_impl == "keras2" and rt.tf_version < (2, 12):
        return "Keras < 2.12 writes HDF5 under a .keras name; the v3 zip format does not exist yet"
    return None


def _save_keras_zip(rt: Runtime, model: Any, path: str, _x: Any) -> None:
    if rt.keras_impl == "keras2" and rt.tf_version == (2, 12):
        model.save(path, save_format="keras_v3")  # 2.12 still defaults to HDF5 for .keras
    else:
        model.save(path)


def _write_architecture(model: Any, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ARCHITECTURE), "w") as handle:
        handle.write(model.to_json())


def _save_weights_h5(_rt: Runtime, model: Any, path: str, _x: Any) -> None:
    _write_architecture(model, path)
    model.save_weights(os.path.join(path, "model.weights.h5"))


def _ckpt_unsupported(rt: Runtime) -> str | None:
    if rt.keras3:
        return "Keras 3 saves weights only as .weights.h5; TF-checkpoint weights are Keras 2 only"
    return None


def _save_weights_ckpt(_rt: Runtime, model: Any, path: str, _x: Any) -> None:
    _write_architecture(model, path)
    model.save_weights(os.path.join(path, "ckpt"), save_format="tf")


def _converter(rt: Runtime, model: Any) -> Any:
    """A TFLite converter for the model, by the route that works on this TF/Keras pair.

    TF 2.16 has no Keras 3 branch in from_keras_model (it fails or aborts), so with Keras 3
    before 2.17 the model is exported to a SavedModel first and converted from there.
    """
    lite = rt.tf.lite
    if rt.keras3 and rt.tf_version < (2, 17):
        folder = tempfile.mkdtemp(prefix="tflite-export-")
        model.export(folder)
        return lite.TFLiteConverter.from_saved_model(folder)
    return lite.TFLiteConverter.from_keras_model(model)


def _tflite_saver(quantize: str) -> Callable[[Runtime, Any, str, Any], None]:
    def save(rt: Runtime, model: Any, path: str, x: Any) -> None:
        converter = _converter(rt, model)
        if quantize == "fp16":
            converter.optimizations = [rt.tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [rt.tf.float16]
        elif quantize == "int8":
            import numpy as np

            rng = np.random.default_rng(7)

            def representative() -> Any:
                for _ in range(8):
                    yield [rng.standard_normal(x.shape).astype(x.dtype)]

            converter.optimizations = [rt.tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
        with open(path, "wb") as handle:
            handle.write(converter.convert())

    return save


ARTIFACTS: dict[str, Artifact] = {
    a.name: a
    for a in (
        Artifact("savedmodel", "savedmodel", _save_savedmodel, _always),
        Artifact("h5", "model.h5", _save_h5, _always),
        Artifact("keras", "model.keras", _save_keras_zip, _keras_zip_unsupported),
        Artifact("weights-h5", "weights-h5", _save_weights_h5, _always),
        Artifact("weights-ckpt", "weights-ckpt", _save_weights_ckpt, _ckpt_unsupported),
        Artifact("tflite", "model.tflite", _tflite_saver(""), _always),
        Artifact("tflite-fp16", "model-fp16.tflite", _tflite_saver("fp16"), _always),
        Artifact("tflite-int8", "model-int8.tflite", _tflite_saver("int8"), _always),
    )
}


# ---- loaders ----------------------------------------------------------------------------------

def first_output(value: Any) -> Any:
    """First output as a numpy array, whatever container the loader returned."""
    if isinstance(value, dict):
        value = value[sorted(value)[0]]
    if isinstance(value, (list, tuple)):
        value = value[0]
    return value.numpy() if hasattr(value, "numpy") else value


def _load_savedmodel(rt: Runtime, path: str) -> Predictor:
    loaded = rt.tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    names = list(signature.structured_input_signature[1])

    def predict(x: Any) -> Any:
        tensor = rt.tf.constant(x)
        return first_output(signature(**{names[0]: tensor}) if names else signature(tensor))

    # On TF 2.2 a signature does not keep its variables alive: a collected SavedModel object
    # fails the call with "Resource ... does not exist". The predictor holds it.
    predict.saved_model = loaded  # type: ignore[attr-defined]
    return predict


def _load_savedmodel_keras(rt: Runtime, path: str) -> Predictor:
    if rt.keras3:  # Keras 3's load_model refuses SavedModels; TFSMLayer is its documented way
        layer = rt.keras.layers.TFSMLayer(path, call_endpoint="serve")
        return lambda x: first_output(layer(x))
    model = rt.keras.models.load_model(path, compile=False)
    return lambda x: first_output(model(x, training=False))


def _load_keras_model(rt: Runtime, path: str) -> Predictor:
    model = rt.keras.models.load_model(path, compile=False)
    return lambda x: first_output(model(x, training=False))


def _weights_loader(weights_file: str) -> Callable[[Runtime, str], Predictor]:
    def load(rt: Runtime, path: str) -> Predictor:
        with open(os.path.join(path, ARCHITECTURE)) as handle:
            model = rt.keras.models.model_from_json(handle.read())
        model.load_weights(os.path.join(path, weights_file))
        return lambda x: first_output(model(x, training=False))

    return load


def _load_tflite(rt: Runtime, path: str) -> Predictor:
    interpreter = rt.interpreter(model_path=path)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]

    def predict(x: Any) -> Any:
        interpreter.set_tensor(source["index"], x.astype(source["dtype"], copy=False))
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])

    return predict


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("savedmodel", "savedmodel", "tensorflow", _load_savedmodel),
        Format("savedmodel-keras", "savedmodel", "tensorflow+keras", _load_savedmodel_keras),
        Format("h5", "h5", "tensorflow+keras", _load_keras_model),
        Format("keras", "keras", "tensorflow+keras", _load_keras_model),
        Format("weights-h5", "weights-h5", "tensorflow+keras", _weights_loader("model.weights.h5")),
        Format("weights-ckpt", "weights-ckpt", "tensorflow+keras", _weights_loader("ckpt")),
        Format("tflite", "tflite", "tflite", _load_tflite),
        Format("tflite-fp16", "tflite-fp16", "tflite", _load_tflite),
        Format("tflite-int8", "tflite-int8", "tflite", _load_tflite),
    )
}


def artifacts_for(formats: list[str]) -> list[str]:
    """The artifacts the requested formats need, each once, in catalog order."""
    needed = {FORMATS[f].artifact for f in formats}
    return [name for name in ARTIFACTS if name in needed]

