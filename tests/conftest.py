"""Shared helpers for the orchestrator tests: records as docs/records.md defines them.

Shared by tests/unit and tests/integration.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.catalog import SCHEMA_VERSION

ENV_ID = "local-tf2.21-py3.11-cpu"
RUN_ID = "20261127-183000-ab12"


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C as a user's terminal delivers it. A test run started in the background of a
    non-interactive shell (`cmd &`, `nohup`) begins with SIGINT ignored, which Python keeps and
    every process a test starts inherits: each Ctrl-C test would then wait forever."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def make_record(kind: str, **fields: Any) -> dict[str, Any]:
    """A record with the fields every record carries (docs/records.md), plus `fields`."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "run_id": RUN_ID,
        "env_id": ENV_ID,
        "time": "2026-11-27T18:30:00+00:00",
    }
    if kind == "trial":
        record.update(phase="measure", process="fresh", status="ok")
        record["cell_id"] = "/".join(
            [ENV_ID, fields["model"], fields["format"], fields["cache_mode"]]
        )
    record.update(fields)
    return record


def write_jsonl(path: Path, records: list[dict[str, Any]], tail: str = "") -> Path:
    """Write records one per line, then `tail` verbatim (e.g. a truncated line)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")
    return path


@pytest.fixture
def record() -> Callable[..., dict[str, Any]]:
    return make_record


@pytest.fixture
def jsonl() -> Callable[..., Path]:
    return write_jsonl


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so the repository's own matrix.yaml is not picked up."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---- a fake sweep: records of environments that cannot run here (GPU, many TF versions) ------

FAKE_LOAD_S = {"h5": 0.2, "savedmodel": 0.8, "tflite": 0.002}
FAKE_JITTER = (0.97, 1.0, 1.03, 0.99, 1.01)  # trial i's figures are the cell's × this


def fake_environment(
    tf: str, python: str = "3.11", device: str = "cpu", keras: str = "default"
) -> dict[str, Any]:
    """One environment of a fake sweep, named as the planner names it (tf2.16-py3.11-gpu)."""
    minor = ".".join(tf.split(".")[:2])
    keras3 = tuple(map(int, minor.split("."))) >= (2, 16)
    impl = "tf-keras" if keras == "legacy" else "keras3" if keras3 else "keras2"
    suffix = "-tfkeras" if keras == "legacy" else ""
    return {
        "env_id": f"tf{minor}-py{python}-{device}{suffix}",
        "tensorflow": tf,
        "python": f"{python}.2",
        "keras_impl": impl,
        "gpus": ["Fake GPU 0"] if device == "gpu" else [],
    }


def fake_sweep_records(
    environments: list[dict[str, Any]],
    seconds: Callable[[dict[str, Any], str, str], float] = lambda env, fmt, field: (
        FAKE_LOAD_S[fmt] if field == "load_s" else 1.0 if field == "import_s" else 0.01
    ),
    formats: tuple[str, ...] = ("h5", "savedmodel", "tflite"),
    models: tuple[str, ...] = ("dense-10k",),
    cache_modes: tuple[str, ...] = ("warm",),
    repeats: int = 5,
    run_id: str = RUN_ID,
) -> list[dict[str, Any]]:
    """The records a sweep over `environments` (`fake_environment`) would write: a named fake
    for what cannot run here (a GPU, nine TF images), never a stand-in for a real sweep's test.

    Every (model, format, cache mode) gets `repeats` ok trials whose load, import and first
    inference are `seconds(env, format, field)` times FAKE_JITTER (a small fixed spread, so
    tests have variance to judge); first prediction and cold start are derived as the harness
    derives them.
    """
    records = []
    for env in environments:
        common = {"run_id": run_id, "env_id": env["env_id"]}
        fields = {"cpu_model": "Fake CPU", **{k: v for k, v in env.items() if k != "env_id"}}
        records.append(make_record("environment", **common, **fields))
        for model in models:
            for fmt in formats:
                records.append(
                    make_record(
                        "artifact", **common, model=model, format=fmt, status="ok", params=9920
                    )
                )
                for mode in cache_modes:
                    for i in range(repeats):
                        jitter = FAKE_JITTER[i % len(FAKE_JITTER)]
                        load, imported, first_call = (
                            seconds(env, fmt, field) * jitter
                            for field in ("load_s", "import_s", "first_inference_s")
                        )
                        trial = make_record(
                            "trial",
                            model=model,
                            format=fmt,
                            cache_mode=mode,
                            load_s=load,
                            import_s=imported,
                            device_init_s=0.0,
                            first_inference_s=first_call,
                            first_prediction_s=load + first_call,
                            cold_start_s=imported + load + first_call,
                            eviction="read",
                        )
                        trial.update(common, cell_id=f"{env['env_id']}/{model}/{fmt}/{mode}")
                        records.append(trial)
    return records


@pytest.fixture
def fake_sweep() -> Callable[..., list[dict[str, Any]]]:
    return fake_sweep_records


FAKE_GPU = "Fake GPU 0 (CPU records rewritten)"


def fake_gpu_twin(run_dir: Path, out: Path, env_ids: list[str], speedup: dict[str, float]) -> Path:
    """A named fake beside real data: the CPU environments `env_ids` of a real run rewritten as
    their GPU twins would record them (`-gpu` ids, FAKE_GPU listed), each format's load divided
    by `speedup[format]` (1 if absent). No GPU runs here; the report's CPU vs GPU view reads
    exactly these fields."""
    out.mkdir(parents=True, exist_ok=True)
    for env_id in env_ids:
        gpu_id = env_id.replace("-cpu", "-gpu")
        lines = (run_dir / f"{env_id}.jsonl").read_text(encoding="utf-8").splitlines()
        twin = []
        for record in map(json.loads, lines):
            record.update(run_id=out.name, env_id=gpu_id)
            if "cell_id" in record:
                record["cell_id"] = record["cell_id"].replace(env_id, gpu_id, 1)
            if record["kind"] == "environment":
                record["gpus"] = [FAKE_GPU]
            if record["kind"] == "trial" and record.get("load_s") is not None:
                record["load_s"] /= speedup.get(record["format"], 1.0)
                record["first_prediction_s"] = record["load_s"] + record["first_inference_s"]
                record["cold_start_s"] = (
                    record["import_s"] + (record.get("device_init_s") or 0.0)
                ) + record["first_prediction_s"]
            twin.append(record)
        write_jsonl(out / f"{gpu_id}.jsonl", twin)
    return out
