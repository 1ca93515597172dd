"""Where the harness runs. A backend knows one kind of environment; the runner does the rest.

Only `local` (this interpreter's own TensorFlow) exists so far. Every backend must produce the
same thing, `<run_dir>/<env_id>.jsonl`, so progress, records and summary never depend on which
one ran.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Protocol

from matrix.errors import ConfigError
from matrix.execute.backends.local import LocalBackend
from matrix.execute.run_plan import RunPlan


class RunningHarness(Protocol):
    """A started harness: enough to watch it and to stop it (`subprocess.Popen` is one)."""

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; raises subprocess.TimeoutExpired after `timeout`, as Popen does."""

    def interrupt(self) -> None:
        """Deliver Ctrl-C to the harness, if the terminal's did not reach it already."""

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def __enter__(self) -> RunningHarness: ...

    def __exit__(self, *exc_info: object) -> None:
        """Release what the harness held (a container is removed); Popen waits for it."""


class Backend(Protocol):
    """One kind of environment the harness can run in."""

    name: str

    def check(self) -> None:
        """Raise EnvironmentFailure, naming the fix, if this backend cannot run the harness."""

    def env_id(self) -> str:
        """Stable id of the environment, e.g. `local-tf2.21-py3.11-cpu`; names its files."""

    def launch(self, plan: RunPlan, env_id: str, log: IO[bytes]) -> RunningHarness:
        """Start the harness for `plan`, its stdout and stderr going to `log`."""

    def serve(self, plan: RunPlan, env_id: str) -> None:
        """Called every poll while the harness runs: answer what it asks of the host."""


BACKENDS: dict[str, Callable[[], Backend]] = {"local": LocalBackend}


def get_backend(name: str) -> Backend:
    """The backend called `name`, or a one-line error naming the ones that exist."""
    try:
        return BACKENDS[name]()
    except KeyError:
        raise ConfigError(
            f"--backend: unknown backend {name!r}; choose from {', '.join(BACKENDS)}"
        ) from None
