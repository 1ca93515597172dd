"""One harness of a sweep: launched, started, watched, stopped cleanly on Ctrl-C, released.

The harness's own output (TensorFlow is noisy) goes to `<run_dir>/<env_id>.log`, never to the
terminal, which belongs to the progress view; when the harness fails, the error names the log.
The log and the start gate are opened without following a name planted in their place
(`open_regular`), though no container sees the run folder itself.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.records import open_regular
from matrix.execute.backends import Backend, Ended, Harness, Prepared
from matrix.execute.matrix_run import MatrixRun
from matrix.execute.progress import EnvProgress
from matrix.results.reader import JsonlTail, read_jsonl, short_reason

POLL_S = 0.1  # how often the records file is re-read and host calls answered: both cheap
STOP_GRACE_S = 15.0  # time the harness gets to finish its current record after Ctrl-C


@dataclass(frozen=True)
class RunOutcome:
    """How the harness ended and where its files are."""

    records_file: Path
    log_file: Path
    returncode: int
    interrupted: bool
    seconds: float  # from its gate opening to its end (released: the container removed)
    ended: Ended = field(default_factory=Ended)


class HarnessRun:
    """One harness in the steps a sweep interleaves with its neighbours' own.

    Created, it is launched and held at its start gate; `start` opens the gate; `poll` serves
    it and follows its records until it writes `done` (or exits); `finish` waits for the exit
    and releases it (a container is removed). Once its work is over the sweep launches the next
    environment's harness, so the engine starts the next container while this one is torn
    down; the next gate opens only after `finish`. Leaving the `with` block releases the
    harness whatever happened.
    """

    def __init__(
        self, matrix_run: MatrixRun, backend: Backend, ready: Prepared, bar: EnvProgress
    ) -> None:
        self.env = ready.env
        self.env_id = env_id = ready.env.id
        matrix_run.run_dir.mkdir(parents=True, exist_ok=True)
        self.records_file = matrix_run.records_file(env_id)
        self.log_file = matrix_run.run_dir / f"{env_id}.log"
        self._bar = bar
        self._tail = JsonlTail(self.records_file)
        self._returncode: int | None = None
        self._interrupted = False
        self._over = False
        self._opened = time.monotonic()
        self._gate = matrix_run.start_gate(env_id)
        self._gate.parent.mkdir(exist_ok=True)
        self._gate.unlink(missing_ok=True)  # left by an interrupted run that is being resumed
        self._held = contextlib.ExitStack()
        self._held.callback(_remove_gate, self._gate)
        try:
            log_fd = open_regular(str(self.log_file), os.O_WRONLY | os.O_CREAT, truncate=True)
            log = self._held.enter_context(os.fdopen(log_fd, "wb"))
            self.harness: Harness = self._held.enter_context(backend.launch(matrix_run, ready, log))
        except BaseException:
            self._held.close()
            raise

    def __enter__(self) -> HarnessRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._held.close()  # a second close does nothing: `finish` may have released it already

    @property
    def over(self) -> bool:
        """Its work is over (`poll` saw `done`, or the exit): it is ending by itself."""
        return self._over

    def start(self) -> None:
        """Open the gate: the harness begins."""
        self._opened = time.monotonic()
        self._bar.start()
        os.close(open_regular(str(self._gate), os.O_WRONLY | os.O_CREAT | os.O_EXCL))

    def poll(self) -> bool:
        """Serve the harness and show its new records; whether its work is over (it wrote
        `done`, or exited). It may still be exiting: `finish` waits for that."""
        if self._over:
            return True
        self.harness.serve()
        records = self._tail.read_new()
        self._bar.update(records)
        if self._returncode is None:
            self._returncode = self.harness.poll()
        self._over = self._returncode is not None or any(
            record.get("kind") == "done" for record in records
        )
        return self._over

    def interrupted(self, returncode: int) -> None:
        """Mark it stopped by Ctrl-C (see `stop`), with its exit code."""
        self._interrupted, self._returncode, self._over = True, returncode, True
        self._bar.update(self._tail.read_new())

    def finish(self) -> RunOutcome:
        """Wait for the harness to exit, then release it."""
        with self:
            if self._returncode is None:
                self._returncode = self.harness.wait()
            self._bar.update(self._tail.read_new())
            ended = self.harness.ended(self._returncode)
        return RunOutcome(
            self.records_file,
            self.log_file,
            self._returncode,
            self._interrupted,
            round(time.monotonic() - self._opened, 3),
            ended,
        )


def wait_any(runs: Sequence[HarnessRun]) -> list[HarnessRun]:
    """The runs whose work is over, after waiting up to POLL_S for the first to exit.

    Waiting (not sleeping, then polling) returns the moment a lone harness exits: a sleep would
    add half a poll interval per environment to the sweep, for nothing.
    """
    with contextlib.suppress(subprocess.TimeoutExpired):
        runs[0].harness.wait(timeout=POLL_S)
    return [run for run in runs if run.poll()]


def stop(runs: Sequence[HarnessRun]) -> None:
    """Let each harness finish the record it is writing, then make sure it is gone.

    First pass the interrupt on (no harness is in our process group: only `matrix` got the
    Ctrl-C or SIGTERM), then wait; then terminate, then kill. Another Ctrl-C skips straight
    to the next step.
    """
    running = {run: run.harness for run in runs}
    for step in ("interrupt", "terminate", "kill"):
        deadline = time.monotonic() + STOP_GRACE_S
        for harness in running.values():
            getattr(harness, step)()
        for run, harness in list(running.items()):
            try:
                code = harness.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue
            except KeyboardInterrupt:
                break
            run.interrupted(code)
            del running[run]
        if not running:
            return
    for run, harness in running.items():
        run.interrupted(harness.wait())


def failure_reason(outcome: RunOutcome) -> str:
    """Why a harness failed, in one line: its exit code, the cause it recorded itself (the
    last line of the stderr tail it kept: `… | ImportError: …`) or else its log's last line,
    and where its log is."""
    causes = [
        record.get("reason")
        for record in read_jsonl(outcome.records_file).records
        if record.get("kind") == "failure" and record.get("scope") == "environment"
    ]
    cause = str(causes[-1]).split(" | ")[-1] if causes else _last_line(outcome.log_file)
    said = f": {short_reason(cause.strip(), 200)}" if cause.strip() else ""
    return f"the harness exited with code {outcome.returncode}{said}; full log: {outcome.log_file}"


def _last_line(log_file: Path) -> str:
    try:
        with log_file.open(encoding="utf-8", errors="replace") as handle:
            return next(iter(deque(handle, maxlen=1)), "")
    except OSError:
        return ""


def _remove_gate(gate: Path) -> None:
    """The gate and its folder: nothing of the handshake stays in the run folder."""
    gate.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        gate.parent.rmdir()
