"""What a model takes and gives: any number of named inputs and outputs, in any structure.

A model's inputs are described once, in the save worker, from its signature as a `Layout`; the
parity batch is drawn from it (`synthesise`) or read from the user's `.npz`, every loader is fed
by input name and every output kept by name, so parity covers them all. Standard library and
numpy only (no TensorFlow).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np

DEFAULT_DIM = 16
DEFAULT_ID_RANGE = 10
INPUT_SEED = 0
BATCH_ROWS = 4
MAX_USER_ROWS = 64  # parity predicts each row in its own call: bound the time it takes


class InputError(ValueError):
    """An input the tool cannot feed (no synthetic data for its dtype): the model is unsupported."""


class DataError(ValueError):
    """The user's `inputs` data does not fit the model: the user's error, the model fails."""


@dataclass
class InputSpec:
    """One model input: its feeding name, shape per row (None: dynamic), dtype, id range."""

    name: str
    shape: list[int | None]
    dtype: str
    id_range: int | None = None  # integer inputs: ids are drawn from [0, id_range)


@dataclass
class Layout:
    """The inputs of a model and how a call expects them: one array, a list, or a dict.

    Read from the model's signature (Keras's `inputs`, or a SavedModel's serving signature):
    names, per-row shapes (None where dynamic), dtypes, and for integer inputs their id range.
    """

    inputs: list[InputSpec]
    structure: str  # "single" | "list" | "dict"
    source: str = "synthetic"  # or the user's .npz path
    dims: dict[str, int] = field(default_factory=dict)

    def feed(self, arrays: dict[str, Any]) -> Any:
        """`arrays` by input name, in the structure the model's call takes."""
        if self.structure == "dict":
            return {spec.name: arrays[spec.name] for spec in self.inputs}
        if self.structure == "list":
            return [arrays[spec.name] for spec in self.inputs]
        return arrays[self.inputs[0].name]

    def save(self, path: str) -> None:
        with open(path, "w") as handle:
            json.dump(asdict(self), handle)

    @classmethod
    def load(cls, path: str) -> Layout:
        with open(path) as handle:
            data = json.load(handle)
        return cls(**{**data, "inputs": [InputSpec(**spec) for spec in data["inputs"]]})

    def record(self) -> list[dict[str, Any]]:
        """The artifact record's `inputs` field."""
        return [asdict(spec) for spec in self.inputs]


def _kind(dtype: str) -> str:
    """`float`, `int`, `bool` or `other` (strings, resources: nothing to synthesise)."""
    if dtype.startswith(("float", "bfloat", "half")):
        return "float"
    if dtype.startswith(("int", "uint")):
        return "int"
    return "bool" if dtype == "bool" else "other"


def row_shape(spec: InputSpec, dims: dict[str, int]) -> tuple[int, ...]:
    """The spec's per-row shape with every dynamic dimension filled."""
    size = dims.get(spec.name, DEFAULT_DIM)
    return tuple(size if d is None else int(d) for d in spec.shape)


def synthesise(
    layout: Layout, rows: int = BATCH_ROWS, seed: int = INPUT_SEED
) -> dict[str, np.ndarray]:
    """Seeded inputs by name: floats standard normal, ids uniform in their range, bools fair.

    The defaults of docs/records.md, "Inputs": a dynamic dimension is DEFAULT_DIM long unless
    the model options' `dims` give a size for that input; integer inputs are ids in
    [0, input_dim) of the Embedding that consumes them, else in [0, DEFAULT_ID_RANGE). Input i
    draws from its own generator (seed + i), so a single-input model's batch is always the same.
    """
    batch = {}
    for index, spec in enumerate(layout.inputs):
        rng = np.random.default_rng(seed + index)
        shape = (rows, *row_shape(spec, layout.dims))
        kind = _kind(spec.dtype)
        if kind == "float":
            batch[spec.name] = rng.standard_normal(shape).astype(_numpy_dtype(spec.dtype))
        elif kind == "int":
            high = spec.id_range or DEFAULT_ID_RANGE
            batch[spec.name] = rng.integers(0, high, shape).astype(spec.dtype)
        elif kind == "bool":
            batch[spec.name] = rng.random(shape) < 0.5
        else:
            raise InputError(
                f"input {spec.name!r} is {spec.dtype}: the tool cannot synthesise "
                "it; give your own data in the model's `inputs` (.npz)"
            )
    return batch


def _numpy_dtype(dtype: str) -> str:
    return "float32" if dtype == "bfloat16" else dtype


def read_user_inputs(layout: Layout, path: str) -> dict[str, np.ndarray]:
    """The user's arrays by input name (or positional `arr_0`, `arr_1`…), checked and cast.

    Rows beyond MAX_USER_ROWS are dropped. Pickled (object) arrays are refused: loading one
    would run code from the file.
    """
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    batch: dict[str, np.ndarray] = {}
    for index, spec in enumerate(layout.inputs):
        value = arrays.get(spec.name, arrays.get(f"arr_{index}"))
        if value is None:
            names = ", ".join(s.name for s in layout.inputs)
            raise DataError(
                f"inputs {path}: no array for input {spec.name!r} (the file has "
                f"{', '.join(arrays) or 'none'}); name the arrays {names} or save "
                "them positionally in that order"
            )
        fixed = [(i, d) for i, d in enumerate(spec.shape) if d is not None]
        if value.ndim != len(spec.shape) + 1 or any(value.shape[i + 1] != d for i, d in fixed):
            want = ", ".join("N" if d is None else str(d) for d in spec.shape)
            raise DataError(
                f"inputs {path}: {spec.name!r} has shape {list(value.shape)}; "
                f"the model takes (rows, {want})"
            )
        if _kind(spec.dtype) != "other":
            value = value.astype(_numpy_dtype(spec.dtype))
        batch[spec.name] = value[:MAX_USER_ROWS]
    if len({len(v) for v in batch.values()}) > 1:
        raise DataError(f"inputs {path}: the arrays have different numbers of rows")
    return batch


def save_batch(path: str, batch: dict[str, np.ndarray]) -> None:
    """An .npz that keeps the names and their order."""
    np.savez(path, **cast("dict[str, Any]", batch))  # numpy's stub types **kwds as its options


def load_batch(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def rows(batch: dict[str, np.ndarray]) -> int:
    return len(next(iter(batch.values())))


def row(batch: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    """Row `index` of every input, each with its batch axis of 1."""
    return {name: value[index : index + 1] for name, value in batch.items()}


def named_outputs(value: Any) -> dict[str, np.ndarray]:
    """Every output as a numpy array, by name: a dict's keys, else `output_0`, `output_1`…

    `output_i` is what Keras 3's export and TFLite name a list's outputs, so the reference and
    most loaders agree by name; `pair` matches the rest by position and shape.
    """
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = [(f"output_{i}", v) for i, v in enumerate(value)]
    else:
        items = [("output_0", value)]
    return {name: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for name, v in items}


def _fits(want: tuple, offered: tuple) -> bool:
    """Same rank, and every dimension equal where both are known (None / -1: dynamic)."""
    return len(want) == len(offered) and all(
        a is None or b is None or a < 0 or b < 0 or a == b for a, b in zip(want, offered)
    )


def pair(wanted: dict[str, tuple], offered: dict[str, tuple]) -> dict[str, str]:
    """Pair each wanted name with an offered name (the values are shapes).

    By name when every wanted name is offered; else by position when there are as many and
    every shape fits; else each wanted takes the first unused offered of a fitting shape.
    Raises InputError naming the first that found none.
    """
    if set(wanted) <= set(offered):
        return {name: name for name in wanted}
    if len(wanted) == len(offered) and all(
        _fits(w, o) for w, o in zip(wanted.values(), offered.values())
    ):
        return dict(zip(wanted, offered))
    found: dict[str, str] = {}
    for name, shape in wanted.items():
        match = next(
            (o for o, s in offered.items() if o not in found.values() and _fits(shape, s)), None
        )
        if match is None:
            raise InputError(
                f"no tensor of shape {list(shape)} for {name!r} among {', '.join(offered)}"
            )
        found[name] = match
    return found
