"""Names the harness understands: models, formats, cache modes.

This module imports nothing but the standard library, so the orchestrator can validate a matrix
(and give a one-line error naming the valid choices) on a host that has no TensorFlow at all.
It is the single source of truth for these names: `matrix/` imports it, never copies it.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 2

FORMATS: tuple[str, ...] = (
    "savedmodel",
    "savedmodel-keras",
    "h5",
    "keras",
    "weights-h5",
    "weights-ckpt",
    "tflite",
    "tflite-fp16",
    "tflite-int8",
)

# cold: whole page cache dropped (import is cold too); cold-model: only the artifact evicted;
# warm: the artifact read once before the trial.
CACHE_MODES: tuple[str, ...] = ("cold", "cold-model", "warm")

# Every model constructor in `keras.applications` (Keras 2.2 … 3.x). A test checks this list
# against the installed Keras so it cannot drift silently.
KERAS_APPLICATIONS: tuple[str, ...] = (
    "ConvNeXtBase",
    "ConvNeXtLarge",
    "ConvNeXtSmall",
    "ConvNeXtTiny",
    "ConvNeXtXLarge",
    "DenseNet121",
    "DenseNet169",
    "DenseNet201",
    "EfficientNetB0",
    "EfficientNetB1",
    "EfficientNetB2",
    "EfficientNetB3",
    "EfficientNetB4",
    "EfficientNetB5",
    "EfficientNetB6",
    "EfficientNetB7",
    "EfficientNetV2B0",
    "EfficientNetV2B1",
    "EfficientNetV2B2",
    "EfficientNetV2B3",
    "EfficientNetV2L",
    "EfficientNetV2M",
    "EfficientNetV2S",
    "InceptionResNetV2",
    "InceptionV3",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Large",
    "MobileNetV3Small",
    "NASNetLarge",
    "NASNetMobile",
    "RegNetX002",
    "RegNetX004",
    "RegNetX006",
    "RegNetX008",
    "RegNetX016",
    "RegNetX032",
    "RegNetX040",
    "RegNetX064",
    "RegNetX080",
    "RegNetX120",
    "RegNetX160",
    "RegNetX320",
    "RegNetY002",
    "RegNetY004",
    "RegNetY006",
    "RegNetY008",
    "RegNetY016",
    "RegNetY032",
    "RegNetY040",
    "RegNetY064",
    "RegNetY080",
    "RegNetY120",
    "RegNetY160",
    "RegNetY320",
    "ResNet101",
    "ResNet101V2",
    "ResNet152",
    "ResNet152V2",
    "ResNet50",
    "ResNet50V2",
    "ResNetRS101",
    "ResNetRS152",
    "ResNetRS200",
    "ResNetRS270",
    "ResNetRS350",
    "ResNetRS420",
    "ResNetRS50",
    "VGG16",
    "VGG19",
    "Xception",
)

DEFAULT_MODELS: tuple[str, ...] = ("MobileNetV2", "DenseNet201", "ResNet152V2")

_DENSE = re.compile(r"^dense-(\d+(?:\.\d+)?)([km])$")
_MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")


class CatalogError(ValueError):
    """A name the harness does not know; the message is one line naming the valid choices."""


@dataclass(frozen=True)
class ModelOptions:
    """A model's own code, data and dynamic sizes (`--model-options`; docs/records.md, "Inputs").

    `code`: Python files imported (by path) in every process that saves or loads the model;
    `inputs`: an .npz of arrays by input name (or `arr_0`, `arr_1`…) used instead of synthetic
    inputs; `dims`: the size of the dynamic dimensions of each named input.
    """

    code: tuple[str, ...] = ()
    inputs: str = ""
    dims: tuple[tuple[str, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"code": list(self.code), "inputs": self.inputs, "dims": dict(self.dims)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelOptions:
        return cls(
            code=tuple(data.get("code", ())),
            inputs=data.get("inputs", ""),
            dims=tuple(sorted(data.get("dims", {}).items())),
        )


MODEL_OPTION_KEYS = ("code", "inputs", "dims")


def parse_model_options(data: Any, models: list[str]) -> dict[str, ModelOptions]:
    """Validate a `--model-options` object (keyed by model names as in `--models`).

    Raises a one-line CatalogError naming the field and the fix. Paths must exist as this
    process sees them (inside a container: its mount points).
    """
    if not isinstance(data, dict):
        raise CatalogError("model options: give a JSON object keyed by model name")
    parsed = {}
    for model, value in data.items():
        where = f"model options for {model!r}"
        if model not in models:
            raise CatalogError(f"{where}: not one of --models ({', '.join(models)})")
        if not isinstance(value, dict) or set(value) - set(MODEL_OPTION_KEYS):
            raise CatalogError(
                f"{where}: give an object with keys among {', '.join(MODEL_OPTION_KEYS)}"
            )
        code = value.get("code", [])
        if isinstance(code, str) or not all(isinstance(c, str) for c in code):
            raise CatalogError(f"{where}: `code` must be a list of .py file paths")
        for path in code:
            if not (path.endswith(".py") and os.path.isfile(path)):
                raise CatalogError(f"{where}: code file {path!r} is not an existing .py file")
        inputs = value.get("inputs", "")
        if not isinstance(inputs, str) or (
            inputs and not (inputs.endswith(".npz") and os.path.isfile(inputs))
        ):
            raise CatalogError(f"{where}: inputs {inputs!r} is not an existing .npz file")
        dims = value.get("dims", {})
        if not isinstance(dims, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in dims.values()
        ):
            raise CatalogError(f"{where}: `dims` must map input names to sizes >= 1")
        parsed[model] = ModelOptions.from_json({"code": code, "inputs": inputs, "dims": dims})
    return parsed


def read_model_options(path: str, models: list[str]) -> dict[str, ModelOptions]:
    """`parse_model_options` of the JSON file at `path`."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CatalogError(f"--model-options {path}: {exc}") from exc
    return parse_model_options(data, models)


@dataclass(frozen=True)
class ModelSpec:
    """What to build: a keras.applications network, a synthetic dense ladder rung, or a file."""

    name: str
    kind: str  # "application" | "dense" | "file"
    params: int = 0  # target parameter count, for "dense"
    path: str = ""  # for "file"
    options: ModelOptions = field(default_factory=ModelOptions)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "params": self.params,
            "path": self.path,
            "options": self.options.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(**{**data, "options": ModelOptions.from_json(data.get("options", {}))})

    @property
    def slug(self) -> str:
        """A name safe for file and cell ids (a file model is named after its file)."""
        if self.kind == "file":
            base = os.path.basename(os.path.normpath(self.path))
            return re.sub(r"[^A-Za-z0-9_.-]", "_", base)
        return self.name


def parse_model(name: str) -> ModelSpec:
    """Turn a user's model name into a spec, or raise a one-line CatalogError."""
    name = name.strip()
    if name in KERAS_APPLICATIONS:
        return ModelSpec(name=name, kind="application")
    dense = _DENSE.match(name)
    if dense:
        scale = 1_000 if dense.group(2) == "k" else 1_000_000
        params = int(float(dense.group(1)) * scale)
        if params < 1_000:
            raise CatalogError(f"model {name!r}: a dense ladder rung needs at least 1k parameters")
        return ModelSpec(name=name, kind="dense", params=params)
    if os.sep in name or name.endswith(_MODEL_FILE_SUFFIXES) or os.path.exists(name):
        path = os.path.abspath(os.path.expanduser(name))
        if not os.path.exists(path):
            raise CatalogError(
                f"model file {name!r} does not exist; give a path to a .keras, .h5 or SavedModel"
            )
        return ModelSpec(name=name, kind="file", path=path)
    close = [a for a in KERAS_APPLICATIONS if a.lower().startswith(name.lower()[:5])][:5]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise CatalogError(
        f"unknown model {name!r}{hint}; use a keras.applications name such as "
        f"{', '.join(DEFAULT_MODELS)}, a size rung like dense-1m / dense-10m, "
        "or a path to a .keras, .h5 or SavedModel"
    )


def check_choices(field: str, values: list[str], allowed: tuple[str, ...]) -> list[str]:
    """Return values unchanged, or raise a one-line CatalogError naming field and choices."""
    if not values:
        raise CatalogError(f"{field}: give at least one of {', '.join(allowed)}")
    for value in values:
        if value not in allowed:
            raise CatalogError(f"unknown {field} {value!r}; choose from {', '.join(allowed)}")
    return values


def dense_width(params: int, inputs: int = 256, hidden_layers: int = 4, outputs: int = 10) -> int:
    """Width of each hidden layer so the ladder model has about `params` parameters.

    Parameters of the MLP are (hidden_layers-1)*w^2 + (inputs + hidden_layers + outputs + 1)*w
    + outputs; solve the quadratic for w so rungs are comparable across TF versions.
    """
    a = hidden_layers - 1
    b = inputs + hidden_layers + outputs + 1
    c = outputs - params
    return max(1, round((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)))
