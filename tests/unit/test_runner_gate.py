"""The start gate: our own start-up work overlaps the harness's start, never its run.

A harness is launched by the sweep; while the orchestrator's `meanwhile` work runs, the harness
process is alive but has written no record — not even its plan — and once the gate opens it runs
to the end as usual. The harness here is the fake one (tests/unit/fake_backend.py), which waits
at its gate with the real harness's own `wait_for_start`.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from matrix.execute.run_plan import RunPlan
from matrix.execute.sweep import Sweep
from matrix.plan.config import load_config
from matrix.results.reader import is_complete, read_jsonl
from tests.unit.fake_backend import FakeBackend


def test_the_harness_waits_at_its_gate_while_the_orchestrator_works(tmp_path: Path) -> None:
    config = load_config(None, {"results_dir": str(tmp_path), "models": "dense-10k"})
    plan = RunPlan(config=config, run_id="gate-test")
    backend = FakeBackend({})
    (env,), _ = backend.plan(config)
    seen: dict[str, object] = {}

    def meanwhile() -> None:
        time.sleep(1.5)  # far longer than the harness needs to reach its gate
        seen["launched"] = backend.events == [f"launched {env.id}"]
        seen["records_written"] = plan.records_file(env.id).exists()
        seen["gate_open"] = plan.start_gate(env.id).exists()

    (outcome,) = Sweep(plan, backend, [env], [], Console(quiet=True), meanwhile).run()
    assert seen == {"launched": True, "records_written": False, "gate_open": False}
    assert outcome.status == "ok", (plan.run_dir / f"{env.id}.log").read_text()
    assert is_complete(read_jsonl(plan.records_file(env.id)).records)
    assert not plan.start_gate(env.id).exists()  # removed: nothing left in the run
