"""Child process: build one model, then save it as each requested artifact.

Saving runs in a child because a converter can abort the whole process (TF 2.16 with a too-new
Keras dies in the TFLite converter with "LLVM ERROR"). Around each artifact the worker appends a
`start` and then a `saved` / `unsupported` / `error` event, so when it dies the parent knows which
artifact killed it and starts a new worker for the rest. Usage: python -m harness.save_worker SPEC
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np

from harness.catalog import ModelOptions, ModelSpec
from harness.formats import ARTIFACTS, Unsupported
from harness.lifetime import leave
from harness.modelio import (
    InputError,
    Layout,
    load_batch,
    named_outputs,
    read_user_inputs,
    save_batch,
    synthesise,
)
from harness.models import ModelBuildError, SignatureModel, build, initialise_untrained, layout_of
from harness.parity import informative_outputs
from harness.records import append_event
from harness.runtime import import_tensorflow
from harness.usercode import import_user_code


def _parity_batch(rt: Any, model: Any, options: ModelOptions, folder: str) -> tuple[Any, Any]:
    """(input layout, batch by input name) every load predicts for parity, shared by every
    generation of workers: the user's `inputs` if given, else seeded synthetic inputs.

    Its first row is also the input of the timed calls. Raises InputError for an input that
    cannot be synthesised or user data that does not fit.
    """
    path = os.path.join(folder, "parity-inputs.npz")
    described = os.path.join(folder, "parity-inputs.json")
    if os.path.exists(path) and os.path.exists(described):
        return Layout.load(described), load_batch(path)
    layout = layout_of(rt, model, dict(options.dims))
    if options.inputs:
        layout.source = options.inputs
        batch = read_user_inputs(layout, options.inputs)
    else:
        batch = synthesise(layout)
    save_batch(path, batch)
    layout.save(described)
    return layout, batch


def _seed(rt: Any) -> None:
    """Seed weight initialisation; keras.utils.set_random_seed only exists from TF 2.7."""
    seed_all = getattr(rt.keras.utils, "set_random_seed", None)
    if seed_all is not None:
        seed_all(0)
        return
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    rt.tf.random.set_seed(0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _predict(model: Any, layout: Any, batch: dict) -> dict:
    """The saving model's outputs on `batch`, by name."""
    if isinstance(model, SignatureModel):
        return named_outputs(model(batch))
    return named_outputs(model(layout.feed(batch), training=False))


def main(spec_path: str) -> int:
    with open(spec_path) as handle:
        spec = json.load(handle)
    events, folder = spec["events"], spec["folder"]
    model_spec = ModelSpec.from_json(spec["model"])
    rt = import_tensorflow()
    _seed(rt)
    code_s = None
    try:
        if model_spec.options.code:
            rt.custom_objects, code_s = import_user_code(list(model_spec.options.code))
    except Exception as exc:  # the user's module failed to import: say which and why
        append_event(events, event="model_error", reason=f"user code: {_first_line(exc)}")
        return 0
    start = time.perf_counter()
    try:
        model = build(rt, model_spec, spec["weights"])
        layout, batch = _parity_batch(rt, model, model_spec.options, folder)
    except InputError as exc:  # an input the tool cannot feed: the model's formats say so
        append_event(events, event="model_unsupported", reason=str(exc))
        return 0
    except (ModelBuildError, OSError, ValueError) as exc:
        append_event(events, event="model_error", reason=_first_line(exc))
        return 0
    if spec["weights"] == "none" and model_spec.kind != "file":
        initialise_untrained(rt, model, layout.feed(batch))
    build_s = time.perf_counter() - start
    outputs = _predict(model, layout, batch)
    reference = os.path.join(folder, f"reference-{spec['generation']}.npz")
    np.savez(reference, **outputs)
    not_keras = model.reason if isinstance(model, SignatureModel) else ""
    append_event(
        events,
        event="model",
        params=int(model.count_params()),
        build_s=build_s,
        input=os.path.join(folder, "parity-inputs.npz"),
        reference=reference,
        parity_informative=informative_outputs(outputs),
        user_code_import_s=code_s,
        inputs=layout.record(),
        input_source=layout.source,
        outputs=[
            {"name": n, "shape": list(v.shape[1:]), "dtype": str(v.dtype)}
            for n, v in outputs.items()
        ],
        not_keras=not_keras,
    )
    for name in spec["artifacts"]:
        artifact = ARTIFACTS[name]
        reason = artifact.unsupported(rt) or (artifact.keras_only and not_keras)
        if reason:
            append_event(events, event="unsupported", artifact=name, reason=reason)
            continue
        path = os.path.join(folder, artifact.filename)
        append_event(events, event="start", artifact=name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        try:
            began = time.perf_counter()
            extra = artifact.save(rt, model, path, layout, batch) or {}
            append_event(
                events,
                event="saved",
                artifact=name,
                path=path,
                reference=reference,
                save_s=time.perf_counter() - began,
                **extra,
            )
        except Unsupported as exc:  # e.g. every TFLite converter option failed: its reasons
            append_event(events, event="unsupported", artifact=name, reason=str(exc))
        except Exception as exc:  # one artifact failing must not stop the others
            append_event(events, event="error", artifact=name, reason=_first_line(exc))
    return 0


def main_in_scratch(spec_path: str) -> int:
    """`main`, with every temporary file (the SavedModel exports TFLite conversions go through)
    in a scratch folder beside the model's artifacts, removed at the end: a large model's
    exports would otherwise pile up in /tmp, outside the environment's own folder."""
    scratch = os.path.join(os.path.dirname(os.path.abspath(spec_path)), "scratch")
    os.makedirs(scratch, exist_ok=True)
    tempfile.tempdir = scratch
    try:
        return main(spec_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    leave(main_in_scratch(sys.argv[1]))
