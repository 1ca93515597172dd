"""Child process: build one model, then save it as each requested artifact.

Saving runs in a child because a converter can abort the whole process (TF 2.16 with a too-new
Keras dies in the TFLite converter with "LLVM ERROR"). Before each artifact the worker appends a
`start` event and after it a `saved` / `unsupported` / `error` event, so when it dies the parent
knows exactly which artifact killed it, records that one as `error` and starts a new worker for
the rest.

Usage: python -m harness.save_worker SPEC.json
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Any

from harness.catalog import ModelSpec
from harness.formats import ARTIFACTS, first_output
from harness.models import ModelBuildError, build
from harness.records import append_event
from harness.runtime import import_tensorflow

# Test-only fault injection: the named artifact's save aborts the process, as LLVM's does.
ABORT_ENV = "HARNESS_TEST_ABORT_ARTIFACT"


def _sample_input(model: Any, path: str) -> Any:
    """The fixed, seeded input every load predicts on (shared by all generations of workers)."""
    import numpy as np

    if os.path.exists(path):
        return np.load(path)
    tensor = model.inputs[0]
    shape = [1] + [int(d) for d in list(tensor.shape)[1:]]
    dtype = getattr(tensor.dtype, "name", tensor.dtype)
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    np.save(path, x)
    return x


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


def main(spec_path: str) -> int:
    with open(spec_path) as handle:
        spec = json.load(handle)
    events, folder = spec["events"], spec["folder"]
    rt = import_tensorflow()
    _seed(rt)
    start = time.perf_counter()
    try:
        model = build(rt, ModelSpec(**spec["model"]), spec["weights"])
    except (ModelBuildError, OSError, ValueError) as exc:
        append_event(events, event="model_error", reason=_first_line(exc))
        return 0
    build_s = time.perf_counter() - start
    x = _sample_input(model, os.path.join(folder, "input.npy"))
    reference = os.path.join(folder, f"reference-{spec['generation']}.npy")
    import numpy as np

    np.save(reference, first_output(model(x, training=False)))
    append_event(events, event="model", params=int(model.count_params()), build_s=build_s,
                 input=os.path.join(folder, "input.npy"), reference=reference)
    for name in spec["artifacts"]:
        artifact = ARTIFACTS[name]
        reason = artifact.unsupported(rt)
        if reason:
            append_event(events, event="unsupported", artifact=name, reason=reason)
            continue
        path = os.path.join(folder, artifact.filename)
        append_event(events, event="start", artifact=name)
        if os.environ.get(ABORT_ENV) == name:
            os.abort()
        if os.path.isdir(path):
            shutil.rmtree(path)
        try:
            began = time.perf_counter()
            artifact.save(rt, model, path, x)
            append_event(events, event="saved", artifact=name, path=path, reference=reference,
                         save_s=time.perf_counter() - began)
        except Exception as exc:  # one artifact failing must not stop the others
            append_event(events, event="error", artifact=name, reason=_first_line(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
