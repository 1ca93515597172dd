"""Time to a trustworthy answer: the fixed-repeat fresh-process loop beside forked trials.

Runs on this machine in one go, on the same cells: `fixed`, the loop as it was (fixed repeats,
every trial a fresh process, every artifact saved, which also fills an artifact cache); then
`forked`, `python -m harness run --trial-process forked` (forked warm / cold-model trials
with fresh-process controls, artifacts reused from that cache); with `--auto` also `auto`
(`--repeats auto`). Prints wall times, each cell's median and the precision it reached, the
verdict rule's judgement of each run's medians against `fixed`'s, what a trial cost, and the
trials' own work (load, first inference, steady calls), which no process mode spares.
With `--floor RUN_DIR` (a `matrix run`'s results folder) it prints only that floor for the run's
environments: a round's own work from its cells' medians, at its repeats and at the fewest loads
a median's 95 % interval needs.
All runs use one copy of the harness, so the cache key (which hashes the harness's code) cannot
change between them while the tree is being edited.

Usage: python bench/time_to_answer.py [--models MobileNetV2] [--formats h5,keras,savedmodel,tflite]
           [--cache warm,cold-model] [--repeats 5] [--auto] [--out DIR] [--analyse]
       python bench/time_to_answer.py --floor RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import precision  # noqa: E402
from matrix.results import stats  # noqa: E402

ENV_ID = "bench"
RUNS = ("fixed", "forked", "auto")
Cell = tuple[str, str, str]  # model, format, cache mode


def run(out: Path, harness: Path, run_id: str, args: list[str]) -> None:
    """One harness run (records in `out/run_id`), its wall time in `wall_s` beside them."""
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--out", str(out / run_id), "--run-id", run_id,
         "--env-id", ENV_ID, *args],
        cwd=harness,
        env={**os.environ, "PYTHONPATH": str(harness)},
        capture_output=True,
        text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"harness run {run_id} failed: {proc.stderr[-2000:]}")
    (out / run_id / "wall_s").write_text(f"{time.monotonic() - began}\n")


def read_records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / f"{ENV_ID}.jsonl").read_text().splitlines()]


def of_kind(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == kind]


def measured(records: list[dict[str, Any]]) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """Each ok measured trial of a fresh or forked process, with its cell."""
    for r in of_kind(records, "trial"):
        if r["status"] == "ok" and r["phase"] == "measure" and r["process"] != "reused":
            yield (r["model"], r["format"], r["cache_mode"]), r


def cells(records: list[dict[str, Any]]) -> dict[Cell, tuple[str, list[float]]]:
    """Per cell: the process its statistics come from (the one with more ok measured loads,
    as matrix.results.dataset.measured picks it) and those loads."""
    loads: dict[Cell, dict[str, list[float]]] = {}
    for cell, r in measured(records):
        loads.setdefault(cell, {}).setdefault(r["process"], []).append(r["load_s"])
    return {
        cell: max(sorted(by_process.items()), key=lambda item: len(item[1]))
        for cell, by_process in loads.items()
    }


def trial_seconds(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], float]:
    """Mean wall time of one trial per (model, format, cache mode, process), cache preparation
    included: the time from the previous record to the trial's (records carry whole seconds,
    so each figure is good to about a second over a cell's trials)."""
    spent: dict[tuple[str, str, str, str], list[float]] = {}
    previous = None
    for r in records:
        moment = datetime.fromisoformat(r["time"]).timestamp()
        if r["kind"] == "trial" and previous is not None and "round" in r:
            key = (r["model"], r["format"], r["cache_mode"], r["process"])
            spent.setdefault(key, []).append(moment - previous)
        previous = moment
    return {key: statistics.mean(values) for key, values in spent.items()}


def trial_work_s(trial: dict[str, Any], inference_runs: int) -> float:
    """Seconds an ok trial spent on what it measures after the import: the load, the first
    inference and the steady calls. Forking spares the import and the process start, not this."""
    steady = inference_runs * (trial["inference_s"] or 0.0)
    return trial["load_s"] + trial["first_inference_s"] + steady


def own_work_s(records: list[dict[str, Any]]) -> float:
    """The own work of every ok trial of a run: where it is over half a fresh run's wall, no
    process mode halves that run with as many trials."""
    (plan,) = of_kind(records, "plan")
    trials = [r for r in of_kind(records, "trial") if r["status"] == "ok"]
    return sum(trial_work_s(r, plan["inference_runs"]) for r in trials)


def floor(run_dir: Path) -> None:
    """Per environment of a `matrix run`, the own work of one round (the sum of its cells'
    median own work over measured trials) and what that comes to at the run's repeats and at
    precision.MIN_REPEATS, at the cells' medians: the model work a run of the same cells does
    however its processes start."""
    paths = sorted(run_dir.glob("*.jsonl"))
    if not paths:
        sys.exit(f"--floor: no environment records (*.jsonl) in {run_dir}")
    total, plan = 0.0, None
    for path in paths:
        records = [json.loads(line) for line in path.read_text().splitlines()]
        if not of_kind(records, "plan"):  # an environment that failed before measuring
            print(f"{path.stem}: no plan record (the environment failed), left out")
            continue
        (plan,) = of_kind(records, "plan")
        work: dict[Cell, list[float]] = {}
        for cell, r in measured(records):
            work.setdefault(cell, []).append(trial_work_s(r, plan["inference_runs"]))
        round_s = sum(statistics.median(seconds) for seconds in work.values())
        total += round_s
        print(f"{path.stem}: {len(work)} cells, own work {round_s:.1f} s a round")
    if plan is None:
        sys.exit(f"--floor: no environment of {run_dir} was measured")
    repeats = plan["repeats"]
    at = [(f"{repeats} repeats (the run's)", repeats)] if isinstance(repeats, int) else []
    at.append((f"{precision.MIN_REPEATS} (a median's 95 % interval)", precision.MIN_REPEATS))
    for label, n in at:
        print(f"all: {total:.1f} s a round; at {label}: {n * total / 60:.1f} min")


def precision_text(samples: list[float]) -> str:
    half = precision.relative_half_width(samples)
    return f"±{half:.0%}" if half is not None else "n<6"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="MobileNetV2")
    parser.add_argument("--formats", default="h5,keras,savedmodel,tflite")
    parser.add_argument("--cache", default="warm,cold-model")
    parser.add_argument("--repeats", default="5", help="the fixed loop's repeats (+1 warm-up)")
    parser.add_argument("--auto", action="store_true", help="also run with --repeats auto")
    parser.add_argument("--out", default="", help="keep the runs here (default: a temp folder)")
    parser.add_argument("--analyse", action="store_true", help="only print --out's comparison")
    parser.add_argument("--floor", type=Path, help="only print a matrix run's own-work floor")
    args = parser.parse_args(argv)
    if args.floor:
        floor(args.floor)
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="time-to-answer-"))
    if not args.analyse:
        harness = out / "code"
        shutil.copytree(
            ROOT / "harness", harness / "harness", ignore=shutil.ignore_patterns("*.pyc")
        )
        common = ["--models", args.models, "--formats", args.formats, "--cache", args.cache]
        common += ["--artifact-cache", str(out / "artifact-cache")]
        fixed = ["--repeats", args.repeats, "--warmup", "1", "--trial-process", "fresh"]
        run(out, harness, "fixed", [*common, *fixed, "--fresh-artifacts"])
        run(out, harness, "forked", [*common, "--trial-process", "forked"])
        if args.auto:
            run(out, harness, "auto", [*common, "--trial-process", "forked", "--repeats", "auto"])
    analyse(out)
    return 0


def analyse(out: Path) -> None:
    """Print the comparison of the runs in `out` with its `fixed` one."""
    found = {name: read_records(out / name) for name in RUNS if (out / name / "wall_s").exists()}
    wall = {name: float((out / name / "wall_s").read_text()) for name in found}
    fixed = found["fixed"]
    saved_s = sum(r.get("save_s") or 0 for r in of_kind(fixed, "artifact"))
    print(f"runs in {out}; the fixed run saved its artifacts in {saved_s:.1f} s")
    for name, records in found.items():
        (env,), (done,) = of_kind(records, "environment"), of_kind(records, "done")
        reused = sum(bool(r.get("reused")) for r in of_kind(records, "artifact"))
        speed = f"{env['calibration_s'] * 1e3:.0f} → {done['calibration_end_s'] * 1e3:.0f} ms"
        print(
            f"{name:>8}: wall {wall[name]:7.1f} s ({wall[name] / wall['fixed']:.2f} of fixed), "
            f"{len(of_kind(records, 'trial'))} trials, {reused} artifacts reused, "
            f"calibration {speed}"
        )
        for check in of_kind(records, "fork_check"):
            interval = [check.get("change_low"), check.get("change_high")]
            print(
                f"          fork check {check['verdict']} over {check.get('pairs')} pairs: "
                f"fresh / forked − 1 = {check.get('change')}, 95 % interval {interval}"
            )
    floor_s = own_work_s(fixed)
    print(
        f"the fixed run's trials' own work (load + first inference + steady calls), which no "
        f"process mode spares: {floor_s:.1f} s = {floor_s / wall['fixed']:.2f} of its wall"
    )
    base = cells(fixed)
    for name in (n for n in found if n != "fixed"):
        compare(name, base, cells(found[name]), found[name])
    cost = {name: trial_seconds(records) for name, records in found.items()}
    print("\nseconds per trial, cache preparation included (whole-second record times):")
    for (model, fmt, mode, _), fresh_s in sorted(cost["fixed"].items()):
        others = [
            f"{name} {process} {seconds:5.1f}"
            for name in found
            if name != "fixed"
            for (m, f, c, process), seconds in sorted(cost[name].items())
            if (m, f, c) == (model, fmt, mode)
        ]
        print(f"  {model}/{fmt}/{mode}: fixed fresh {fresh_s:5.1f}; " + "; ".join(others))


def compare(name: str, base: dict[Cell, Any], other: dict[Cell, Any], records: list) -> None:
    """One run's cells against the fixed run's: medians, precision, the verdict rule."""
    shared = sorted(set(base) & set(other))
    reached = {(r["model"], r["format"], r["cache_mode"]): r for r in of_kind(records, "precision")}
    verdicts = stats.judge([(base[cell][1], other[cell][1]) for cell in shared])
    print(
        f"\n{name} against fixed\n{'cell':<34} {'n':>3} {'median':>7} {'±95%':>5}   "
        f"{'process':>7} {'n':>3} {'median':>7} {'±95%':>5} {'max':>3}   {'ratio':>5} verdict"
    )
    for cell, change in zip(shared, verdicts):
        (_, loads_a), (process, loads_b) = base[cell], other[cell]
        hit_max = reached.get(cell, {}).get("reached") is False
        print(
            f"{'/'.join(cell):<34} {len(loads_a):>3} {statistics.median(loads_a):>7.3f} "
            f"{precision_text(loads_a):>5}   {process:>7} {len(loads_b):>3} "
            f"{statistics.median(loads_b):>7.3f} {precision_text(loads_b):>5} "
            f"{'max' if hit_max else '':>3}   {change.median_b / change.median_a:>5.2f} "
            f"{change.verdict}"
        )
    same = sum(c.verdict == "same" for c in verdicts)
    print(f"{same} of {len(shared)} cells `same` by the verdict rule (threshold 20 %)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
