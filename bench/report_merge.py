"""How long does a report of a big sweep take? Merge + statistics + HTML for 10^5 records.

The records are synthetic (`records_of`): a real sweep of that size would take days to time.
Printed: seconds for `load_runs`, the statistics and `write_report` (its imports included, as in
`matrix report`), the HTML's size, and the load average (figures compare only at a similar
load). Target: <= 5 s in total. Usage: python bench/report_merge.py [--records 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.catalog import CACHE_MODES, FORMATS, SCHEMA_VERSION  # noqa: E402
from matrix.results.dataset import cell_problems, cell_stats, load_runs  # noqa: E402
from matrix.results.reader import MANIFEST  # noqa: E402

RUN_ID = "20261127-020000-beef"
MODELS = [
    "MobileNetV2",
    "DenseNet201",
    "ResNet152V2",
    "EfficientNetB0",
    "InceptionV3",
    "VGG16",
    "dense-10k",
    "dense-1m",
    "dense-10m",
    "Xception",
]
ENVIRONMENTS = [
    f"tf{tf}-py3.{py}-{device}{'-legacy' if legacy else ''}"
    for tf in ("2.15", "2.16", "2.17", "2.18", "2.19", "2.21")
    for py, device, legacy in (
        (10, "cpu", False),
        (11, "cpu", True),
        (11, "gpu", False),
        (12, "cpu", False),
    )
]


def records_of(env_id: str, repeats: int, rng: random.Random) -> list[dict]:
    """One environment's records: plan, environment, artifacts, schedule, trials, done.

    With the fields and shapes docs/records.md defines (24 environments × 10 models × 9 formats ×
    3 cache modes, 15 measured trials per cell, log-normal load times, some unsupported and
    invalid cells), so they take the code paths a real sweep's records take.
    """
    keras3 = "legacy" not in env_id and not env_id.startswith("tf2.15")
    tf, python, device = env_id.removeprefix("tf").split("-")[:3]

    def record(kind: str, **fields: object) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": kind,
            "run_id": RUN_ID,
            "env_id": env_id,
            "time": "2026-11-27T02:00:00+00:00",
            **fields,
        }

    out = [
        record(
            "plan",
            models=MODELS,
            formats=list(FORMATS),
            cache_modes=list(CACHE_MODES),
            repeats=repeats,
            warmup=0,
            inference_runs=10,
            process="fresh",
            seed=1,
            weights="none",
            trials_planned=len(MODELS) * len(FORMATS) * 3 * repeats,
        ),
        record(
            "environment",
            tool_version="0.1.0",
            python=f"{python.removeprefix('py')}.7",
            tensorflow=f"{tf}.0",
            keras="3.13.2" if keras3 else f"{tf}.0",
            keras_impl="keras3" if keras3 else "tf-keras" if "legacy" in env_id else "keras2",
            numpy="2.4.6",
            tflite_runtime="ai-edge-litert 2.3.0",
            cpu_model="AMD EPYC",
            cpu_count=2,
            kernel="6.18",
            memory_gb=23.5,
            hostname="c0ffee",
            gpus=["NVIDIA L4"] if device == "gpu" else [],
            build_info={},
            started="2026-11-27T02:00:00+00:00",
            in_container=True,
            drop_caches_allowed=True,
            drop_caches_via="host",
        ),
    ]
    for m, model in enumerate(MODELS):
        params = 10_000 * 3**m
        for fmt in FORMATS:
            unsupported = fmt == "weights-ckpt" and keras3
            base = rng.uniform(0.001, 0.05) if fmt.startswith("tflite") else 0.1 + params / 2e7
            out.append(
                record(
                    "artifact",
                    cell_id=f"{env_id}/{model}/{fmt}",
                    model=model,
                    format=fmt,
                    status="unsupported" if unsupported else "ok",
                    reason="Keras 3 saves weights only as .weights.h5" if unsupported else None,
                    path=f"/artifacts/{model}/{fmt}",
                    bytes=params * 4,
                    files=1,
                    largest_file_bytes=params * 4,
                    params=params,
                    save_s=base * 3,
                    io_floor_s=params * 4 / 2e9,
                    storage={"fstype": "overlay", "mount_point": "/", "kind": "image-layer"},
                )
            )
            for cache in CACHE_MODES:
                cell = {
                    "cell_id": f"{env_id}/{model}/{fmt}/{cache}",
                    "model": model,
                    "format": fmt,
                    "cache_mode": cache,
                    "process": "fresh",
                    "phase": "measure",
                }
                if unsupported:
                    out.append(
                        record(
                            "trial",
                            **cell,
                            status="unsupported",
                            round=0,
                            order=0,
                            reason="Keras 3 saves weights only as .weights.h5",
                        )
                    )
                    continue
                for i in range(repeats):
                    load = base * rng.lognormvariate(0, 0.15) * (3 if cache == "cold" else 1)
                    invalid = cache == "cold" and rng.random() < 0.02
                    out.append(
                        record(
                            "trial",
                            **cell,
                            round=i,
                            order=i,
                            status="invalid" if invalid else "ok",
                            reason="12 % resident before load" if invalid else None,
                            resident_before=0.12 if invalid else 0.0,
                            import_libs_resident_before=0.5,
                            eviction="host-drop_caches",
                            import_target="tensorflow",
                            import_s=rng.uniform(2, 5),
                            startup_s=0.01,
                            tflite_runtime=None,
                            load_s=load,
                            load_cpu_s=load * 0.9,
                            first_inference_s=load / 4,
                            inference_s=load / 20,
                            rss_before_load_mb=500.0,
                            rss_load_delta_mb=params * 4 / 1e6,
                            peak_rss_mb=600.0,
                            parity_max_abs_diff=0.0,
                            output_shape=[1, 1000],
                            load_index=0,
                        )
                    )
    out.append(record("done", trials_written=len(out), elapsed_s=1000.0))
    return out


def write_run(folder: Path, target: int) -> int:
    """The synthetic run under `folder`: one file per environment, and the manifest."""
    rng = random.Random(1234)
    per_env = target // len(ENVIRONMENTS)
    cells = len(MODELS) * len(FORMATS) * len(CACHE_MODES)
    repeats = max(1, -(-per_env // cells))  # rounded up: unsupported cells write one trial
    written = 0
    for env_id in ENVIRONMENTS:
        records = records_of(env_id, repeats, rng)
        (folder / f"{env_id}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        written += len(records)
    (folder / MANIFEST).write_text(
        json.dumps(
            {
                "run_id": RUN_ID,
                "started": "2026-11-27T02:00:00+00:00",
                "host": {"hostname": "ci-1"},
                "outcomes": [
                    {"env_id": e, "status": "ok", "image": f"tlm/{e}:abc"} for e in ENVIRONMENTS
                ],
                "skipped": [{"id": "tf2.15-py3.12-gpu", "reason": "no NVIDIA runtime"}],
            }
        )
    )
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / RUN_ID
        run.mkdir()
        count = write_run(run, args.records)
        print(f"{count} synthetic records in {len(ENVIRONMENTS)} files")
        start = time.perf_counter()
        ds = load_runs([run])
        loaded = time.perf_counter()
        stats = cell_stats(ds)
        problems = cell_problems(ds)
        computed = time.perf_counter()
        print(f"load_runs            {loaded - start:6.2f} s  ({len(ds.trials)} trials)")
        print(
            f"cell_stats+problems  {computed - loaded:6.2f} s  ({len(stats)} cells, "
            f"{len(problems)} problem cells)"
        )
        try:
            from matrix.report.html import write_report
        except ImportError as exc:
            print(f"write_report         skipped: {exc}")
            print(f"total                {computed - start:6.2f} s  (target <= 5 s)")
            return
        path = write_report(ds, stats, problems, Path(tmp) / "report", "benchmark")
        done = time.perf_counter()
        print(
            f"write_report         {done - computed:6.2f} s  "
            f"({path.stat().st_size / 1e6:.2f} MB HTML)"
        )
        print(f"total                {done - start:6.2f} s  (target <= 5 s)")
        print("load average         {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
