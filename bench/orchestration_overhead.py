"""What does `matrix run --backend docker` cost on top of the trials it runs?

For a cached two-environment run (both images already built), this prints per environment:
the wall time `matrix run` spent on it minus the harness's own elapsed time (its `done` record),
and the same for a plain shell loop of `docker run --rm --network none … python -m harness run`
over the same images and arguments. Target: <= 1 s per environment over the trials, and no
slower than the shell loop.

Usage: python bench/orchestration_overhead.py [--base-image tf-load-matrix/base:bookworm]
It builds the two images first if they are missing (a few minutes, once).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--models", "dense-10k", "--formats", "h5,tflite", "--cache", "warm",
        "--repeats", "1", "--warmup", "0", "--inference-runs", "2"]


def matrix(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "matrix", *args], cwd=cwd, check=True,
                          capture_output=True, text=True)


def harness_elapsed(jsonl: Path) -> float:
    done = [json.loads(line) for line in jsonl.read_text().splitlines() if '"done"' in line]
    return done[-1]["elapsed_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", default="tf-load-matrix/base:bookworm")
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

        began = time.perf_counter()
        matrix(work, "run", "--backend", "docker", "--build-dir", str(work / "build"),
               "--no-report", *ARGS)
        wall = time.perf_counter() - began
        (run_dir,) = (work / "results").iterdir()
        inside = sum(harness_elapsed(run_dir / f"{e}.jsonl") for e in env_ids)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        tags = {o["env_id"]: o["image"] for o in manifest["outcomes"]}

        loop_dir = work / "loop"
        loop_dir.mkdir()
        script = "; ".join(
            f"docker run --rm --network none -v {loop_dir}:/results -v tflm-bench-{env}:/artifacts "
            f"{tags[env]} run --work /artifacts --out /results --run-id loop --env-id {env} "
            + " ".join(shlex.quote(a) for a in ARGS)
            for env in env_ids)
        began = time.perf_counter()
        subprocess.run(["bash", "-c", script], check=True, capture_output=True)
        loop_wall = time.perf_counter() - began
        loop_inside = sum(harness_elapsed(loop_dir / f"{e}.jsonl") for e in env_ids)
        subprocess.run(["docker", "volume", "rm", *(f"tflm-bench-{e}" for e in env_ids)],
                       capture_output=True)

    n = len(env_ids)
    ours, loop = (wall - inside) / n, (loop_wall - loop_inside) / n
    print(f"{n} cached environments, {' '.join(ARGS)}")
    print(f"matrix run : wall {wall:6.1f} s, harness {inside:6.1f} s, overhead {ours:5.2f} s/env")
    print(f"shell loop : wall {loop_wall:6.1f} s, harness {loop_inside:6.1f} s, "
          f"overhead {loop:5.2f} s/env")
    verdict = "within target" if ours <= 1.0 and ours <= loop + 0.1 else "OVER target"
    print(f"target <= 1 s/env and no slower than the loop: {verdict}")


if __name__ == "__main__":
    main()
