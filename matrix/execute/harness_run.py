"""Run one plan on one backend: start the harness, show progress, stop it cleanly on Ctrl-C.

The harness's own output (TensorFlow is noisy) goes to `<run_dir>/<env_id>.log`, never to the
terminal, which belongs to the progress bar; when the harness fails, the CLI shows the log's
last lines from there. The log and the start gate are opened without following a name planted
in their place (`open_regular`), though no container sees the run folder itself.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from harness.records import open_regular
from matrix.execute.backends import Backend, RunningHarness
from matrix.execute.progress import RunProgress
from matrix.execute.run_plan import RunPlan
from matrix.results.reader import JsonlTail

POLL_S = 0.1  # how often the records file is re-read and host calls answered: both cheap
STOP_GRACE_S = 15.0  # time the harness gets to finish its current record after Ctrl-C


@dataclass(frozen=True)
class RunOutcome:
    """How the harness ended and where its files are."""

    records_file: Path
    log_file: Path
    returncode: int
    interrupted: bool
    seconds: float  # from its gate opening to its end (the container removed)


class HarnessRun:
    """One harness in the three steps a sweep interleaves with its neighbours' own.

    Created, it is launched and held at its start gate; `measure` opens the gate and follows
    the records until the harness writes `done` (or exits); `finish` waits for the exit and
    releases it (a container is removed). Between `measure` and `finish` its work is over, so
    the sweep launches the next environment's harness then: the engine starts the next
    container while this one is torn down, and the next gate opens only after `finish`.
    Leaving the `with` block releases the harness whatever happened.
    """

    def __init__(self, plan: RunPlan, backend: Backend, env_id: str, console: Console) -> None:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        self.records_file = plan.run_dir / f"{env_id}.jsonl"
        self.log_file = plan.run_dir / f"{env_id}.log"
        self._serve = lambda: backend.serve(plan, env_id)
        self._progress = lambda: RunProgress(console, env_id)
        self._tail = JsonlTail(self.records_file)
        self._returncode: int | None = None
        self._interrupted = False
        self._opened = time.monotonic()
        self._gate = plan.start_gate(env_id)
        self._gate.parent.mkdir(exist_ok=True)
        self._gate.unlink(missing_ok=True)  # left by an interrupted run that is being resumed
        self._held = contextlib.ExitStack()
        self._held.callback(_remove_gate, self._gate)
        try:
            log_fd = open_regular(str(self.log_file), os.O_WRONLY | os.O_CREAT, truncate=True)
            log = self._held.enter_context(os.fdopen(log_fd, "wb"))
            self._harness = self._held.enter_context(backend.launch(plan, env_id, log))
        except BaseException:
            self._held.close()
            raise

    def __enter__(self) -> HarnessRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._held.close()  # a second close does nothing: `finish` may have released it already

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def measure(self) -> None:
        """Open the gate; show progress until the `done` record (or the exit, or Ctrl-C)."""
        with self._progress() as progress:
            self._opened = time.monotonic()
            os.close(open_regular(str(self._gate), os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            try:
                self._returncode = _watch(self._harness, lambda: self._poll(progress))
            except KeyboardInterrupt:
                self._interrupted = True
                self._returncode = _stop(self._harness)
            progress.update(self._tail.read_new())

    def _poll(self, progress: RunProgress) -> bool:
        """Answer the harness's host calls, show its new records; whether it wrote `done`."""
        self._serve()
        records = self._tail.read_new()
        progress.update(records)
        return any(record.get("kind") == "done" for record in records)

    def finish(self) -> RunOutcome:
        """Wait for the harness to exit, then release it."""
        with self:
            if self._returncode is None:
                self._returncode = self._harness.wait()
        return RunOutcome(
            self.records_file,
            self.log_file,
            self._returncode,
            self._interrupted,
            round(time.monotonic() - self._opened, 3),
        )


def execute(
    plan: RunPlan,
    backend: Backend,
    env_id: str,
    console: Console,
    meanwhile: Callable[[], object] | None = None,
) -> RunOutcome:
    """Run one harness to the end (or to Ctrl-C), feeding its records to the progress view.

    `meanwhile` is work of ours done while the harness starts (an interpreter, a container):
    the harness waits at its start gate until it is over, so that work overlaps the start-up
    but never anything the harness measures. It runs in a thread from before the launch, as
    the launch itself is mostly waiting on the engine (create, start): the GIL is free then.
    """
    ours = threading.Thread(target=meanwhile or (lambda: None), daemon=True)
    ours.start()
    with HarnessRun(plan, backend, env_id, console) as run:
        ours.join()
        run.measure()
        return run.finish()


def _watch(harness: RunningHarness, every_poll: Callable[[], bool]) -> int | None:
    """Wait for the harness's exit code, calling `every_poll` each POLL_S meanwhile; None
    as soon as `every_poll` says the harness's work is over (it is still exiting).

    Waiting (not sleeping, then polling) returns the moment the harness exits: a sleep would
    add half a poll interval per environment to the sweep, for nothing.
    """
    while True:
        try:
            return harness.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            if every_poll():
                return None


def _stop(harness: RunningHarness) -> int:
    """Let the harness finish the record it is writing, then make sure it is gone.

    First pass the interrupt on (no harness is in our process group: only `matrix` got the
    Ctrl-C or SIGTERM), then wait; then terminate, then kill. Another Ctrl-C skips straight
    to the next step.
    """
    for escalate in (harness.interrupt, harness.terminate, harness.kill):
        escalate()
        try:
            return harness.wait(timeout=STOP_GRACE_S)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            continue
    return harness.wait()


def _remove_gate(gate: Path) -> None:
    """The gate and its folder: nothing of the handshake stays in the run folder."""
    gate.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        gate.parent.rmdir()


def log_tail(log_file: Path, lines: int = 20) -> list[str]:
    """The last lines of the harness log, for the message when the harness fails."""
    try:
        with log_file.open(encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
    except OSError:
        return []
