"""Does the harness change what it measures? Its trials beside bare, hand-timed loads.

Per cell (format × cache mode), the harness's own trial and a bare fresh process that only imports,
starts a clock and loads, paired until resolved (see `measure`). Target: the harness adds or
removes at most 1 % or 5 ms (whichever is larger), both directions.
Usage: python bench/harness_overhead.py [--model MobileNetV2] [--min-pairs 8] [--max-pairs 60]
           [--budget-s 600] [--cells h5:warm,tflite:warm,...]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import cache  # noqa: E402
from harness.catalog import parse_model  # noqa: E402
from harness.contract import RunSpec  # noqa: E402
from harness.formats import FORMATS  # noqa: E402
from harness.runner import ModelArtifacts, Run  # noqa: E402

TARGET_RATIO = 0.01
TARGET_ABS_S = 0.005
CELLS = "h5:warm,savedmodel:warm,tflite:warm,h5:cold-model,savedmodel:cold-model"

# A bare trial: import (the same runtime the harness's import clock covers), the same device
# start-up the harness does before its load clock, then the load alone. Prints JSON.
_TF = (
    "import time, sys, json\nt0 = time.perf_counter()\nimport tensorflow as tf\n{keras}"
    "import_s = time.perf_counter() - t0\n"
    "d = [x for x in tf.config.list_logical_devices() if x.device_type in ('GPU', 'CPU')]\n"
    "with tf.device(sorted(d, key=lambda x: x.device_type != 'GPU')[0].name):\n"
    "    tf.zeros(1).numpy()\n"
    "t = time.perf_counter()\n{load}\n"
    "print(json.dumps({{'import_s': import_s, 'load_s': time.perf_counter() - t}}))"
)
BARE = {
    "h5": _TF.format(
        keras="tf.keras.models\n", load="tf.keras.models.load_model(sys.argv[1], compile=False)"
    ),
    "savedmodel": _TF.format(
        keras="", load="tf.saved_model.load(sys.argv[1]).signatures['serving_default']"
    ),
    "tflite": (
        "import time, sys, json\nt0 = time.perf_counter()\n"
        "from ai_edge_litert.interpreter import Interpreter\n"
        "import_s = time.perf_counter() - t0\nt = time.perf_counter()\n"
        "i = Interpreter(model_path=sys.argv[1]); i.allocate_tensors()\n"
        "print(json.dumps({'import_s': import_s, 'load_s': time.perf_counter() - t}))"
    ),
}


@dataclass
class Pairs:
    """Paired figures of one cell: harness and bare, pair by pair."""

    harness: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)

    def interval(self) -> tuple[float, float, float]:
        """Ratio harness/bare (geometric mean of the pairs) and its 95 % interval (t, paired)."""
        logs = [math.log(h / b) for h, b in zip(self.harness, self.bare)]
        mean = statistics.fmean(logs)
        half = stats.t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
        return math.exp(mean), math.exp(mean - half), math.exp(mean + half)

    def tolerance(self) -> float:
        """The target as a ratio: 1 % or 5 ms of the bare median, whichever is larger."""
        return max(TARGET_RATIO, TARGET_ABS_S / statistics.median(self.bare))

    def verdict(self) -> str:
        _, low, high = self.interval()
        tol = self.tolerance()
        if 1 - tol <= low and high <= 1 + tol:
            return "within target"
        if low > 1 + tol:
            return "harness SLOWER beyond target"
        if high < 1 - tol:
            return "harness FASTER beyond target"
        return "not resolved"


def _trial(run: Run, arts: ModelArtifacts, fmt: str, mode: str, number: int) -> dict:
    """One trial by the harness (records appended to its file); returns that record."""
    run.trial(arts, fmt, mode, rnd=run.opts.warmup, order=number)
    with open(run.writer.path) as handle:
        record = json.loads(handle.readlines()[-1])
    if record.get("status") != "ok":
        raise SystemExit(
            f"harness trial {fmt}/{mode}: {record.get('status')}: {record.get('reason')}"
        )
    return record


def _bare(run: Run, fmt: str, mode: str, path: str) -> dict:
    """One bare load of `path` after the same cache preparation the harness makes."""
    _, invalid = run.prepare_cache(mode, cache.files_of(path), FORMATS[fmt].import_target)
    if invalid:
        raise SystemExit(f"bare load {fmt}/{mode}: cache state not proven: {invalid}")
    proc = subprocess.run(
        [sys.executable, "-c", BARE[FORMATS[fmt].artifact], path],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(
    run: Run,
    arts: ModelArtifacts,
    fmt: str,
    mode: str,
    args: argparse.Namespace,
    rng: random.Random,
) -> tuple[Pairs, Pairs]:
    """Load-time and import-time pairs of one cell, until resolved or out of budget.

    The harness's trial (`Run.trial`, exactly as a run spawns it, cache preparation and proofs
    included) and the bare load take turns in a seeded random order per pair, so drift, heat and
    the order inside a pair hit both alike. Pairs continue until the 95 % interval of the ratio
    harness/bare (paired, on log times) lies inside the target or wholly outside it, or the
    budget runs out: the verdict is then "not resolved", with the interval, never a guess.
    `import_s` is compared the same way, from the pairs of the first Keras cell.
    """
    path = arts.saved[FORMATS[fmt].artifact].path
    loads, imports = Pairs(), Pairs()
    _bare(run, fmt, mode, path)  # one warm-up of each method, left out
    _trial(run, arts, fmt, mode, 0)
    began = time.monotonic()
    while len(loads.harness) < args.max_pairs and time.monotonic() - began < args.budget_s:
        first_harness = rng.random() < 0.5
        for turn in (first_harness, not first_harness):
            if turn:
                record = _trial(run, arts, fmt, mode, len(loads.harness) + 1)
                loads.harness.append(record["load_s"])
                imports.harness.append(record["import_s"])
            else:
                bare = _bare(run, fmt, mode, path)
                loads.bare.append(bare["load_s"])
                imports.bare.append(bare["import_s"])
        if len(loads.harness) >= args.min_pairs and loads.verdict() != "not resolved":
            break
    return loads, imports


def _line(label: str, pairs: Pairs) -> str:
    ratio, low, high = pairs.interval()
    h, b = statistics.median(pairs.harness), statistics.median(pairs.bare)
    return (
        f"{label:22} {len(pairs.harness):5} {h * 1000:9.1f} {b * 1000:9.1f} "
        f"{ratio - 1:+7.2%} [{low - 1:+7.2%}, {high - 1:+7.2%}] ±{pairs.tolerance():.2%}  "
        f"{pairs.verdict()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MobileNetV2")
    parser.add_argument("--cells", default=CELLS, help="format:mode,... (default: %(default)s)")
    parser.add_argument("--min-pairs", type=int, default=8)
    parser.add_argument("--max-pairs", type=int, default=60)
    parser.add_argument("--budget-s", type=float, default=600.0, help="per cell")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    cells = [tuple(c.split(":")) for c in args.cells.split(",")]
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        formats = sorted({fmt for fmt, _ in cells})
        run = Run(
            RunSpec(
                out=tmp,
                run_id="bench",
                env_id="bench",
                models=[args.model],
                formats=formats,
                cache_modes=sorted({m for _, m in cells}),
                warmup=0,
            )
        )
        arts = run.save_model(parse_model(args.model))
        print(
            f"{args.model}: harness trial vs bare load, fresh processes, seeded random order "
            f"per pair; ratio = geometric mean of harness/bare with its 95 % interval"
        )
        print(
            f"{'cell':22} {'pairs':>5} {'harn. ms':>9} {'bare ms':>9} {'ratio-1':>7} "
            f"{'95 % interval':>20} {'target':>7}  verdict"
        )
        import_pairs = None
        for fmt, mode in cells:
            loads, imports = measure(run, arts, fmt, mode, args, rng)
            print(_line(f"{fmt} {mode} load_s", loads), flush=True)
            if import_pairs is None and FORMATS[fmt].import_target == "tensorflow+keras":
                import_pairs = imports
        if import_pairs is not None:
            print(_line("import_s (keras)", import_pairs))


if __name__ == "__main__":
    main()
