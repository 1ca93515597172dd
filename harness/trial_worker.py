"""Child process: one timed trial. Nothing heavy is imported before the import clock starts.

The parent has already put the artifact in the cache state the trial claims and verified it;
this process only measures: import, load, first inference, steady inference, memory, parity.
With `--loads K > 1` it repeats the load K times in this one warm process (the method of the
article that seeded this project), so both numbers can be set side by side.

Usage: python -m harness.trial_worker --format F --artifact PATH --input X.npy
           --reference R.npy --inference-runs N --loads K --result OUT.json
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # before any other import of this module

import argparse  # noqa: E402 - the clock above must start first
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from typing import Any  # noqa: E402

from harness.formats import FORMATS  # noqa: E402 - standard library only, no TensorFlow
from harness.records import dump_json  # noqa: E402
from harness.runtime import Runtime, import_tensorflow, import_tflite  # noqa: E402

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE_MB


def _import(target: str) -> Runtime:
    if target == "tflite":
        return import_tflite()
    return import_tensorflow(with_keras=target == "tensorflow+keras")


def _one_load(rt: Runtime, fmt: str, path: str, x: Any, reference: Any, runs: int) -> dict:
    import numpy as np

    rss_before = _rss_mb()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    predict = FORMATS[fmt].load(rt, path)
    load_s, load_cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    rss_delta = _rss_mb() - rss_before
    began = time.perf_counter()
    y = np.asarray(predict(x))
    first_s = time.perf_counter() - began
    steady = []
    for _ in range(runs):
        began = time.perf_counter()
        predict(x)
        steady.append(time.perf_counter() - began)
    parity = (float(np.max(np.abs(y.astype("float64") - reference.astype("float64"))))
              if y.shape == reference.shape else None)
    return {
        "load_s": load_s,
        "load_cpu_s": load_cpu_s,
        "first_inference_s": first_s,
        "inference_s": statistics.median(steady) if steady else None,
        "rss_before_load_mb": round(rss_before, 1),
        "rss_load_delta_mb": round(rss_delta, 1),
        "parity_max_abs_diff": parity,
        "output_shape": list(y.shape),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness.trial_worker")
    for flag in ("--format", "--artifact", "--input", "--reference", "--result"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--inference-runs", type=int, default=10)
    parser.add_argument("--loads", type=int, default=1)
    args = parser.parse_args(argv)
    target = FORMATS[args.format].import_target
    result: dict[str, Any] = {"import_target": target}
    try:
        began = time.perf_counter()
        rt = _import(target)
        result["import_s"] = time.perf_counter() - began
        result["startup_s"] = began - _STARTED
        result["tflite_runtime"] = rt.tflite_runtime if target == "tflite" else None
        import numpy as np

        x, reference = np.load(args.input), np.load(args.reference)
        result["loads"] = [
            _one_load(rt, args.format, args.artifact, x, reference, args.inference_runs)
            for _ in range(args.loads)
        ]
    except Exception as exc:
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        result["error"] = last
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    from harness.envinfo import container_id  # only now: nothing extra before the clocks

    result["container_id"] = container_id()
    dump_json(args.result, result)
    return 3 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
