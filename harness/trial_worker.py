"""Child process: one timed trial. Nothing heavy is imported before the import clock starts.

The parent has already put the artifact in the cache state the trial claims and verified it;
this process only measures: import, load, first inference, steady inference, memory, parity.
With `--loads K > 1` it repeats the load K times in this one warm process (the method of the
article that seeded this project), so both numbers can be set side by side.

The model's own `--code` modules (model options) are imported after the runtime and the device,
before the load clock, and timed apart (`user_code_import_s`); TFLite trials skip them: the
interpreter runs no Python code, and importing it would import TensorFlow into a LiteRT process.

Usage: python -m harness.trial_worker --format F --artifact PATH --input X.npz
           --reference R.npz [--code FILE.py ...] --inference-runs N --loads K --result OUT.json
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
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from harness.formats import FORMATS, api_loader  # noqa: E402 - standard library only, no TF
from harness.records import dump_json  # noqa: E402
from harness.runtime import Runtime, import_tensorflow, import_tflite  # noqa: E402

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20
MESSAGE_CHARS = 4000  # of an exception's message: Keras's refusals run to ~600


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE_MB


def _read_bytes() -> int | None:
    """Bytes this process (all threads) has caused to be read from storage; None if unreadable."""
    try:
        with open("/proc/self/io") as handle:
            for line in handle:
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _major_faults() -> int:
    """Page faults of this process that had to wait for storage (mapped files not cached)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_majflt


def _init_device(rt: Runtime, target: str) -> float:
    """Seconds to create the runtime's compute device, so that no load clock pays for it.

    TensorFlow creates its devices (on a GPU: the CUDA context, streams, allocator) at the first
    op: listing them and running a tiny op on the first GPU, else the CPU, does it here, by one
    code path for both. TFLite has no device to create: the interpreter builds its delegates
    (XNNPACK on CPU) inside the load, so 0.0, whichever interpreter (LiteRT or tf.lite) runs it.
    """
    if target == "tflite":
        return 0.0
    tf = rt.tf
    began = time.perf_counter()
    logical = tf.config.list_logical_devices()
    gpus = [d for d in logical if d.device_type == "GPU"]
    device = (gpus or [d for d in logical if d.device_type == "CPU"])[0]
    with tf.device(device.name):
        float(tf.reduce_sum(tf.ones((2, 2))))
    return time.perf_counter() - began


def _import(target: str) -> Runtime:
    if target == "tflite":
        return import_tflite()
    return import_tensorflow(with_keras=target == "tensorflow+keras")


def _one_load(
    rt: Runtime,
    fmt: str,
    path: str,
    layout: Any,
    batch: dict,
    reference: dict,
    runs: int,
    api: str = "",
) -> dict:
    import numpy as np

    from harness.modelio import row  # numpy only, already imported
    from harness.parity import check as check_parity

    x = row(batch, 0)  # the timed calls predict the parity batch's first row

    rss_before = _rss_mb()
    faults_before, read_before = _major_faults(), _read_bytes()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    predict = api_loader(fmt, api)(rt, path, layout)
    load_s, load_cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    faults, read_after = _major_faults() - faults_before, _read_bytes()
    rss_delta = _rss_mb() - rss_before
    began = time.perf_counter()
    y = next(iter(predict(x).values()))
    first_s = time.perf_counter() - began
    steady = []
    for _ in range(runs):
        began = time.perf_counter()
        predict(x)
        steady.append(time.perf_counter() - began)
    return {
        "load_s": load_s,
        "load_cpu_s": load_cpu_s,
        "first_inference_s": first_s,
        "first_prediction_s": load_s + first_s,
        "load_major_faults": faults,
        "load_read_bytes": (
            None if read_before is None or read_after is None else read_after - read_before
        ),
        "inference_s": statistics.median(steady) if steady else None,
        "rss_before_load_mb": round(rss_before, 1),
        "rss_load_delta_mb": round(rss_delta, 1),
        "output_shape": list(np.shape(y)),
        "inference_call": predict.call,
        **check_parity(predict, batch, reference, fmt),  # after every clock has stopped
    }


@dataclass
class Imported:
    """A runtime imported before the trial: by a zygote that forks one trial process per load
    (harness.zygote). Its import was timed once there, as a fresh trial times its own."""

    runtime: Runtime
    import_s: float
    startup_s: float


def timed_import(target: str, started: float) -> Imported:
    """Import the runtime of `target` on the clock; `started`: when the process began."""
    began = time.perf_counter()
    rt = _import(target)
    return Imported(rt, time.perf_counter() - began, began - started)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness.trial_worker")
    for flag in ("--format", "--artifact", "--input", "--reference", "--result"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--code", action="append", default=[])
    parser.add_argument("--inference-runs", type=int, default=10)
    parser.add_argument("--loads", type=int, default=1)
    parser.add_argument("--api", default="", help="a cross-load's loading API (harness.formats)")
    return parser


def main(argv: list[str], imported: Imported | None = None) -> int:
    """One trial; `imported`: the runtime a zygote imported before forking this process."""
    args = _parser().parse_args(argv)
    target = FORMATS[args.format].import_target
    result: dict[str, Any] = {"import_target": target}
    try:
        imported = imported or timed_import(target, _STARTED)
        rt = imported.runtime
        result["import_s"], result["startup_s"] = imported.import_s, imported.startup_s
        result["tflite_runtime"] = rt.tflite_runtime if target == "tflite" else None
        result["device_init_s"] = _init_device(rt, target)
        result["user_code_import_s"] = None
        if args.code and target != "tflite":
            from harness.usercode import import_user_code

            rt.custom_objects, result["user_code_import_s"] = import_user_code(args.code)
        from harness.modelio import Layout, load_batch  # numpy: imported with the runtime

        layout = Layout.load(os.path.splitext(args.input)[0] + ".json")
        batch, reference = load_batch(args.input), load_batch(args.reference)
        runs = args.inference_runs
        result["stage"] = "load"  # from here an exception is the artifact's, not the setup's
        result["loads"] = [
            _one_load(rt, args.format, args.artifact, layout, batch, reference, runs, args.api)
            for _ in range(args.loads)
        ]
        # Only the process's first load paid for the import, the device and the user's code.
        before_load = (
            result["import_s"] + result["device_init_s"] + (result["user_code_import_s"] or 0.0)
        )
        for index, load in enumerate(result["loads"]):
            load["cold_start_s"] = before_load + load["first_prediction_s"] if index == 0 else None
    except Exception as exc:
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        result["error"] = last
        # A cross-load's refusal is its result: the exception's class and whole message.
        result["exception"] = type(exc).__name__
        result["message"] = str(exc).strip()[:MESSAGE_CHARS]
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    from harness.envinfo import container_id  # only now: nothing extra before the clocks

    result["container_id"] = container_id()
    dump_json(args.result, result)
    return 3 if "error" in result else 0


if __name__ == "__main__":
    from harness.lifetime import leave  # here: nothing extra is imported before the clocks

    leave(main(sys.argv[1:]))
