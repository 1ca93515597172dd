"""Parity: does a loaded artifact still predict what the saving model predicted?

The saving model predicts a batch (the reference); each trial predicts the same rows with the
loaded artifact after its timed work, and every output is compared by scale-free metrics, so one
tolerance per format family holds for any model (docs/records.md, "Parity"). A reference that
does not vary with its input is `not-informative` (`informative`). Standard library and numpy
only: the trial worker imports it after its clocks have stopped.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from harness.modelio import InputError, pair, row, rows

# The reference's rows must differ by more than this fraction of its largest magnitude. Float
# artifacts of real models differ from their reference by ~1e-5 of that magnitude, so a spread
# below 1e-3 leaves float noise within a factor 100 of the signal: no verdict either way.
INFORMATIVE_MIN_SPREAD = 1e-3
# Largest `parity_rel_err` that passes, per family. An artifact whose output ignores its input
# scores at least 0.5 (see `compare`), so every tolerance sits below that. Values chosen from
# MobileNetV2, DenseNet201 and dense-10k measurements listed in docs/records.md.
TOLERANCES: dict[str, float] = {"float": 1e-3, "fp16": 0.1, "int8": 0.3}
_FAMILY_OF_FORMAT = {"tflite-fp16": "fp16", "tflite-int8": "int8"}


def family(fmt: str) -> str:
    """`float`, `fp16` or `int8`: what numerical loss the format's conversion is allowed."""
    return _FAMILY_OF_FORMAT.get(fmt, "float")


def _rows(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype="float64").reshape(len(values), -1)


def spread(reference: np.ndarray) -> float:
    """Largest range across the batch of any one output element: max_j (max_r - min_r)."""
    rows = _rows(reference)
    return float(np.max(np.ptp(rows, axis=0))) if rows.size else 0.0


def informative(reference: np.ndarray) -> bool:
    """Whether the reference rows differ beyond numerical noise, so parity can fail.

    If every row's output is the same (as with Keras's own untrained MobileNetV2, hence
    harness.models.initialise_untrained), a broken artifact that outputs that constant would
    pass, so such a reference is `not-informative`, never `pass`.
    """
    rows = _rows(reference)
    if len(rows) < 2 or not rows.size or not np.all(np.isfinite(rows)):
        return False
    magnitude = float(np.max(np.abs(rows)))
    return magnitude > 0 and spread(rows) > INFORMATIVE_MIN_SPREAD * magnitude


def _min_cosine(outputs: np.ndarray, reference: np.ndarray) -> float:
    norms = np.linalg.norm(outputs, axis=1) * np.linalg.norm(reference, axis=1)
    dots = np.sum(outputs * reference, axis=1)
    both_zero = ~np.any(outputs, axis=1) & ~np.any(reference, axis=1)  # equal: cosine 1
    cosines = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), both_zero * 1.0)
    return float(np.min(cosines))


def compare(outputs: np.ndarray, reference: np.ndarray, fmt: str) -> dict[str, Any]:
    """The parity fields of a trial record for `outputs` predicted on the reference's batch.

    parity_rel_err = max |y - ref| / spread(ref). If the artifact's output is a constant c,
    the element j with the largest range has some row with |c - ref_rj| >= range_j / 2, so the
    error is at least 0.5: every tolerance is below that.
    """
    fam = family(fmt)
    fields: dict[str, Any] = {
        "parity_family": fam,
        "parity_tolerance": TOLERANCES[fam],
        "parity_max_abs_diff": None,
        "parity_rel_err": None,
        "parity_top1_agreement": None,
        "parity_cosine": None,
    }
    if np.shape(outputs) != np.shape(reference) or not np.all(np.isfinite(outputs)):
        fields["parity_status"] = "fail" if informative(reference) else "not-informative"
        return fields
    got, want = _rows(outputs), _rows(reference)
    diff = float(np.max(np.abs(got - want)))
    width = spread(want)
    fields.update(
        parity_max_abs_diff=diff,
        parity_rel_err=diff / width if width > 0 else None,
        parity_top1_agreement=float(np.mean(np.argmax(got, 1) == np.argmax(want, 1))),
        parity_cosine=_min_cosine(got, want),
    )
    if not informative(want):
        fields["parity_status"] = "not-informative"
    else:
        fields["parity_status"] = "pass" if diff / width <= TOLERANCES[fam] else "fail"
    return fields


def informative_outputs(reference: dict[str, np.ndarray]) -> bool:
    """Whether any output of the reference varies with its input (so parity can fail)."""
    return any(informative(value) for value in reference.values())


def compare_outputs(
    outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], fmt: str
) -> dict[str, Any]:
    """The parity fields over every output of a multi-output model (one output: `compare`).

    Outputs are paired with the reference's by name, else position, else shape
    (harness.modelio.pair). Each is compared on its own scale; the record keeps the worst:
    largest `parity_rel_err` and `parity_max_abs_diff`, lowest top-1 agreement and cosine, over
    the informative outputs (all of them if none is). `fail` if any informative output fails (a
    missing or misshapen output fails), `pass` if every informative output passes,
    `not-informative` if no output varies with the input.
    """
    try:
        names = pair(
            {n: v.shape for n, v in reference.items()}, {n: v.shape for n, v in outputs.items()}
        )
    except InputError:
        names = {}
    each = [
        (
            compare(outputs[names[n]], ref, fmt)
            if n in names
            else compare(np.empty((0,)), ref, fmt),
            informative(ref),
        )
        for n, ref in reference.items()
    ]
    judged = [fields for fields, varies in each if varies] or [fields for fields, _ in each]
    fields = dict(judged[0])
    for key, worst in (
        ("parity_max_abs_diff", max),
        ("parity_rel_err", max),
        ("parity_top1_agreement", min),
        ("parity_cosine", min),
    ):
        values = [f[key] for f in judged]
        fields[key] = None if None in values else worst(values)
    statuses = {f["parity_status"] for f in judged}
    fields["parity_status"] = next(s for s in ("fail", "not-informative", "pass") if s in statuses)
    fields["parity_outputs"] = len(reference)
    return fields


def check(
    predict: Callable[[Any], Any],
    batch: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    fmt: str,
) -> dict[str, Any]:
    """Predict every row in its own batch-1 call (TFLite input shapes are fixed), then compare
    every output."""
    predicted = [predict(row(batch, i)) for i in range(rows(batch))]
    outputs = {
        name: np.concatenate([np.asarray(p[name]) for p in predicted]) for name in predicted[0]
    }
    return compare_outputs(outputs, reference, fmt)
