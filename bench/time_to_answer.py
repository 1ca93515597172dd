"""Time to a trustworthy answer: the fixed-repeat fresh-process loop beside the new default.

Runs, on this machine in one go and on the same cells: (A) `python -m harness run` as before
(fixed repeats, every trial a fresh process, every artifact saved; it also fills an artifact
cache), then (B) the new default (`--repeats auto`, forked warm / cold-model trials with fresh
controls, artifacts reused from that cache). Prints both wall times, each cell's median and the
precision it reached, and the verdict rule's judgement of B's medians against A's.

Usage: python bench/time_to_answer.py [--models MobileNetV2] [--formats h5,keras,savedmodel,tflite]
           [--cache warm,cold-model] [--repeats 5] [--max-repeats 20] [--out DIR] [--analyse]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import precision  # noqa: E402
from matrix.results import stats  # noqa: E402

ENV_ID = "bench"


def run(out: Path, run_id: str, args: list[str]) -> float:
    """Wall seconds of one harness run (its records in `out`)."""
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--out", str(out), "--run-id", run_id,
         "--env-id", ENV_ID, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )  # fmt: skip
    wall = time.monotonic() - began
    if proc.returncode != 0:
        sys.exit(f"harness run {run_id} failed: {proc.stderr[-2000:]}")
    (out / "wall_s").write_text(f"{wall}\n")
    return wall


def read_records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / f"{ENV_ID}.jsonl").read_text().splitlines()]


def trial_seconds(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], float]:
    """Mean wall time of one trial per (model, format, cache mode, process), cache preparation
    included: the time from the previous record to the trial's (records carry whole seconds,
    so each figure is good to about a second over a cell's few trials)."""
    spent: dict[tuple[str, str, str, str], list[float]] = {}
    previous = None
    for r in records:
        moment = datetime.fromisoformat(r["time"]).timestamp()
        if r["kind"] == "trial" and previous is not None and "round" in r:
            key = (r["model"], r["format"], r["cache_mode"], r["process"])
            spent.setdefault(key, []).append(moment - previous)
        previous = moment
    return {key: statistics.mean(values) for key, values in spent.items()}


def of_kind(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == kind]


def cells(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], tuple[str, list[float]]]:
    """Per (model, format, cache mode): the process its statistics come from (the one with
    more ok measured loads) and those loads."""
    loads: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for r in of_kind(records, "trial"):
        if r["status"] == "ok" and r["phase"] == "measure" and r["process"] != "reused":
            key = (r["model"], r["format"], r["cache_mode"])
            loads.setdefault(key, {}).setdefault(r["process"], []).append(r["load_s"])
    return {
        key: max(by_process.items(), key=lambda item: len(item[1]))
        for key, by_process in loads.items()
    }


def precision_text(samples: list[float]) -> str:
    half = precision.relative_half_width(samples)
    return f"±{half:.1%}" if half is not None else "n<6: none"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="MobileNetV2")
    parser.add_argument("--formats", default="h5,keras,savedmodel,tflite")
    parser.add_argument("--cache", default="warm,cold-model")
    parser.add_argument("--repeats", default="5", help="the fixed loop's repeats (+1 warm-up)")
    parser.add_argument("--max-repeats", default=str(precision.MAX_REPEATS))
    parser.add_argument("--out", default="", help="keep the runs here (default: a temp folder)")
    parser.add_argument("--analyse", action="store_true", help="only print --out's comparison")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="time-to-answer-"))
    if not args.analyse:
        cache = out / "artifact-cache"
        common = ["--models", args.models, "--formats", args.formats, "--cache", args.cache]
        common += ["--warmup", "1", "--artifact-cache", str(cache)]
        fixed_args = [*common, "--repeats", args.repeats, "--trial-process", "fresh"]
        run(out / "fixed", "fixed", [*fixed_args, "--fresh-artifacts"])
        auto_args = [*common, "--repeats", "auto", "--max-repeats", args.max_repeats]
        run(out / "auto", "auto", [*auto_args, "--trial-process", "forked"])
    analyse(out)
    return 0


def analyse(out: Path) -> None:
    """Print the comparison of the two runs in `out`."""
    wall_a, wall_b = (float((out / name / "wall_s").read_text()) for name in ("fixed", "auto"))
    fixed, auto = read_records(out / "fixed"), read_records(out / "auto")

    saved_s = sum(r.get("save_s") or 0 for r in of_kind(fixed, "artifact"))
    reused = sum(bool(r.get("reused")) for r in of_kind(auto, "artifact"))
    print(f"runs in {out}")
    for name, wall, written in (("fixed", wall_a, fixed), ("auto", wall_b, auto)):
        trials = of_kind(written, "trial")
        (env,), (done,) = of_kind(written, "environment"), of_kind(written, "done")
        print(
            f"{name:>5}: wall {wall:7.1f} s, {len(trials)} trial records, calibration "
            f"{env['calibration_s'] * 1e3:.0f} → {done['calibration_end_s'] * 1e3:.0f} ms"
        )
    print(
        f"auto / fixed wall time: {wall_b / wall_a:.2f} (auto reused {reused} artifacts; "
        f"saving them took the fixed run {saved_s:.1f} s: auto on a first run ≈ "
        f"{(wall_b + saved_s) / wall_a:.2f})"
    )
    for check in of_kind(auto, "fork_check"):
        print(
            f"fork check: {check['verdict']} over {check.get('pairs')} pairs, fresh/forked − 1 "
            f"= {check.get('change')}, interval [{check.get('change_low')}, "
            f"{check.get('change_high')}], fallback {check['fallback']}"
        )

    a, b = cells(fixed), cells(auto)
    shared = sorted(set(a) & set(b))
    reached = {
        (r["model"], r["format"], r["cache_mode"]): r["reached"] for r in of_kind(auto, "precision")
    }
    verdicts = stats.judge([(a[key][1], b[key][1]) for key in shared])
    print(
        f"\n{'cell':<34} {'fixed n':>7} {'median':>8} {'precision':>10}   "
        f"{'auto':>6} {'n':>3} {'median':>8} {'precision':>10} {'max?':>5}   "
        f"{'auto/fixed':>10} verdict"
    )
    for key, change in zip(shared, verdicts):
        (_, loads_a), (process_b, loads_b) = a[key], b[key]
        print(
            f"{'/'.join(key):<34} {len(loads_a):>7} {statistics.median(loads_a):>8.3f} "
            f"{precision_text(loads_a):>10}   {process_b:>6} {len(loads_b):>3} "
            f"{statistics.median(loads_b):>8.3f} {precision_text(loads_b):>10} "
            f"{'max' if reached.get(key) is False else '':>5}   "
            f"{change.median_b / change.median_a:>10.3f} {change.verdict}"
        )
    agree = sum(c.verdict == "same" for c in verdicts)
    print(f"\n{agree} of {len(shared)} cells `same` by the verdict rule (threshold 20 %)")
    # What the auto run's trials would have cost as fresh processes (the fixed run's cost of a
    # trial of each cell): the part of the difference due to forking, apart from the stopping.
    cost_a, cost_b = trial_seconds(fixed), trial_seconds(auto)
    counted = Counter(
        (r["model"], r["format"], r["cache_mode"], r["process"])
        for r in of_kind(auto, "trial")
        if "round" in r
    )
    as_fresh = sum(n * cost_a.get((m, f, c, "fresh"), 0.0) for (m, f, c, _), n in counted.items())
    spent = sum(n * cost_b.get(trial, 0.0) for trial, n in counted.items())
    print(
        f"auto's {sum(counted.values())} trials took ≈{spent:.0f} s; as fresh processes they "
        f"would have taken ≈{as_fresh:.0f} s (per-trial cost of each cell in the fixed run)"
    )
    for (model, fmt, mode, _), fresh_s in sorted(cost_a.items()):
        forked = cost_b.get((model, fmt, mode, "forked"))
        print(
            f"  {model}/{fmt}/{mode:<20} fresh trial ≈{fresh_s:5.1f} s"
            + (f", forked ≈{forked:5.1f} s" if forked is not None else "")
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
