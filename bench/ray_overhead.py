"""What does `--backend ray` add per environment, and how many nodes does a nightly sweep need?

Side by side on this machine, in alternating rounds: `matrix run --backend venv` and `matrix run
--backend ray --node-backend venv` on a one-node local cluster (`ray_local`: a `ray start` of
this machine, so both measure the same environments on the same CPU, from the same cached
venvs). Per environment, the overhead is the time the sweep gave it (the manifest's `run_s`:
its gate opening to its end) minus its harness's own (`done.elapsed_s`); once per command, the
wall time minus the environments' `run_s` (for ray: joining the cluster and surveying it).
The differences are what scheduling on Ray costs.

Then a model of the nightly matrix of the issue — every TF minor × Python × CPU/GPU × 3 models ×
9 formats × 3 cache modes × (5 repeats + 1 warm-up) — against the number of nodes: each
environment's time is its trial count × the wall time per trial measured in `--runs` (a real
run's manifest and records: this bench's own tiny runs if none is given, which underestimates
real models), plus the measured Ray overhead; environments are placed longest first on N
identical nodes (LPT, within 4/3 of the best placement), CPU and GPU environments on their own
pools, as Ray's slots and GPU requests place them.

Usage: python bench/ray_overhead.py [--rounds 2] [--tf 2.12,2.21] [--runs RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from matrix.execute.backends.ray_local import LocalCluster
from matrix.execute.stopping import sigterm_as_ctrl_c
from matrix.plan.compat import load_table
from matrix.plan.config import load_config
from matrix.plan.environments import Environment, expand
from matrix.results.reader import MANIFEST, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--models", "dense-10k", "--formats", "h5", "--cache", "warm", "--repeats", "2"]
ARGS += ["--warmup", "0", "--inference-runs", "2", "--py", "3.11", "--no-report"]
REPEATS = 5
NIGHTLY = {  # the full matrix: every TF minor of the compatibility table
    "tf": list(load_table().minors()),
    "python": "auto",
    "device": ["cpu", "gpu"],
    "models": ["MobileNetV2", "DenseNet201", "ResNet152V2"],
    "formats": "all",
    "cache": "all",
    "repeats": REPEATS,
    "warmup": 1,
}
NODES = (1, 2, 4, 8, 16, 32)
NODE_VENV = ["--node-backend", "venv"]


@dataclass
class Sweep:
    """One timed `matrix run`: its wall time, and per environment (run_s, harness, trials)."""

    wall: float
    envs: dict[str, tuple[float, float, int]]

    def per_env(self) -> list[float]:
        return [run_s - inside for run_s, inside, _ in self.envs.values()]

    def once(self) -> float:
        return self.wall - sum(run_s for run_s, _, _ in self.envs.values())


def measured(run_dir: Path, wall: float = 0.0) -> Sweep:
    """A run's environments as its manifest and `done` records give them."""
    manifest = json.loads((run_dir / MANIFEST).read_text())
    envs = {}
    for outcome in manifest["outcomes"]:
        if outcome.get("status") != "ok":
            continue
        env_id = outcome["env_id"]
        done = [r for r in read_jsonl(run_dir / f"{env_id}.jsonl").records if r["kind"] == "done"]
        if done:
            run_s = float(outcome["run_s"])
            envs[env_id] = (run_s, float(done[-1]["elapsed_s"]), int(done[-1]["trials_written"]))
    return Sweep(wall, envs)


def sweep(work: Path, backend: list[str], tf: str, build_dir: Path, environ: dict) -> Sweep:
    run_id = f"bench-{time.time_ns()}"
    started = time.monotonic()
    argv = [sys.executable, "-m", "matrix", "run", *backend, "--tf", tf, "--run-id", run_id]
    subprocess.run(
        [*argv, "--build-dir", str(build_dir), *ARGS],
        cwd=work,
        env=environ,
        check=True,
        capture_output=True,
        text=True,
    )
    return measured(work / "results" / run_id, time.monotonic() - started)


def lpt(durations: list[float], nodes: int) -> float:
    """The wall time of `durations` placed longest first, each on the node free first."""
    free = [0.0] * nodes
    for duration in sorted(durations, reverse=True):
        heapq.heapreplace(free, free[0] + duration)
    return max(free)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def model(per_trial: dict[str, float], overhead: float) -> None:
    """Print the nightly matrix's wall time against the node count (see the docstring)."""
    config = load_config(None, NIGHTLY)
    environments, _ = expand(config)
    typical = statistics.median(per_trial.values())
    trials = len(config.models) * len(config.formats) * len(config.cache)
    trials *= REPEATS + config.warmup

    def duration(env: Environment) -> float:
        return trials * per_trial.get(minor_of(env.id), typical) + overhead

    used = ", ".join(f"{minor} {t:.2f} s" for minor, t in sorted(per_trial.items()))
    print(
        f"\nmodel: the nightly matrix, {len(environments)} environments of {trials} trials, "
        f"+ {overhead:.2f} s Ray overhead each; wall time per trial: {used}; the other minors "
        f"{typical:.2f} s (the median)"
    )
    for device in ("cpu", "gpu"):
        times = [duration(env) for env in environments if env.device == device]
        if not times:
            continue
        print(f"\n{device.upper()} environments: {len(times)}, {sum(times) / 3600:.1f} h in all")
        print(f"{'nodes':>6} {'wall (h)':>9} {'speed-up':>9} {'efficiency':>11}")
        for nodes in NODES:
            wall = lpt(times, nodes)
            speedup = sum(times) / wall
            print(f"{nodes:>6} {wall / 3600:>9.2f} {speedup:>9.1f} {speedup / nodes:>10.0%}")
        print(f"  (never under {max(times) / 3600:.2f} h: the longest environment)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tf", default="2.12,2.21", help="environments measured (py3.11, cpu)")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build", help="their venvs")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="runs the model uses")
    parser.add_argument(
        "--overhead", type=float, help="Ray's per-environment overhead measured before: model only"
    )
    args = parser.parse_args()
    real = per_trial_of([measured(run) for run in args.runs])
    if args.overhead is not None:
        model(real, args.overhead)
        return
    build_dir = args.build_dir.absolute()
    samples: dict[str, list[Sweep]] = {"venv": [], "ray": []}
    # SIGTERM too unwinds the `with` blocks: the cluster's nodes are stopped either way
    with sigterm_as_ctrl_c(), tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        work = Path(tmp)
        (work / "ray").mkdir()
        with LocalCluster(work / "ray", nodes=1) as cluster:
            backends = {
                "venv": ["--backend", "venv"],
                "ray": ["--backend", "ray", "--address", cluster.address, *NODE_VENV],
            }
            # a first, unmeasured sweep of each: venvs made, caches and Ray's worker warm
            for name in backends:
                sweep(work, backends[name], args.tf, build_dir, cluster.environ)
            for round_ in range(args.rounds):
                order = list(backends) if round_ % 2 == 0 else list(backends)[::-1]
                for name in order:
                    samples[name].append(
                        sweep(work, backends[name], args.tf, build_dir, cluster.environ)
                    )
    envs = len(samples["venv"][0].envs)
    print(f"{args.rounds} round(s) of {envs} environment(s), dense-10k × h5 × warm × 2 repeats")
    print(f"{'':>6} {'per environment (run_s - harness)':>40} {'once per command':>36}")
    for name, sweeps in samples.items():
        per_env = [x for s in sweeps for x in s.per_env()]
        once = [s.once() for s in sweeps]
        print(f"{name:>6} {spread(per_env):>40} {spread(once):>36}")
    ray_env = statistics.median(x for s in samples["ray"] for x in s.per_env())
    venv_env = statistics.median(x for s in samples["venv"] for x in s.per_env())
    ray_once = statistics.median(s.once() for s in samples["ray"])
    venv_once = statistics.median(s.once() for s in samples["venv"])
    print(
        f"ray adds {ray_env - venv_env:+.2f} s per environment and {ray_once - venv_once:+.2f} s "
        "per command (medians; the harness's own time excluded)"
    )
    tiny = per_trial_of(samples["venv"])
    print("wall time per trial here: " + ", ".join(f"{m} {t:.2f} s" for m, t in tiny.items()))
    model(calibrated(real, tiny), max(0.0, ray_env - venv_env))


def minor_of(env_id: str) -> str:
    return env_id.split("-")[0]  # tf2.21-py3.11-cpu -> tf2.21


def per_trial_of(runs: list[Sweep]) -> dict[str, float]:
    """Wall time per trial (`run_s` over trials) by TF minor: the median of its environments."""
    found: dict[str, list[float]] = {}
    for run in runs:
        for env_id, (run_s, _, trials) in run.envs.items():
            found.setdefault(minor_of(env_id), []).append(run_s / trials)
    return {minor: statistics.median(times) for minor, times in found.items()}


def calibrated(real: dict[str, float], tiny: dict[str, float]) -> dict[str, float]:
    """`real` (runs of real models, by TF minor) completed with the minors only this bench's
    tiny runs measured, scaled by the ratio of the two on the minors both have: the tiny runs
    give the minors' relative speed, the real ones its scale."""
    both = [minor for minor in tiny if minor in real]
    if not both:
        return real or tiny
    scale = statistics.median(real[minor] / tiny[minor] for minor in both)
    return {minor: time * scale for minor, time in tiny.items()} | real


if __name__ == "__main__":
    main()
