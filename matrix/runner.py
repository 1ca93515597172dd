"""Run one plan on one backend: start the harness, show progress, stop it cleanly on Ctrl-C.

The harness's own output (TensorFlow is noisy) goes to `<run_dir>/<env_id>.log`, never to the
terminal, which belongs to the progress bar; when the harness fails, the CLI shows the log's
last lines from there.
"""

from __future__ import annotations

import subprocess
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from matrix.backends import Backend, RunningHarness
from matrix.plan import RunPlan
from matrix.progress import RunProgress
from matrix.records import JsonlTail

POLL_S = 0.1  # how often the records file is re-read and host calls answered: both cheap
STOP_GRACE_S = 15.0  # time the harness gets to finish its current record after Ctrl-C


@dataclass(frozen=True)
class RunOutcome:
    """How the harness ended and where its files are."""

    records_file: Path
    log_file: Path
    returncode: int
    interrupted: bool


def execute(plan: RunPlan, backend: Backend, env_id: str, console: Console,
            meanwhile: Callable[[], object] | None = None) -> RunOutcome:
    """Run the harness to the end (or to Ctrl-C), feeding its records to the progress view.

    `meanwhile` is work of ours done while the harness starts (an interpreter, a container):
    the harness waits at its start gate until it is over, so that work overlaps the start-up
    but never anything the harness measures. It runs in a thread from before the launch, as
    the launch itself is mostly waiting on the engine (create, start): the GIL is free then.
    """
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    records_file = plan.run_dir / f"{env_id}.jsonl"
    log_file = plan.run_dir / f"{env_id}.log"
    gate = plan.start_gate(env_id)
    gate.unlink(missing_ok=True)  # left by an interrupted run that is being resumed
    tail = JsonlTail(records_file)
    interrupted = False
    ours = threading.Thread(target=meanwhile or (lambda: None), daemon=True)
    ours.start()
    try:
        with log_file.open("wb") as log, RunProgress(console) as progress, \
                backend.launch(plan, env_id, log) as harness:
            try:
                ours.join()
                gate.touch()
                returncode = _watch(harness, lambda: (backend.serve(plan, env_id),
                                                      progress.update(tail.read_new())))
            except KeyboardInterrupt:
                interrupted = True
                returncode = _stop(harness)
            progress.update(tail.read_new())
    finally:
        gate.unlink(missing_ok=True)
    return RunOutcome(records_file, log_file, returncode, interrupted)


def _watch(harness: RunningHarness, every_poll: Callable[[], object]) -> int:
    """Wait for the harness's exit code, calling `every_poll` each POLL_S meanwhile.

    Waiting (not sleeping, then polling) returns the moment the harness exits: a sleep would
    add half a poll interval per environment to the sweep, for nothing.
    """
    while True:
        try:
            return harness.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            every_poll()


def _stop(harness: RunningHarness) -> int:
    """Let the harness finish the record it is writing, then make sure it is gone.

    First pass the interrupt on (a local harness shares our process group and already has it;
    a container does not), then wait; then terminate, then kill. Another Ctrl-C skips straight
    to the next step.
    """
    for escalate in (harness.interrupt, harness.terminate, harness.kill):
        escalate()
        try:
            return harness.wait(timeout=STOP_GRACE_S)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            continue
    return harness.wait()


def log_tail(log_file: Path, lines: int = 20) -> list[str]:
    """The last lines of the harness log, for the message when the harness fails."""
    try:
        with log_file.open(encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
    except OSError:
        return []
