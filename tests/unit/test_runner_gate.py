"""The start gate: a launched harness waits, alive, until the sweep opens its gate.

That is what lets the next environment's harness start while the last one is torn down: held
at its gate it has written no record — not even its plan — and once the gate opens it runs to
the end as usual. The harness here is the fake one (tests/unit/fake_backend.py), which waits at
its gate with the real harness's own `wait_for_start`.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from matrix.execute.backends import Prepared
from matrix.execute.harness_run import HarnessRun, wait_any
from matrix.execute.matrix_run import MatrixRun
from matrix.execute.progress import SweepProgress
from matrix.plan.config import load_config
from matrix.results.reader import is_complete, read_jsonl
from tests.unit.fake_backend import FakeBackend


def test_a_launched_harness_waits_at_its_gate_until_it_opens(tmp_path: Path) -> None:
    config = load_config(None, {"results_dir": str(tmp_path), "models": "dense-10k"})
    matrix_run = MatrixRun(config=config, run_id="gate-test")
    backend = FakeBackend({})
    (env,), _ = backend.environments(config)
    with SweepProgress(Console(quiet=True)) as progress:
        run = HarnessRun(matrix_run, backend, Prepared(env), progress.bar(env.id))
        with run:
            time.sleep(1.5)  # far longer than the harness needs to reach its gate
            assert run.harness.poll() is None  # alive, waiting
            assert not matrix_run.records_file(env.id).exists()
            run.start()
            while not wait_any([run]):
                pass
            outcome = run.finish()
    assert outcome.returncode == 0, outcome.log_file.read_text()
    assert is_complete(read_jsonl(matrix_run.records_file(env.id)).records)
    assert not matrix_run.start_gate(env.id).exists()  # removed: nothing left in the run
