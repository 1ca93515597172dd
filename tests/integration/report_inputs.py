"""Inputs of the report tests: one real harness run, and copies of its records rewritten.

The harness runs once per test session (its records are cached under pytest's session temp
folder), since it takes about a minute. A second run, a second environment and hostile names are
made by rewriting copies of those real records: a second TensorFlow image or a user's model file
named `<script>…` cannot be had here, but the records they would produce have exactly this shape.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from matrix.report.history import series_frame
from matrix.report.html import write_report
from matrix.results.dataset import Dataset, cell_problems, cell_stats, load_runs
from tests.integration.harness_helpers import ROOT

ENV_ID = "local-test"
MODEL = "dense-10k"
SCRIPT_NAME = "<script>alert(1)</script>"
IMG_NAME = "<img src=x onerror=window.__xss=1>"
HOSTILE_REASON = "</script><script>window.__xss=2</script> in stderr"
SLOWDOWN = 1.3
Record = dict

HARNESS_ARGS = [
    "--models",
    MODEL,
    "--formats",
    "h5,tflite",
    "--cache",
    "warm,cold-model",
    "--repeats",
    "3",
    "--warmup",
    "0",
]


def real_run(base: Path, run_id: str = "rep-a") -> Path:
    """The folder of one real harness run (made on first use, then reused)."""
    out = base / run_id
    records = out / f"{ENV_ID}.jsonl"
    if records.exists() and '"kind": "done"' in records.read_text():
        return out
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "run",
        "--out",
        str(out),
        "--run-id",
        run_id,
        "--env-id",
        ENV_ID,
        *HARNESS_ARGS,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _read(path: Path) -> list[Record]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write(path: Path, records: list[Record]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _later(iso: str, days: int) -> str:
    return (datetime.fromisoformat(iso) + timedelta(days=days)).isoformat()


def _renamed(records: list[Record], model: str) -> list[Record]:
    """The artifact and trial records of the run again, under another model name."""
    out = []
    for r in records:
        if r["kind"] in ("artifact", "trial"):
            cell = r["cell_id"].split("/")
            out.append({**r, "model": model, "cell_id": "/".join([cell[0], model, *cell[2:]])})
    return out


def _rewritten(records: list[Record], change: Callable[[Record], Record]) -> list[Record]:
    return [change(dict(r)) for r in records]


def derived_run(real: Path, out: Path) -> Path:
    """A later run: the same environment 30 % slower, with hostile model names and a second
    environment that uses tf-keras (so the pair view must call it not comparable)."""
    records = _read(real / f"{ENV_ID}.jsonl")

    def next_night(r: Record) -> Record:
        r["run_id"] = out.name
        r["time"] = _later(r["time"], 1)
        if r["kind"] == "environment":
            r["started"] = _later(r["started"], 1)
        if r["kind"] == "trial" and r.get("load_s") is not None:
            r["load_s"] *= SLOWDOWN
        return r

    slower = _rewritten(records, next_night)
    body, done = slower[:-1], slower[-1:]
    _write(
        out / f"{ENV_ID}.jsonl",
        body + _renamed(slower, SCRIPT_NAME) + _renamed(slower, IMG_NAME) + done,
    )

    def tf_keras(r: Record) -> Record:
        r["env_id"] = f"{ENV_ID}-tfkeras"
        r["cell_id"] = r.get("cell_id", "").replace(ENV_ID, r["env_id"], 1)
        if r["kind"] == "environment":
            r["keras_impl"] = "tf-keras"
        return r

    other = _rewritten(slower, tf_keras)
    common = {k: other[0][k] for k in ("schema_version", "run_id", "env_id", "time")}
    failure = {
        **common,
        "kind": "failure",
        "scope": "model",
        "model": SCRIPT_NAME,
        "reason": HOSTILE_REASON,
    }
    _write(out / f"{ENV_ID}-tfkeras.jsonl", [*other[:-1], failure, *other[-1:]])
    return out


def sweep_run(real: Path, out: Path, envs: int, models: int) -> Path:
    """A sweep of `envs` environments × `models` models, made of the real run's records: each
    environment's file is the real one under another env id, its model under `models` names,
    and every `cold-model` trial invalid, so half the cells are problem cells. (A sweep of
    thousands of cells takes days to measure; its records have exactly this shape.)"""
    records = _read(real / f"{ENV_ID}.jsonl")
    head = [r for r in records if r["kind"] not in ("artifact", "trial", "done")]
    body = [r for m in range(models) for r in _renamed(records, f"model-{m:02d}")]
    done = [r for r in records if r["kind"] == "done"]
    for e in range(envs):
        env_id = f"sweep-{e:02d}"

        def moved(r: Record, env_id: str = env_id) -> Record:
            r.update(run_id=out.name, env_id=env_id)
            if "cell_id" in r:
                r["cell_id"] = r["cell_id"].replace(ENV_ID, env_id, 1)
            if r["kind"] == "trial" and r["cache_mode"] == "cold-model":
                r.update(status="invalid", reason="page cache not evicted")
            return r

        _write(out / f"{env_id}.jsonl", _rewritten([*head, *body, *done], moved))
    return out


HYPERVISOR = "KVM"
SLOW_FIRST_CALL_S = 5.0  # added to TFLite's first inference: it still loads fastest
FAILED_REL_ERR = 0.42
REUSED_LOADS = (0.9, 0.3, 0.2, 0.1)  # the article's method: the first load, then warm ones


def verdict_run(source: Path, out: Path) -> Path:
    """A run whose verdicts the report must show, made of `source`'s records (any schema)
    rewritten with the figures schema 2 records: TFLite loads fastest but its first call is
    slow, so h5 predicts first; TFLite fails parity and h5's reference is not informative; the
    environment is a VM whose I/O floor reads at 5 GB/s; and h5 has reused-process loads."""
    (path,) = source.glob("*.jsonl")

    def verdicts(r: Record) -> Record:
        r.update(schema_version=2, run_id=out.name)
        if r["kind"] == "environment":
            r["hypervisor"] = HYPERVISOR
        if r["kind"] == "artifact" and r.get("bytes"):
            r["io_floor_s"] = r["bytes"] / 5e9
        if r["kind"] == "trial" and r.get("load_s") is not None:
            tflite = r["format"] == "tflite"
            r["first_inference_s"] += SLOW_FIRST_CALL_S if tflite else 0.0
            r["first_prediction_s"] = r["load_s"] + r["first_inference_s"]
            r["device_init_s"] = 0.0 if tflite else 0.05
            r["cold_start_s"] = r["import_s"] + r["device_init_s"] + r["first_prediction_s"]
            r["inference_call"] = "tflite invoke" if tflite else "predict_on_batch"
            r.update(
                parity_status="fail" if tflite else "not-informative",
                parity_rel_err=FAILED_REL_ERR if tflite else 0.0,
                parity_tolerance=1e-3,
                load_read_bytes=0,
                load_major_faults=0,
            )
        return r

    records = _rewritten(_read(path), verdicts)
    warm_h5 = next(
        r
        for r in records
        if r["kind"] == "trial"
        and r["format"] == "h5"
        and r["cache_mode"] == "warm"
        and r["status"] == "ok"
    )
    reused = [
        {
            **warm_h5,
            "cell_id": warm_h5["cell_id"].rsplit("/", 1)[0] + "/reused",
            "process": "reused",
            "load_index": i,
            "load_s": load,
            "first_prediction_s": load + warm_h5["first_inference_s"],
            "cold_start_s": None if i else warm_h5["cold_start_s"],
        }
        for i, load in enumerate(REUSED_LOADS)
    ]
    _write(out / path.name, [*records[:-1], *reused, records[-1]])
    return out


@dataclass
class Inputs:
    """What `matrix report` hands to `write_report` for the real run and its derived run."""

    ds: Dataset
    stats: pd.DataFrame
    problems: pd.DataFrame
    history: pd.DataFrame


def report_inputs(base: Path) -> Inputs:
    """The real run (made once under `base`) merged with its derived run."""
    real = real_run(base)
    derived = base / "rep-b"
    if not derived.exists():
        derived_run(real, derived)
    ds = load_runs([real, derived])
    stats = cell_stats(ds)
    return Inputs(ds, stats, cell_problems(ds), series_frame(ds))


def build_report(base: Path) -> Path:
    """The full report (with history) of `report_inputs(base)`, written once under `base`."""
    report = base / "report" / "index.html"
    if report.exists():
        return report
    got = report_inputs(base)
    return write_report(
        got.ds,
        got.stats,
        got.problems,
        report.parent,
        f"Report of {SCRIPT_NAME}",
        history=got.history,
    )
