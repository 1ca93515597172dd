"""Test double of a backend: environments that cost nothing to make, the fake harness in each.

`FakeBackend` goes through the real interface (plan, prepare, launch, release, cleanup) and
its harness is a real child process (`fake_harness.py`, launched as the local backend launches
the real one), so the sweep's ordering, resume, failure isolation and Ctrl-C are tested for
real in milliseconds. What each environment does is set per environment id.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from matrix.execute.backends import Backend, Ended, Prepared
from matrix.execute.backends.local import HarnessProcess
from matrix.execute.matrix_run import MatrixRun
from matrix.plan.config import MatrixConfig
from matrix.plan.environments import Environment, Skipped

FAKE_HARNESS = Path(__file__).with_name("fake_harness.py")
UNBUILDABLE = "unbuildable"  # a behaviour of `prepare`: the environment cannot be made
LOST_ONCE = "lost-once"  # its first harness fails as on a lost machine, and the backend retries


def fake_env(tf_minor: str) -> Environment:
    """An environment named `tf<minor>-py3.11-cpu`, as a planned one would be."""
    return Environment(
        tf=f"{tf_minor}.0",
        python="3.11",
        device="cpu",
        keras="default",
        base_image="",
        template="",
        packages=(),
    )


class FakeHarness(HarnessProcess):
    """The fake harness process, saying when it is released (once)."""

    def __init__(
        self,
        argv: list[str],
        log: IO[bytes],
        behaviour: str,
        on_release: Callable[[], None],
        retry: bool = False,
    ) -> None:
        super().__init__(
            [sys.executable, "-S", str(FAKE_HARNESS), *argv],  # no site: it needs none
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FAKE_HARNESS": behaviour},
            start_new_session=True,
        )
        self._on_release: Callable[[], None] | None = on_release
        self._retry = retry

    def ended(self, returncode: int) -> Ended:
        return Ended(reason="fake machine lost" if self._retry else "", retry=self._retry)

    def release(self) -> None:
        super().release()
        if self._on_release is not None:
            self._on_release()
            self._on_release = None


class FakeBackend(Backend):
    """Environments `tf<minor>-py3.11-cpu`, each behaving as `behaviours` says by its id:
    `ok`, `fail` (its harness exits 1), `endless` (trials until interrupted), `unbuildable`
    (prepare fails) or `lost-once` (fails, the backend asks for a retry, which works).
    `events` lists launches, releases and cleanups in order."""

    name = "fake"
    makes = "fake environment"

    def __init__(
        self, behaviours: dict[str, str], slots: int = 1, events: list[str] | None = None
    ) -> None:
        self.behaviours = behaviours
        self.slots = slots
        self.events: list[str] = [] if events is None else events

    @classmethod
    def create(cls, config: MatrixConfig, build_root: Path) -> FakeBackend:
        return cls({})

    def environments(self, config: MatrixConfig) -> tuple[list[Environment], list[Skipped]]:
        return [fake_env(minor) for minor in config.tf], []

    def prepare(self, env: Environment, log: Path, on_line: Callable[[str], None]) -> Prepared:
        if self.behaviours.get(env.id) == UNBUILDABLE:
            return Prepared(env, "fake-ref", False, 0.0, "fake build failed: planted")
        return Prepared(env, "fake-ref", True, 0.0)

    def launch(self, run: MatrixRun, ready: Prepared, log: IO[bytes]) -> FakeHarness:
        env_id = ready.env.id
        behaviour = self.behaviours.get(env_id, "ok")
        lost = behaviour == LOST_ONCE and f"launched {env_id}" not in self.events
        self.events.append(f"launched {env_id}")
        return FakeHarness(
            run.harness_args(env_id),
            log,
            "fail" if lost else behaviour.replace(LOST_ONCE, "ok"),
            lambda: self.events.append(f"released {env_id}"),
            retry=lost,
        )

    def cleanup(self, run_id: str) -> str:
        self.events.append(f"cleanup {run_id}")
        return "fake cleanup"
