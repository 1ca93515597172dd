"""Build the model to save: a keras.applications network, a dense size-ladder rung, or a file.

Runs inside the save worker, with Keras already imported and handed in.
"""

from __future__ import annotations

import os
import re
from typing import Any

from harness.catalog import ModelSpec, dense_width
from harness.runtime import Runtime


class ModelBuildError(RuntimeError):
    """The model cannot be built here (e.g. custom objects Keras cannot rebuild)."""


def build(rt: Runtime, spec: ModelSpec, weights: str) -> Any:
    """A Keras model for the spec. `weights` is 'none' (random init) or 'imagenet'."""
    keras = rt.keras
    if spec.kind == "application":
        constructor = getattr(keras.applications, spec.name, None)
        if constructor is None:
            raise ModelBuildError(f"keras.applications has no {spec.name} in Keras "
                                  f"{getattr(keras, '__version__', '?')}")
        return constructor(weights=None if weights == "none" else weights)
    if spec.kind == "dense":
        width = dense_width(spec.params)
        layers = [keras.Input(shape=(256,))]
        layers += [keras.layers.Dense(width, activation="relu") for _ in range(4)]
        layers.append(keras.layers.Dense(10))
        return keras.Sequential(layers, name=spec.name.replace("-", "_"))
    return _from_file(rt, spec.path)


def _from_file(rt: Runtime, path: str) -> Any:
    keras = rt.keras
    try:
        if os.path.isdir(path) and rt.keras3:
            return _wrap_savedmodel(rt, path)
        return keras.models.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError) as exc:  # how Keras reports unknown custom objects
        raise ModelBuildError(f"cannot rebuild {path}: {_cause(exc)}") from exc


def _cause(exc: BaseException) -> str:
    """The sentence of a long Keras error that names the missing piece, else its first line.

    Keras 3 buries "Could not locate class 'X'" under a config dump; the user needs the X.
    """
    text = str(exc).strip()
    found = re.search(r"(Could not locate \w+ '[^']+'|Unknown \w+: '?[\w.>]+'?)", text)
    if found:
        return found.group(1) + ": register it with keras.saving.register_keras_serializable"
    return text.splitlines()[0] if text else type(exc).__name__


def _wrap_savedmodel(rt: Runtime, path: str) -> Any:
    """Keras 3 cannot load_model a SavedModel; wrap its serving signature as an inference layer."""
    keras, tf = rt.keras, rt.tf
    signature = tf.saved_model.load(path).signatures["serving_default"]
    spec = next(iter(signature.structured_input_signature[1].values()))
    inputs = keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype.name)
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        outputs = outputs[sorted(outputs)[0]]
    return keras.Model(inputs, outputs)
