"""A sweep over environments: make each one, run the harness in it, record; for every backend.

One failing build or harness is recorded (a `failure` record in that environment's records
file) and the sweep goes on; the manifest is rewritten after every environment, so an
interrupted sweep still says what it finished and `--resume` can skip it. On one machine
environments run one after another, never side by side: parallel trials would time each other.
Only their edges overlap, where nothing is measured: once a harness has written its `done`
record, the next environment's harness is launched (held at its start gate) while the finished
one is torn down, and its gate opens when that one is gone. A backend with more measurement
slots (machines of a cluster) keeps that many environments running at once, each on its own.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from harness.envinfo import machine
from harness.records import RecordWriter, dump_json, utc_now
from matrix.errors import EnvironmentFailure
from matrix.execute.backends import Backend
from matrix.execute.harness_run import HarnessRun, RunOutcome, failure_reason, stop, wait_any
from matrix.execute.matrix_run import MatrixRun
from matrix.execute.progress import SweepProgress
from matrix.execute.stopping import set_aside
from matrix.plan.environments import Environment, Skipped
from matrix.results.reader import MANIFEST

FINISHED = ("ok", "resumed")  # manifest outcomes `--resume` skips
FAILED = ("build-failed", "run-failed")  # outcomes of environments that measured nothing


@dataclass
class EnvOutcome:
    """What happened to one environment, as the manifest lists it."""

    env_id: str
    status: str  # ok | build-failed | run-failed | interrupted | resumed
    ref: str = ""  # the image tag (docker) or the virtual environment's folder (venv)
    built: bool = False  # made for this run, not found by content
    build_s: float | None = None
    run_s: float | None = None  # from its harness's start gate opening to its end (released)
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # the backend's own, e.g. its node

    def to_json(self) -> dict[str, Any]:
        """The manifest's outcome object (docs/records.md): the backend's details beside the
        common fields, what was made under the keys `image` and `image_built`."""
        common = asdict(self)
        common["image"], common["image_built"] = common.pop("ref"), common.pop("built")
        return {**common.pop("details"), **common}


@dataclass
class Sweep:
    """Everything one `matrix run` does after planning, whichever the backend."""

    matrix_run: MatrixRun
    backend: Backend
    environments: list[Environment]
    skipped: list[Skipped]
    console: Console
    outcomes: list[EnvOutcome] = field(default_factory=list)
    started: str = field(default_factory=utc_now)
    _finished: set[str] = field(init=False, repr=False)  # by the manifest of an earlier attempt

    def __post_init__(self) -> None:
        self._finished = finished_before(self.matrix_run.run_dir)

    def run(self) -> list[EnvOutcome]:
        self.matrix_run.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_manifest(ended=None)
        running: dict[HarnessRun, EnvOutcome] = {}  # started, in the order they started
        try:
            with contextlib.ExitStack() as held, SweepProgress(self.console) as progress:
                waiting = deque(self.environments)
                try:
                    self._run(waiting, running, held, progress)
                except KeyboardInterrupt:  # stop what measures; `held` releases everything
                    stop([run for run in running if not run.over])
                    for run, outcome in running.items():  # over: ended by itself, as recorded
                        self._add(outcome, run.finish())
                    raise
        except KeyboardInterrupt:
            cleaned = self.backend.cleanup(self.matrix_run.run_id)
            left = f": {escape(cleaned)}" if cleaned else ""
            self.console.print(f"[yellow]interrupted[/]{left}; every completed record is kept")
            self._write_manifest(ended=None)
            raise
        self._write_manifest(ended=utc_now())
        return self.outcomes

    def _run(
        self,
        waiting: deque[Environment],
        running: dict[HarnessRun, EnvOutcome],
        held: contextlib.ExitStack,
        progress: SweepProgress,
    ) -> None:
        """Keep up to `backend.slots` harnesses measuring until every environment is done."""
        while len(running) < self.backend.slots:
            launched = self._launch_next(waiting, held, progress)
            if launched is None:
                break
            self._start(*launched, running)
        while running:
            for run in wait_any(list(running)):
                # the engine starts the next one while this one is torn down
                launched = self._launch_next(waiting, held, progress)
                outcome, ended = running.pop(run), run.finish()
                if ended.ended.retry:
                    self._retry(run.env, ended, waiting)
                else:
                    self._add(outcome, ended)
                if launched is None:  # the retry of the last one, if any
                    launched = self._launch_next(waiting, held, progress)
                if launched is not None:
                    self._start(*launched, running)

    def _start(
        self, run: HarnessRun, outcome: EnvOutcome, running: dict[HarnessRun, EnvOutcome]
    ) -> None:
        run.start()
        running[run] = outcome

    def _launch_next(
        self, waiting: deque[Environment], held: contextlib.ExitStack, progress: SweepProgress
    ) -> tuple[HarnessRun, EnvOutcome] | None:
        """The next environment's harness, launched and held at its gate; the ones before it
        that need no run (complete already, or not made) are recorded on the way."""
        while waiting:
            env = waiting.popleft()
            if env.id in self._finished:
                self.console.print(f"{escape(env.id)}: already complete in this run, skipped")
                self._add(EnvOutcome(env.id, "resumed"))
                continue
            set_aside(self.matrix_run.records_file(env.id))  # an interrupted attempt's: kept aside
            if self.backend.makes:
                self.console.print(f"[bold]{escape(env.id)}[/]: {self.backend.makes}")
            ready = self.backend.prepare(
                env, self.matrix_run.run_dir / f"{env.id}.build.log", self._build_line(env)
            )
            outcome = EnvOutcome(env.id, "ok", ready.ref, ready.built, ready.seconds)
            if ready.reason:
                self._fail(outcome, "build-failed", ready.reason)
                self._add(outcome)
                continue
            run = held.enter_context(
                HarnessRun(self.matrix_run, self.backend, ready, progress.bar(env.id))
            )
            return run, outcome
        return None

    def _add(self, outcome: EnvOutcome, ended: RunOutcome | None = None) -> None:
        """Record an environment's outcome (how its harness ended, if it ran), in the matrix's
        order: with several measuring at once they may end out of it."""
        if ended is not None:
            outcome.run_s = ended.seconds
            outcome.details.update(ended.ended.details)
            made = ended.ended.prepared  # made where it ran: what was made here was nothing
            if made is not None:
                outcome.ref, outcome.built, outcome.build_s = made.ref, made.built, made.seconds
            if ended.interrupted:
                outcome.status = "interrupted"
            elif made is not None and made.reason:
                self._fail(outcome, "build-failed", made.reason, ended.ended.recorded)
            elif ended.returncode != 0:
                reason = ended.ended.reason or failure_reason(ended)
                self._fail(outcome, "run-failed", reason, ended.ended.recorded)
        self.outcomes.append(outcome)
        order = [env.id for env in self.environments]
        self.outcomes.sort(key=lambda o: order.index(o.env_id))
        self._write_manifest(ended=None)

    def _retry(self, env: Environment, ended: RunOutcome, waiting: deque[Environment]) -> None:
        """The backend will run `env` once more (its machine was lost): this attempt's failure
        is recorded in its records, set aside as the next attempt starts, and the environment
        goes to the front of the queue. Its one outcome is the next attempt's."""
        reason = ended.ended.reason or failure_reason(ended)
        self._fail(EnvOutcome(env.id, "run-failed"), "run-failed", reason, ended.ended.recorded)
        waiting.appendleft(env)

    def _fail(self, outcome: EnvOutcome, status: str, reason: str, recorded: bool = False) -> None:
        """Record the failure where the report looks (the environment's records), then go on."""
        if not recorded:
            writer = RecordWriter(
                str(self.matrix_run.records_file(outcome.env_id)),
                self.matrix_run.run_id,
                outcome.env_id,
            )
            writer.write("failure", scope="environment", reason=reason)
            writer.close()
        self.console.print(f"[red]{escape(outcome.env_id)}[/]: {escape(reason)}")
        outcome.status, outcome.reason = status, reason

    def _build_line(self, env: Environment) -> Callable[[str], None]:
        def show(line: str) -> None:  # Docker's build steps, uv's own summary lines
            if line.startswith(("Step ", "Installed ", "Resolved ", "Prepared ")):
                self.console.print(f"  {escape(env.id)} {escape(line.strip())}")

        return show

    def _write_manifest(self, ended: str | None) -> None:
        dump_json(
            str(self.matrix_run.run_dir / MANIFEST),
            {
                "run_id": self.matrix_run.run_id,
                "started": self.started,
                "ended": ended,
                "matrix": json.loads(self.matrix_run.config.model_dump_json()),
                "backend": self.backend.name,
                "host": machine(),
                "environments": [asdict(env) | {"id": env.id} for env in self.environments],
                "skipped": [asdict(s) for s in self.skipped],
                "outcomes": [o.to_json() for o in self.outcomes],
            },
        )


def finished_before(run_dir: Path) -> set[str]:
    """The environments an earlier attempt at this run finished, by the host's own word.

    Only the manifest counts (`ok`, or `resumed` by an attempt before it): `matrix` writes it
    from each harness's exit status, where no container can reach. A `done` record does not: a
    container writes its records file, and could write `done` without having measured anything.
    """
    try:
        outcomes = json.loads((run_dir / MANIFEST).read_text()).get("outcomes")
    except (OSError, ValueError, AttributeError):  # none yet, unreadable, or not an object
        return set()
    if not isinstance(outcomes, list):
        return set()
    return {
        o["env_id"]
        for o in outcomes
        if isinstance(o, dict) and o.get("status") in FINISHED and isinstance(o.get("env_id"), str)
    }


def summary_line(outcomes: list[EnvOutcome]) -> str:
    """`3 environments: 2 ok, 1 build-failed (tf2.2-py3.8-cpu)`, for the end of a sweep."""
    failed = [outcome for outcome in outcomes if outcome.status in FAILED]
    counts = Counter(outcome.status for outcome in outcomes)
    parts = ", ".join(f"{n} {status}" for status, n in counts.items())
    names = f" ({', '.join(outcome.env_id for outcome in failed)})" if failed else ""
    noun = "environment" if len(outcomes) == 1 else "environments"
    return f"{len(outcomes)} {noun}: {parts}{names}"


def unrunnable(outcomes: list[EnvOutcome]) -> EnvironmentFailure | None:
    """When no environment of the run could be made or run its harness, the error (exit code
    3) naming the first one's cause: nothing was measured, which no summary would make plain."""
    if not outcomes or any(o.status not in FAILED for o in outcomes):
        return None
    first = outcomes[0]
    more = f" (and {len(outcomes) - 1} more failed)" if len(outcomes) > 1 else ""
    return EnvironmentFailure(f"{first.env_id}: {first.reason}{more}")
