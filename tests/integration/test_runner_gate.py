"""The start gate for real: a launched harness (this interpreter's TensorFlow, the local
backend) waits, alive, until the sweep opens its gate, having written no record — not even its
plan — and once the gate opens it runs to the end as usual.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from matrix.execute.backends import Prepared
from matrix.execute.backends.local import LocalBackend
from matrix.execute.harness_run import HarnessRun, wait_any
from matrix.execute.matrix_run import MatrixRun
from matrix.execute.progress import SweepProgress
from matrix.plan.config import load_config
from matrix.results.reader import is_complete, read_jsonl


def test_the_real_harness_waits_at_its_gate_until_it_opens(tmp_path: Path) -> None:
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
    matrix_run = MatrixRun(config=config, run_id="gate-test")
    backend = LocalBackend.create(config, tmp_path)
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
