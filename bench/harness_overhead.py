"""Does the harness change what it measures? Its median load time beside a bare, hand-timed load.

For MobileNetV2 as `h5` and `tflite`, with a warm cache in both cases, the harness saves the
artifacts and times them (`--repeats N`); then the harness's trial process and an identical
fresh process that does nothing but import, start a clock, load and stop the clock take turns,
A B A B, N times each, so drift and heat hit both alike. Printed: the harness run's own median,
the interleaved medians of both methods, and their ratio. Target: the harness adds <= 1 % or
<= 5 ms.

Usage: python bench/harness_overhead.py [--repeats 7] [--model MobileNetV2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import cache  # noqa: E402

BARE = {
    # `tf.keras` is resolved before the clock, as the harness does: in Keras 3 it is a lazy
    # import that belongs to the import figure, not to the load.
    "h5": ("import tensorflow as tf, time, sys\nload = tf.keras.models.load_model\n"
           "t = time.perf_counter(); load(sys.argv[1], compile=False)\n"
           "print(time.perf_counter() - t)"),
    "tflite": ("from ai_edge_litert.interpreter import Interpreter; import time, sys\n"
               "t = time.perf_counter(); i = Interpreter(model_path=sys.argv[1]); "
               "i.allocate_tensors()\nprint(time.perf_counter() - t)"),
}


def harness_trials(out: Path, model: str, repeats: int) -> list[dict]:
    subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(out), "--run-id",
                    "bench", "--env-id", "bench", "--models", model, "--formats", "h5,tflite",
                    "--cache", "warm", "--repeats", str(repeats), "--warmup", "1"],
                   check=True, cwd=ROOT, capture_output=True)
    lines = (out / "bench.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def bare_load(fmt: str, path: str) -> float:
    cache.read_all(cache.files_of(path))  # the same warm state the harness prepares
    proc = subprocess.run([sys.executable, "-c", BARE[fmt], path], check=True,
                          capture_output=True, text=True)
    return float(proc.stdout.strip().splitlines()[-1])


def harness_load(fmt: str, artifact: dict, model_dir: Path, tmp: Path) -> float:
    """One trial by the harness trial process, exactly as `python -m harness run` spawns it."""
    cache.read_all(cache.files_of(artifact["path"]))
    result = tmp / "result.json"
    reference = sorted(model_dir.glob("reference-*.npy"))[0]
    subprocess.run([sys.executable, "-m", "harness.trial_worker", "--format", fmt,
                    "--artifact", artifact["path"], "--input", str(model_dir / "input.npy"),
                    "--reference", str(reference), "--inference-runs", "1",
                    "--result", str(result)], check=True, cwd=ROOT, capture_output=True)
    return json.loads(result.read_text())["loads"][0]["load_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", default="MobileNetV2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        records = harness_trials(Path(tmp), args.model, args.repeats)
        artifacts = {r["format"]: r for r in records if r["kind"] == "artifact"}
        print(f"{args.model}, warm cache, {args.repeats} fresh processes per method")
        print(f"{'format':8} {'harness run':>12} {'harness A/B':>12} {'bare A/B':>10} "
              f"{'ratio':>7} {'diff':>9}  verdict")
        for fmt in ("h5", "tflite"):
            run = statistics.median(r["load_s"] for r in records if r["kind"] == "trial"
                                    and r["format"] == fmt and r["phase"] == "measure")
            model_dir = Path(artifacts[fmt]["path"]).parent
            bare_load(fmt, artifacts[fmt]["path"])  # warm-up, excluded like the harness's
            pairs = [(harness_load(fmt, artifacts[fmt], model_dir, Path(tmp)),
                      bare_load(fmt, artifacts[fmt]["path"])) for _ in range(args.repeats)]
            h = statistics.median(p[0] for p in pairs)
            b = statistics.median(p[1] for p in pairs)
            ok = h - b <= max(0.01 * b, 0.005)
            print(f"{fmt:8} {run * 1000:10.1f}ms {h * 1000:10.1f}ms {b * 1000:8.1f}ms "
                  f"{h / b:7.3f} {(h - b) * 1000:+7.1f}ms  "
                  f"{'within target' if ok else 'OVER target'}")

if __name__ == "__main__":
    main()
