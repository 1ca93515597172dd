"""Every format is a saver and a loader, chosen by what the running TF/Keras supports.

Savers write *artifacts*, which several formats may read (`savedmodel`, `savedmodel-keras`). What
the running Keras cannot save says why, as an `unsupported` record; the rules are Keras's own per
generation (`saving_api.py` at the keras-team/keras and keras-team/tf-keras release tags, TF's
`lite/python/lite.py`). No TF or numpy import at module level: the trial worker imports this
before its import clock, and savers and loaders import numpy only when called.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.runtime import Runtime

if TYPE_CHECKING:  # annotations only: collections.abc.Callable[...] fails at run time on 3.8
    from harness.modelio import Layout

    PredictFn = Callable[[Any], Any]
ARCHITECTURE = "architecture.json"


@dataclass(frozen=True)
class Predictor:
    """A loaded model's inference entry point, called the way a server calls that format:
    it takes one row of every input by name and returns every output by name.

    `call` names it (the trial's `inference_call`). `owner` keeps alive what the entry point
    needs: on TF 2.2 a SavedModel signature fails with "Resource ... does not exist" once its
    SavedModel object is collected.
    """

    run: PredictFn
    call: str
    owner: Any = None

    def __call__(self, x: Any) -> Any:
        return self.run(x)


class Unsupported(Exception):
    """This artifact cannot be made of this model here; the message says why (a record reason)."""


@dataclass(frozen=True)
class Artifact:
    """How one artifact is written. `save` returns extra fields for its artifact record."""

    name: str
    filename: str
    save: Callable[[Runtime, Any, str, Layout, dict], dict | None]
    unsupported: Callable[[Runtime], str | None]
    keras_only: bool = True  # a SignatureModel (no Keras model) cannot be saved this way


@dataclass(frozen=True)
class Format:
    """How one format is loaded, and which runtime its import clock covers."""

    name: str
    artifact: str
    import_target: str  # "tensorflow", "tensorflow+keras" or "tflite"
    load: Callable[[Runtime, str, Layout], Predictor]


def _always(_rt: Runtime) -> str | None:
    return None


# ---- savers: (runtime, model, path, input layout, parity batch) -> extra record fields --------


def _save_savedmodel(rt: Runtime, model: Any, path: str, _layout: Layout, _b: dict) -> None:
    from harness.models import SignatureModel

    if isinstance(model, SignatureModel):  # already a SavedModel: the user's own directory
        shutil.copytree(model.path, path)
    elif rt.keras3:
        model.export(path)  # Keras 3's model.save refuses a directory
    else:
        model.save(path, save_format="tf")


def _save_h5(_rt: Runtime, model: Any, path: str, _layout: Layout, _b: dict) -> None:
    model.save(path)


def _keras_zip_unsupported(rt: Runtime) -> str | None:
    if rt.keras_impl == "keras2" and rt.tf_version < (2, 12):
        return "Keras < 2.12 writes HDF5 under a .keras name; the v3 zip format does not exist yet"
    return None


def _save_keras_zip(rt: Runtime, model: Any, path: str, _layout: Layout, _b: dict) -> None:
    if rt.keras_impl == "keras2" and rt.tf_version == (2, 12):
        model.save(path, save_format="keras_v3")  # 2.12 still defaults to HDF5 for .keras
    else:
        model.save(path)


def _write_architecture(model: Any, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ARCHITECTURE), "w") as handle:
        handle.write(model.to_json())


def _save_weights_h5(_rt: Runtime, model: Any, path: str, _layout: Layout, _b: dict) -> None:
    _write_architecture(model, path)
    model.save_weights(os.path.join(path, "model.weights.h5"))


def _ckpt_unsupported(rt: Runtime) -> str | None:
    if rt.keras3:
        return "Keras 3 saves weights only as .weights.h5; TF-checkpoint weights are Keras 2 only"
    return None


def _save_weights_ckpt(_rt: Runtime, model: Any, path: str, _layout: Layout, _b: dict) -> None:
    _write_architecture(model, path)
    model.save_weights(os.path.join(path, "ckpt"), save_format="tf")


# TFLite conversion attempts, in order, as (route, op sets): the plain converter first, then what
# users reach for when it fails. `from_saved_model` converts the model's SavedModel export (the
# route the plain converter of some TF/Keras pairs fails to take); `fixed_input_shapes` a
# SavedModel whose serving signature takes the parity batch's row shapes (batch 1, dynamic
# dimensions filled), for shapes the converter cannot handle; SELECT_TF_OPS lets TensorFlow
# kernels run what TFLite has no builtin for (the interpreter then needs the Flex delegate,
# which LiteRT lacks: such a file loads with tf.lite only). Builtins-only routes come first
# because their files run in every interpreter.
_BUILTINS = ("TFLITE_BUILTINS",)
_SELECT = ("TFLITE_BUILTINS", "SELECT_TF_OPS")
TFLITE_ATTEMPTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("plain", _BUILTINS),
    ("from_saved_model", _BUILTINS),
    ("fixed_input_shapes", _BUILTINS),
    ("from_saved_model", _SELECT),
    ("fixed_input_shapes", _SELECT),
)


def _converter(rt: Runtime, model: Any, route: str, layout: Layout, batch: dict) -> tuple[Any, str]:
    """(a TFLite converter for the model by `route`, the route's own name).

    `plain`: from_keras_model; for a SignatureModel, and with Keras 3 before TF 2.17 (which
    has no Keras 3 branch in from_keras_model: it fails or aborts), from_saved_model.
    """
    from harness.models import SignatureModel

    lite = rt.tf.lite
    signature_only = isinstance(model, SignatureModel)
    if route == "fixed_input_shapes":
        return lite.TFLiteConverter.from_saved_model(
            _fixed_shape_export(rt, model, layout, batch)
        ), route
    if signature_only:
        return lite.TFLiteConverter.from_saved_model(model.path), "from_saved_model"
    if route == "from_saved_model" or (rt.keras3 and rt.tf_version < (2, 17)):
        folder = tempfile.mkdtemp(prefix="tflite-export-")
        _save_savedmodel(rt, model, folder, layout, batch)
        return lite.TFLiteConverter.from_saved_model(folder), "from_saved_model"
    return lite.TFLiteConverter.from_keras_model(model), "from_keras_model"


def _fixed_shape_export(rt: Runtime, model: Any, layout: Layout, batch: dict) -> str:
    """A SavedModel of the model's call whose inputs have batch 1 and `batch`'s row shapes."""
    from harness.models import SignatureModel

    tf = rt.tf
    specs = {
        spec.name: tf.TensorSpec((1, *batch[spec.name].shape[1:]), spec.dtype, name=spec.name)
        for spec in layout.inputs
    }
    folder = tempfile.mkdtemp(prefix="tflite-fixed-")
    if rt.keras3 and not isinstance(model, SignatureModel):
        # Keras's own export: a plain tf.function of a Keras 3 RNN leaves its variables
        # uninitialised in the TFLite file (READ_VARIABLE fails at invoke).
        model.export(folder, input_signature=[layout.feed(specs)], verbose=False)
        return folder
    if isinstance(model, SignatureModel):
        signature, owner = model.signature, model.loaded
        function = tf.function(lambda **kw: signature(**kw)).get_concrete_function(**specs)
    else:
        owner = model
        function = tf.function(lambda inputs: model(inputs, training=False)).get_concrete_function(
            layout.feed(specs)
        )
    tf.saved_model.save(owner, folder, signatures={"serving_default": function})
    return folder


def _converter_error(exc: BaseException) -> str:
    """The converter's own diagnosis: its `error:` lines, else the exception's first line."""
    text = str(exc).strip()
    errors = [line.split("error:", 1)[1].strip() for line in text.splitlines() if "error:" in line]
    # MLIR prefixes each with the op's location, `loc(callsite(...)): `: keep the message
    errors = [e.rsplit(")): ", 1)[-1] if e.startswith("loc(") else e for e in errors]
    if errors:
        return "; ".join(dict.fromkeys(errors))[:400]
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:400]


def _tflite_saver(quantize: str) -> Callable[[Runtime, Any, str, Layout, dict], dict]:
    def save(rt: Runtime, model: Any, path: str, layout: Layout, batch: dict) -> dict:
        failed: list[str] = []
        tried: set[tuple[str, tuple[str, ...]]] = set()
        for route, ops in TFLITE_ATTEMPTS:
            try:
                converter, name = _converter(rt, model, route, layout, batch)
                if (name, ops) in tried:  # `plain` already took this route
                    continue
                tried.add((name, ops))
                converter.target_spec.supported_ops = [getattr(rt.tf.lite.OpsSet, op) for op in ops]
                _quantize(rt, converter, quantize, layout, batch)
                flatbuffer = converter.convert()
            except Exception as exc:  # the converter's many error types; each is reported
                failed.append(f"{route} {'+'.join(ops)}: {_converter_error(exc)}")
                continue
            with open(path, "wb") as handle:
                handle.write(flatbuffer)
            return {"tflite_converter_options": [name, *ops], "tflite_converter_failed": failed}
        raise Unsupported("the TFLite converter failed: " + " | ".join(failed))

    return save


def _quantize(rt: Runtime, converter: Any, quantize: str, layout: Layout, batch: dict) -> None:
    """fp16 weights, or int8 calibrated on inputs like the parity batch (other seeds)."""
    if quantize == "fp16":
        converter.optimizations = [rt.tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [rt.tf.float16]
    elif quantize == "int8":
        converter.optimizations = [rt.tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _calibration(layout, batch)


def _calibration(layout: Layout, batch: dict) -> Any:
    """Eight batch-1 inputs: synthetic ones (seeds 7…), or the user's own rows."""
    from harness.modelio import row, rows, synthesise

    user = layout.source != "synthetic"
    for index in range(8):
        sample = (
            row(batch, index % rows(batch))
            if user
            else row(synthesise(layout, rows=1, seed=7 + index), 0)
        )
        # several inputs by name: TFLite orders a signature's inputs by name, not as Keras does
        yield (
            [sample[spec.name] for spec in layout.inputs]
            if len(layout.inputs) == 1
            else {spec.name: sample[spec.name] for spec in layout.inputs}
        )


ARTIFACTS: dict[str, Artifact] = {
    a.name: a
    for a in (
        Artifact("savedmodel", "savedmodel", _save_savedmodel, _always, keras_only=False),
        Artifact("h5", "model.h5", _save_h5, _always),
        Artifact("keras", "model.keras", _save_keras_zip, _keras_zip_unsupported),
        Artifact("weights-h5", "weights-h5", _save_weights_h5, _always),
        Artifact("weights-ckpt", "weights-ckpt", _save_weights_ckpt, _ckpt_unsupported),
        Artifact("tflite", "model.tflite", _tflite_saver(""), _always, keras_only=False),
        Artifact(
            "tflite-fp16", "model-fp16.tflite", _tflite_saver("fp16"), _always, keras_only=False
        ),
        Artifact(
            "tflite-int8", "model-int8.tflite", _tflite_saver("int8"), _always, keras_only=False
        ),
    )
}


# ---- loaders: each predictor takes one row of every input by name, returns outputs by name ----


def _load_savedmodel(rt: Runtime, path: str, layout: Layout) -> Predictor:
    """The serving signature, as TF Serving calls it, every input by its signature name."""
    from harness.modelio import named_outputs, pair

    loaded = rt.tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    offered = {
        name: tuple(_dims_or_none(spec.shape))
        for name, spec in signature.structured_input_signature[1].items()
    }
    names = pair({s.name: (None, *s.shape) for s in layout.inputs}, offered)

    def predict(x: dict) -> dict:
        return named_outputs(signature(**{names[k]: rt.tf.constant(v) for k, v in x.items()}))

    return Predictor(predict, "serving_default signature", owner=loaded)


def _dims_or_none(shape: Any) -> list[int | None]:
    return [None if d is None else int(d) for d in list(shape)]


def _keras_predictor(model: Any, layout: Layout) -> Predictor:
    """`predict_on_batch`: Keras's compiled predict function, the call a Keras server makes.

    Measured on MobileNetV2 (TF 2.21, Keras 3, 2 shared cores): eager `model(x)` costs 0.5-0.8 s
    a call; `predict_on_batch` 50-80 ms steady, the same as a hand-written
    `tf.function(model)` within this machine's noise, at a first call of ~3.2 s against ~2.6 s
    (it also builds Keras's predict step). Being public API on Keras 2 and 3 alike, it is what
    a server written against Keras uses; `predict()` adds a data pipeline per call (~200 ms).
    """
    from harness.modelio import named_outputs

    if not hasattr(model, "predict_on_batch"):  # Keras 2 revives a SavedModel Keras did not write
        raise TypeError(f"load_model returned a {type(model).__name__}, not a Keras model")
    return Predictor(
        lambda x: named_outputs(model.predict_on_batch(layout.feed(x))),
        "predict_on_batch",
        owner=model,
    )


def _load_savedmodel_keras(rt: Runtime, path: str, layout: Layout) -> Predictor:
    from harness.modelio import named_outputs

    if rt.keras3:  # Keras 3's load_model refuses SavedModels; TFSMLayer is its documented way
        layer = rt.keras.layers.TFSMLayer(path, call_endpoint="serve")
        return Predictor(lambda x: named_outputs(layer(layout.feed(x))), "TFSMLayer", owner=layer)
    return _keras_predictor(rt.load_model(path), layout)


def _load_keras_model(rt: Runtime, path: str, layout: Layout) -> Predictor:
    return _keras_predictor(rt.load_model(path), layout)


def _weights_loader(weights_file: str) -> Callable[[Runtime, str, Layout], Predictor]:
    def load(rt: Runtime, path: str, layout: Layout) -> Predictor:
        with open(os.path.join(path, ARCHITECTURE)) as handle:
            model = rt.keras.models.model_from_json(
                handle.read(), custom_objects=rt.custom_objects or None
            )
        model.load_weights(os.path.join(path, weights_file))
        return _keras_predictor(model, layout)

    return load


def _tflite_names(interpreter: Any) -> tuple[dict[str, dict], dict[str, dict]]:
    """(input details, output details) by the serving signature's names where the file has
    one, else by tensor name (`serving_default_x:0` -> `x`)."""
    try:
        runner = interpreter.get_signature_runner()
        return runner.get_input_details(), runner.get_output_details()
    except (AttributeError, ValueError):  # no signature in the file, or TF < 2.8

        def by_name(details: list[dict]) -> dict[str, dict]:
            return {d["name"].split(":")[0].replace("serving_default_", ""): d for d in details}

        return by_name(interpreter.get_input_details()), by_name(interpreter.get_output_details())


def _load_tflite(rt: Runtime, path: str, layout: Layout) -> Predictor:
    """`invoke` with every input set by name; a dynamic input is resized to the row's shape at
    its first call (so inside `first_inference_s`), as a server resizes to its request."""
    from harness.modelio import pair

    interpreter = rt.interpreter(model_path=path)
    interpreter.allocate_tensors()
    inputs, outputs = _tflite_names(interpreter)
    names = pair(
        {s.name: (1, *s.shape) for s in layout.inputs},
        {n: tuple(int(v) for v in d.get("shape_signature", d["shape"])) for n, d in inputs.items()},
    )
    targets = {k: inputs[v] for k, v in names.items()}
    shapes = {k: tuple(int(v) for v in d["shape"]) for k, d in targets.items()}

    def predict(x: dict) -> dict:
        resize = {name: value.shape for name, value in x.items() if value.shape != shapes[name]}
        for name, shape in resize.items():
            interpreter.resize_tensor_input(targets[name]["index"], list(shape))
            shapes[name] = shape
        if resize:
            interpreter.allocate_tensors()
        for name, value in x.items():
            detail = targets[name]
            interpreter.set_tensor(detail["index"], value.astype(detail["dtype"], copy=False))
        interpreter.invoke()
        return {name: interpreter.get_tensor(d["index"]) for name, d in outputs.items()}

    return Predictor(predict, "tflite invoke", owner=interpreter)


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


# ---- cross-loading: the APIs a user of one stack tries on an artifact another stack saved ----

LOAD_MODEL = "keras.models.load_model"
TFSM_LAYER = "keras.layers.TFSMLayer"
TF_KERAS_LOAD_MODEL = "tf_keras.models.load_model"


def _load_tfsm_layer(rt: Runtime, path: str, layout: Layout) -> Predictor:
    """Keras 3's way to serve a SavedModel its `load_model` refuses. The endpoint is
    `serving_default`, the one Keras 2 saves and Keras 3 exports both have (Keras 3's own
    `serve` is missing from a Keras 2 SavedModel; Keras's refusal names `serving_default`)."""
    from harness.modelio import named_outputs

    layer = rt.keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    return Predictor(lambda x: named_outputs(layer(layout.feed(x))), "TFSMLayer", owner=layer)


def _load_with_tf_keras(rt: Runtime, path: str, layout: Layout) -> Predictor:
    """The legacy Keras 2 package beside Keras 3 (`pip install tf-keras`, `import tf_keras`)."""
    import tf_keras

    return _keras_predictor(tf_keras.models.load_model(path, compile=False), layout)


def _own_api(fmt: str) -> str:
    """The API a format's own loader uses, by the name a cross-load record gives it."""
    load = FORMATS[fmt].load
    if load is _load_savedmodel:
        return "tf.saved_model.load"
    if FORMATS[fmt].import_target == "tflite":
        return "tflite interpreter"
    if fmt.startswith("weights-"):
        return "keras.models.model_from_json"
    return LOAD_MODEL


def cross_load_apis(fmt: str, keras_impl: str, tf_keras_installed: bool) -> list[str]:
    """The loading APIs for another stack's artifact of `fmt`, in the order users try them:
    the format's usual call first, then the fallbacks this stack offers when it refuses.

    Keras 3 refuses `load_model` of any SavedModel and offers TFSMLayer; where the legacy
    tf-keras package is installed beside Keras 3, users load Keras 2 files with it.
    """
    apis = [_own_api(fmt)]
    if apis[0] == LOAD_MODEL and keras_impl == "keras3":
        if FORMATS[fmt].artifact == "savedmodel":
            apis.append(TFSM_LAYER)
        if tf_keras_installed:
            apis.append(TF_KERAS_LOAD_MODEL)
    return apis


def api_loader(fmt: str, api: str) -> Callable[[Runtime, str, Layout], Predictor]:
    """The loader of `fmt` through `api` (one of `cross_load_apis`); "" is the format's own."""
    special = {
        TFSM_LAYER: _load_tfsm_layer,
        TF_KERAS_LOAD_MODEL: _load_with_tf_keras,
        LOAD_MODEL: _load_keras_model,
    }
    return special.get(api, FORMATS[fmt].load) if api else FORMATS[fmt].load


def artifacts_for(formats: list[str]) -> list[str]:
    """The artifacts the requested formats need, each once, in catalog order."""
    needed = {FORMATS[f].artifact for f in formats}
    return [name for name in ARTIFACTS if name in needed]
