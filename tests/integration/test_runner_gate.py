"""The start gate for real: our own start-up work overlaps the harness's start, never its run.

A real harness (this interpreter's TensorFlow, the local backend) is launched by `execute`;
while the orchestrator's `meanwhile` work runs, the harness process is alive but has written
no record — not even its plan — and once the gate opens it runs to the end as usual.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from matrix.execute.backends.local import LocalBackend
from matrix.execute.harness_run import execute
from matrix.execute.run_plan import RunPlan
from matrix.plan.config import load_config
from matrix.results.reader import is_complete, read_jsonl


def test_the_harness_waits_at_its_gate_while_the_orchestrator_works(tmp_path: Path) -> None:
    config = load_config(
        None,
        {
            "results_dir": str(tmp_path),
            "models": "dense-10k",
            "formats": "h5",
            "cache": "warm",
            "repeats": 1,
            "warmup": 0,
        },
    )
    plan = RunPlan(config=config, run_id="gate-test")
    backend = LocalBackend()
    records = plan.run_dir / f"{backend.env_id()}.jsonl"
    seen: dict[str, object] = {}

    def meanwhile() -> None:
        time.sleep(1.5)  # far longer than the harness needs to reach its gate
        seen["records_written"] = records.exists()
        seen["gate_open"] = plan.start_gate(backend.env_id()).exists()

    outcome = execute(plan, backend, backend.env_id(), Console(quiet=True), meanwhile)
    assert seen == {"records_written": False, "gate_open": False}
    assert outcome.returncode == 0, outcome.log_file.read_text()
    assert is_complete(read_jsonl(records).records)
    assert not plan.start_gate(backend.env_id()).exists()  # removed: nothing left in the run
