"""Build the model to save: a keras.applications network, a dense size-ladder rung, or a file.

A file is a Keras model, or a SavedModel measured through its serving signature
(`SignatureModel`) where Keras cannot rebuild it.

Runs inside the save worker, with Keras already imported and handed in.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.catalog import ModelSpec, dense_width
from harness.modelio import InputError, InputSpec, Layout
from harness.runtime import Runtime


class ModelBuildError(RuntimeError):
    """The model cannot be built here (e.g. custom objects Keras cannot rebuild)."""


def build(rt: Runtime, spec: ModelSpec, weights: str) -> Any:
    """A Keras model (or a SignatureModel) for the spec; `weights`: 'none' or 'imagenet'."""
    keras = rt.keras
    if spec.kind == "application":
        constructor = getattr(keras.applications, spec.name, None)
        if constructor is None:
            raise ModelBuildError(
                f"keras.applications has no {spec.name} in Keras "
                f"{getattr(keras, '__version__', '?')}"
            )
        return constructor(weights=None if weights == "none" else weights)
    if spec.kind == "dense":
        width = dense_width(spec.params)
        layers = [keras.Input(shape=(256,))]
        layers += [keras.layers.Dense(width, activation="relu") for _ in range(4)]
        layers.append(keras.layers.Dense(10))
        return keras.Sequential(layers, name=spec.name.replace("-", "_"))
    return _from_file(rt, spec.path)


def initialise_untrained(rt: Runtime, model: Any, batch: np.ndarray) -> None:
    """Give an untrained model outputs that depend on its input, at unchanged load cost.

    Keras builds BatchNormalization with moving mean 0 and variance 1; under Glorot kernels the
    signal through an untrained MobileNetV2 shrinks to ~1e-11 and its softmax is exactly 0.001
    for every input, so no parity check could fail. This sets each BatchNormalization's moving
    statistics to those of its own input on the seeded batch. A training-mode pass normalises
    every BatchNormalization by exactly those batch statistics, so one pass of a model exposing
    every such input yields them all. Only the values of existing variables change (same
    variables, shapes and bytes), and only get_weights/set_weights are used (Keras 2 and 3).
    Models without BatchNormalization (the dense ladder) already vary with their input.
    """
    norms = [
        layer for layer in model.layers if isinstance(layer, rt.keras.layers.BatchNormalization)
    ]
    if not norms:
        return
    probe = rt.keras.Model(model.inputs, [layer.input for layer in norms])
    seen = probe(batch, training=True)
    for layer, value in zip(norms, seen if isinstance(seen, (list, tuple)) else [seen]):
        value = np.asarray(value, dtype="float64")
        kept = [a % value.ndim for a in np.atleast_1d(layer.axis)]
        axes = tuple(a for a in range(value.ndim) if a not in kept)
        stats = {"moving_mean": value.mean(axis=axes), "moving_variance": value.var(axis=axes)}
        updated = []
        for variable, current in zip(layer.weights, layer.get_weights()):
            name = next((key for key in stats if key in variable.name), None)
            updated.append(
                current
                if name is None
                else stats[name].astype(current.dtype).reshape(current.shape)
            )
        layer.set_weights(updated)


@dataclass
class SignatureModel:
    """A SavedModel measured through its serving signature: not Keras (a `tf.Module` exported
    with `tf.saved_model.save`, a hub model) or one this Keras cannot rebuild (Keras 3 loads
    no SavedModel). Only the `savedmodel` and TFLite formats apply to it."""

    path: str
    loaded: Any
    signature: Any
    reason: str  # why the Keras formats are unsupported

    def __call__(self, inputs: dict[str, Any]) -> Any:
        import tensorflow as tf  # already imported by the save worker

        return self.signature(**{name: tf.constant(v) for name, v in inputs.items()})

    def count_params(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.signature.variables))


def _from_file(rt: Runtime, path: str) -> Any:
    if os.path.isdir(path) and (
        rt.keras3 or not os.path.exists(os.path.join(path, "keras_metadata.pb"))
    ):
        return _signature_model(rt, path)
    try:
        return rt.load_model(path)
    except (ValueError, TypeError, KeyError) as exc:  # how Keras reports unknown custom objects
        raise ModelBuildError(f"cannot rebuild {path}: {_cause(exc)}") from exc


def _cause(exc: BaseException) -> str:
    """The sentence of a long Keras error that names the missing piece, else its first line.

    Keras 3 buries "Could not locate class 'X'" under a config dump; the user needs the X.
    """
    text = str(exc).strip()
    found = re.search(r"(Could not locate \w+ '[^']+'|Unknown \w+: '?[\w.>]+'?)", text)
    if found:
        return found.group(1) + (
            ": give the module that defines it as the model's `code` "
            "(matrix --code, or model options)"
        )
    return text.splitlines()[0] if text else type(exc).__name__


def _signature_model(rt: Runtime, path: str) -> SignatureModel:
    loaded = rt.tf.saved_model.load(path)
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ModelBuildError(
            f"SavedModel {path} has no serving_default signature; export it "
            "with tf.saved_model.save(obj, path, signatures=...)"
        )
    why = (
        "Keras 3 cannot rebuild a Keras model from a SavedModel (load_model refuses it): "
        "give the .keras or .h5 file for the Keras formats"
        if rt.keras3
        else "not a Keras model (no keras_metadata.pb): only its serving signature is measured"
    )
    return SignatureModel(path, loaded, signature, why)


def layout_of(rt: Runtime, model: Any, dims: dict[str, int]) -> Layout:
    """The model's inputs: a Keras model's `inputs` (Embedding ranges for integer inputs), or a
    SignatureModel's serving signature."""
    if isinstance(model, SignatureModel):
        args, named = model.signature.structured_input_signature
        if args:
            raise InputError(
                "the serving signature takes positional inputs; export it with "
                "named (keyword) inputs"
            )
        specs = [
            InputSpec(name, _dims(spec.shape), spec.dtype.name) for name, spec in named.items()
        ]
        return Layout(specs, "dict", dims=dims)
    struct = getattr(model, "_inputs_struct", getattr(model, "_nested_inputs", None))
    if isinstance(struct, dict):
        named = list(struct.items())
        structure = "dict"
    else:
        named = [(_tensor_name(t), t) for t in model.inputs]
        structure = "list" if len(named) > 1 else "single"
    specs = []
    for name, tensor in named:
        dtype = str(getattr(tensor.dtype, "name", tensor.dtype))
        ranges = [
            layer.input_dim
            for layer in model.layers
            if isinstance(layer, rt.keras.layers.Embedding) and _consumes(layer, tensor)
        ]
        specs.append(InputSpec(name, _dims(tensor.shape), dtype, min(ranges, default=None)))
    return Layout(specs, structure, dims=dims)


def _dims(shape: Any) -> list[int | None]:
    """Per-row dimensions (batch axis dropped), None where dynamic."""
    return [None if d is None else int(d) for d in list(shape)[1:]]


def _tensor_name(tensor: Any) -> str:
    return str(tensor.name).split(":")[0]


def _consumes(layer: Any, tensor: Any) -> bool:
    """Whether `layer` is applied directly to the model input `tensor`."""
    try:
        seen = layer.input
    except (AttributeError, ValueError):  # a layer shared between several inputs
        return False
    return seen is tensor or _tensor_name(seen) == _tensor_name(tensor)
