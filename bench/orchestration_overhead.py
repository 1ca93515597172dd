"""What does `matrix run --backend docker` cost on top of the trials it runs?

For a cached two-environment run (both images already built), this prints per environment:
the wall time `matrix run` spent on it minus the harness's own elapsed time (its `done` record),
and the same for a plain shell loop of `docker run --rm --network none … python -m harness run`
over the same images and arguments, in alternating order over a few rounds (medians). It also
splits matrix's overhead into what each further environment costs (the manifest's `run_s` of
the environments after the first: launch to container removed) and what the command costs once
(CLI start, planning, the summary), since only the first grows with the matrix, and says from
which matrix size the one-off cost is amortised. Target: <= 1 s per environment over the
trials, and no slower than the shell loop.

Last, it prints a floor no scheduling can go under, from the engine's own event log: before its
first container exists, `matrix` is a Python process importing the libraries it is built on
(typer, rich, pydantic, PyYAML, jinja2, the docker SDK: timed alone here too) and planning; then
at least the first container must be created and started, and every container must be gone
before the next environment may begin measuring (and before the command ends). The loop pays
the engine's part too, but none of the first.

Usage: python bench/orchestration_overhead.py [--base-image tf-load-matrix/base:bookworm]
It builds the two images first if they are missing (a few minutes, once).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from matrix.backends.docker import RUN_LABEL
from matrix.runs import run_dirs

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--models", "dense-10k", "--formats", "h5,tflite", "--cache", "warm",
        "--repeats", "1", "--warmup", "0", "--inference-runs", "2"]
LIBRARIES = "import typer, rich.console, pydantic, yaml, jinja2, docker"
BENCH_LABEL = "tf-load-matrix.bench"  # marks the loop's containers, to find their events


def matrix(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "matrix", *args], cwd=cwd, check=True,
                          capture_output=True, text=True)


def harness_elapsed(jsonl: Path) -> float:
    done = [json.loads(line) for line in jsonl.read_text().splitlines() if '"done"' in line]
    return done[-1]["elapsed_s"]


@dataclass
class Engine:
    """The engine's own timings of one sweep's containers (from `docker events`), seconds."""

    first_create: float  # from launching the sweep to its first container created
    starts: list[float]  # create -> started, per container
    teardowns: list[float]  # exited -> removed, per container


@dataclass
class Sample:
    """One timed sweep: its wall time and the harness's own elapsed time, summed over envs."""

    wall: float
    inside: float
    engine: Engine
    per_env: float | None = None  # matrix only: launch to container removed, minus the harness

    def overhead(self, n: int) -> float:
        return (self.wall - self.inside) / n


def engine_timings(label: str, since: float) -> Engine:
    """What the engine logged for the containers labelled `label` since `since` (epoch)."""
    events = subprocess.run(
        ["docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
         "--filter", "type=container", "--filter", f"label={label}",
         "--format", "{{.Action}} {{.ID}} {{.TimeNano}}"],
        check=True, capture_output=True, text=True).stdout.split("\n")
    at: dict[str, dict[str, float]] = {}
    for line in filter(None, events):
        action, container, nanos = line.split()
        at.setdefault(container, {})[action] = int(nanos) / 1e9
    return Engine(first_create=min(c["create"] for c in at.values()) - since,
                  starts=[c["start"] - c["create"] for c in at.values()],
                  teardowns=[c["destroy"] - c["die"] for c in at.values()])


def run_matrix(work: Path, env_ids: list[str], index: int) -> tuple[Sample, dict[str, str]]:
    results = work / f"results-{index}"
    since, began = time.time(), time.perf_counter()
    matrix(work, "run", "--backend", "docker", "--build-dir", str(work / "build"),
           "--results-dir", str(results), "--no-report", *ARGS)
    wall = time.perf_counter() - began
    (run_dir,) = run_dirs(results)
    elapsed = {e: harness_elapsed(run_dir / f"{e}.jsonl") for e in env_ids}
    outcomes = json.loads((run_dir / "manifest.json").read_text())["outcomes"]
    # The first environment also carries work done once, overlapped with its start (the
    # summary's imports, behind the harness's start gate): the later ones show the cost each
    # further environment adds.
    per_env = statistics.fmean(o["run_s"] - elapsed[o["env_id"]] for o in outcomes
                               if o["env_id"] != env_ids[0])
    engine = engine_timings(f"{RUN_LABEL}={run_dir.name}", since)
    return (Sample(wall, sum(elapsed.values()), engine, per_env),
            {o["env_id"]: o["image"] for o in outcomes})


def run_loop(work: Path, env_ids: list[str], tags: dict[str, str], index: int) -> Sample:
    loop_dir = work / f"loop-{index}"
    loop_dir.mkdir()
    script = "; ".join(
        f"docker run --rm --network none --label {BENCH_LABEL}={loop_dir.name} "
        f"-v {loop_dir}:/results -v tflm-bench-{env}:/artifacts "
        f"{tags[env]} run --work /artifacts --out /results --run-id loop --env-id {env} "
        + " ".join(shlex.quote(a) for a in ARGS)
        for env in env_ids)
    since, began = time.time(), time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True, capture_output=True)
    wall = time.perf_counter() - began
    engine = engine_timings(f"{BENCH_LABEL}={loop_dir.name}", since)
    subprocess.run(["docker", "volume", "rm", *(f"tflm-bench-{e}" for e in env_ids)],
                   capture_output=True)
    return Sample(wall, sum(harness_elapsed(loop_dir / f"{e}.jsonl") for e in env_ids), engine)


def import_time() -> float:
    """Wall time of a Python process that only imports the libraries `matrix` is built on."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", LIBRARIES], check=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", default="tf-load-matrix/base:bookworm")
    parser.add_argument("--rounds", type=int, default=2,
                        help="each round times both, in alternating order (default 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp:
        work = Path(tmp)
        (work / "matrix.yaml").write_text(
            f'tf: ["2.21"]\npython: ["3.11"]\nkeras: [default, legacy]\n'
            f'base_images:\n  "3.11": {args.base_image}\n')
        build = matrix(work, "build", "--build-dir", str(work / "build"))
        print(build.stdout.strip().splitlines()[-1])
        plan = json.loads(matrix(work, "plan", "--json").stdout)
        env_ids = [e["id"] for e in plan["environments"]]
        ours, loops = [], []
        tags: dict[str, str] = {}  # from the first matrix run (round 0 runs it first)
        for index in range(args.rounds):
            if index % 2:  # the second one of a pair meets a warmer machine: alternate
                loops.append(run_loop(work, env_ids, tags, index))
            sample, tags = run_matrix(work, env_ids, index)
            ours.append(sample)
            if not index % 2:
                loops.append(run_loop(work, env_ids, tags, index))

    n = len(env_ids)
    mine = statistics.median(s.overhead(n) for s in ours)
    loop = statistics.median(s.overhead(n) for s in loops)
    per_env = statistics.median(s.per_env for s in ours if s.per_env is not None)
    print(f"{n} cached environments, {args.rounds} rounds (medians), {' '.join(ARGS)}")
    for name, samples in (("matrix run", ours), ("shell loop", loops)):
        walls = ", ".join(f"{s.wall:.1f}" for s in samples)
        print(f"{name} : wall {walls} s; overhead "
              f"{statistics.median(s.overhead(n) for s in samples):5.2f} s/env")
    once = (mine - per_env) * n
    print(f"matrix run, split: {per_env:5.2f} s per further environment (launch to container "
          f"removed) + {once:5.2f} s once (CLI start, plan, summary)")
    print(f"over N environments: {per_env:.2f} + {once:.2f}/N s/env; <= 1 s/env "
          f"{_from_n(per_env, once, 1.0)}; no slower than the loop {_from_n(per_env, once, loop)}")
    verdict = "within target" if mine <= 1.0 and mine <= loop + 0.1 else "OVER target"
    print(f"target <= 1 s/env and no slower than the loop: {verdict}")
    _print_floor(ours, loops, n, loop)


def _print_floor(ours: list[Sample], loops: list[Sample], n: int, loop: float) -> None:
    """The least overhead any `matrix run` of these environments could have, from its parts."""
    imports = statistics.median(import_time() for _ in range(3))
    first = statistics.median(s.engine.first_create for s in ours)
    start = statistics.median(t for s in ours + loops for t in s.engine.starts)
    removal = statistics.median(t for s in ours + loops for t in s.engine.teardowns)
    print(f"engine, per container (matrix and loop alike): created -> started {start:.2f} s, "
          f"exited -> removed {removal:.2f} s")
    for before, what in ((first, "its first container created"),
                         (imports, "only its libraries imported")):
        floor = (before + start + n * removal) / n
        print(f"floor, {what} after {before:.2f} s + that container started + {n} removed: "
              f"{floor:.2f} s/env; the loop's whole overhead {loop:.2f} s/env: "
              + ("no schedule can match the loop" if floor > loop else "the loop is within reach"))


def _from_n(per_env: float, once: float, limit: float) -> str:
    """From which matrix size the command's one-off cost is amortised below `limit` per env."""
    if per_env >= limit:
        return "at no N (the per-environment cost alone is over)"
    return f"from N = {max(1, math.ceil(once / (limit - per_env)))}"


if __name__ == "__main__":
    main()
