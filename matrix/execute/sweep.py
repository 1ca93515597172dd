"""A sweep over environments: build or find each one, run the harness in it, record; in turn.

One failing build or container is recorded (a `failure` record in that environment's records
file, with the log excerpt) and the sweep goes on; the manifest is rewritten after every
environment, so an interrupted sweep still says what it finished and `--resume` can skip it.
Environments run one after another, never side by side: parallel trials would time each other.
Only their edges overlap, where nothing is measured: once a harness has written its `done`
record, the next environment's harness is launched (held at its start gate) while the engine
tears the finished one down, and its gate opens when that container is gone.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from harness.envinfo import machine
from harness.records import RecordWriter, dump_json, utc_now
from matrix.execute.harness_run import HarnessRun
from matrix.execute.provisioners import Provisioner
from matrix.execute.run_plan import RunPlan
from matrix.execute.stopping import set_aside
from matrix.plan.environments import Environment, Skipped
from matrix.results.reader import MANIFEST

FINISHED = ("ok", "resumed")  # manifest outcomes `--resume` skips


@dataclass
class EnvOutcome:
    """What happened to one environment, as the manifest lists it."""

    env_id: str
    status: str  # ok | cells-failed | build-failed | run-failed | interrupted | resumed
    image: str = ""  # the image tag (docker) or the virtual environment's folder (venv)
    image_built: bool = False
    build_s: float | None = None
    run_s: float | None = None  # from its harness's start gate opening to its end (removed)
    reason: str = ""


@dataclass
class Sweep:
    """Everything one `matrix run --backend docker|venv` does after planning."""

    plan: RunPlan
    provisioner: Provisioner
    environments: list[Environment]
    skipped: list[Skipped]
    console: Console
    # Done while the first harness starts, which waits at its start gate until it is over.
    meanwhile: Callable[[], object] | None = None
    outcomes: list[EnvOutcome] = field(default_factory=list)
    started: str = field(default_factory=utc_now)
    _ours: threading.Thread = field(init=False, repr=False)  # runs `meanwhile`
    _finished: set[str] = field(init=False, repr=False)  # by the manifest of an earlier attempt

    def __post_init__(self) -> None:
        self._ours = threading.Thread(target=self.meanwhile or (lambda: None), daemon=True)
        self._finished = finished_before(self.plan.run_dir)

    def run(self) -> list[EnvOutcome]:
        self.plan.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_manifest(ended=None)
        try:
            with contextlib.ExitStack() as started:  # releases every harness on the way out
                waiting = iter(self.environments)
                current = self._launch_next(waiting, started)
                while current:
                    outcome, run = current
                    self._ours.join()
                    run.measure()
                    if run.interrupted:  # stopped; `started` removes its container
                        raise KeyboardInterrupt
                    try:  # the engine starts the next one while this one is torn down
                        current = self._launch_next(waiting, started)
                    finally:
                        self._end(outcome, run)
        except KeyboardInterrupt:
            cleaned = self.provisioner.cleanup(self.plan.run_id)
            self.console.print(
                f"[yellow]interrupted[/]: {escape(cleaned)}; every completed record is kept"
            )
            self.outcomes.append(EnvOutcome(env_id="-", status="interrupted"))
            self._write_manifest(ended=utc_now())
            raise
        self._write_manifest(ended=utc_now())
        return self.outcomes

    def _launch_next(
        self, waiting: Iterator[Environment], started: contextlib.ExitStack
    ) -> tuple[EnvOutcome, HarnessRun] | None:
        """The next environment's harness, launched; the ones before it that need no run
        (complete already, or not made) are recorded on the way."""
        for env in waiting:
            outcome, run = self._start(env, started)
            if run is not None:
                return outcome, run
            self._add(outcome)
        return None

    def _start(
        self, env: Environment, started: contextlib.ExitStack
    ) -> tuple[EnvOutcome, HarnessRun | None]:
        """Make (or find) the environment and launch its harness, held at its start gate;
        no harness for one already complete in this run, or one that could not be made."""
        records = self.plan.run_dir / f"{env.id}.jsonl"
        if env.id in self._finished:
            self.console.print(f"{env.id}: already complete in this run, skipped")
            return EnvOutcome(env.id, "resumed"), None
        set_aside(records)  # an interrupted attempt's: kept, out of the merge
        what = "image" if self.provisioner.name == "docker" else "virtual environment"
        self.console.print(f"[bold]{escape(env.id)}[/]: {what}")
        ready = self.provisioner.prepare(
            env, self.plan.run_dir / f"{env.id}.build.log", self._build_line(env)
        )
        outcome = EnvOutcome(
            env.id, "ok", image=ready.ref, image_built=ready.built, build_s=ready.seconds
        )
        if ready.backend is None:
            return self._fail(outcome, "build-failed", ready.reason), None
        if self._ours.ident is None:  # `meanwhile` runs from the first launch to that gate
            self._ours.start()
        run = started.enter_context(HarnessRun(self.plan, ready.backend, env.id, self.console))
        return outcome, run

    def _end(self, outcome: EnvOutcome, run: HarnessRun) -> None:
        """Wait for the harness to exit and release it; record how it ended."""
        ended = run.finish()
        outcome.run_s = ended.seconds
        if ended.returncode != 0 and not ended.interrupted:
            self._fail(
                outcome,
                "run-failed",
                f"harness exited with code {ended.returncode}; see {ended.log_file}",
            )
        self._add(outcome)

    def _add(self, outcome: EnvOutcome) -> None:
        """Record an environment's outcome, in the matrix's order (they may end out of it)."""
        self.outcomes.append(outcome)
        order = [env.id for env in self.environments]
        self.outcomes.sort(key=lambda o: order.index(o.env_id))
        self._write_manifest(ended=None)

    def _fail(self, outcome: EnvOutcome, status: str, reason: str) -> EnvOutcome:
        """Record the failure where the report looks (the environment's records), then go on."""
        writer = RecordWriter(
            str(self.plan.run_dir / f"{outcome.env_id}.jsonl"), self.plan.run_id, outcome.env_id
        )
        writer.write("failure", scope="environment", reason=reason)
        writer.close()
        self.console.print(f"[red]{escape(outcome.env_id)}[/]: {escape(reason)}")
        outcome.status, outcome.reason = status, reason
        return outcome

    def _build_line(self, env: Environment) -> Callable[[str], None]:
        def show(line: str) -> None:  # Docker's build steps, uv's own summary lines
            if line.startswith(("Step ", "Installed ", "Resolved ", "Prepared ")):
                self.console.print(f"  {escape(env.id)} {escape(line.strip())}")

        return show

    def _write_manifest(self, ended: str | None) -> None:
        dump_json(
            str(self.plan.run_dir / MANIFEST),
            {
                "run_id": self.plan.run_id,
                "started": self.started,
                "ended": ended,
                "matrix": json.loads(self.plan.config.model_dump_json()),
                "backend": self.provisioner.name,
                "host": machine(),
                "environments": [asdict(env) | {"id": env.id} for env in self.environments],
                "skipped": [asdict(s) for s in self.skipped],
                "outcomes": [asdict(o) for o in self.outcomes],
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
    failed = [o for o in outcomes if o.status in ("build-failed", "run-failed")]
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in counts.items())
    names = f" ({', '.join(o.env_id for o in failed)})" if failed else ""
    return f"{len(outcomes)} environments: {parts}{names}"
