"""Where the harness runs: one interface for this interpreter, venvs, containers and clusters.

A backend plans the environments it can make, prepares (builds or finds) each, and launches its
harness; the sweep (`matrix.execute.sweep`) does the rest the same way for all of them, so
progress, resume, failure records and Ctrl-C never depend on where the harness ran. Every
backend delivers the same thing: `<run_dir>/<env_id>.jsonl` on the orchestrating machine.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, ClassVar

from rich.console import Console
from rich.markup import escape

from matrix.errors import ConfigError, EnvironmentFailure
from matrix.execute.matrix_run import MatrixRun
from matrix.plan.config import MatrixConfig
from matrix.plan.environments import Environment, Skipped

if TYPE_CHECKING:  # the docker SDK is imported by the docker and ray backends alone
    from matrix.build.images import ImageResult

# name -> "module:class", imported only when chosen: the docker SDK or Ray load for their own
# backend alone, and `matrix` starts without either.
BACKENDS: dict[str, str] = {
    "local": "matrix.execute.backends.local:LocalBackend",
    "venv": "matrix.execute.backends.venv:VenvBackend",
    "docker": "matrix.execute.backends.docker:DockerBackend",
    "ray": "matrix.execute.backends.ray:RayBackend",
}


@dataclass(frozen=True)
class Prepared:
    """An environment made ready on this machine, or why it could not be."""

    env: Environment
    ref: str = ""  # the image tag or the venv's folder; "" when nothing is made here
    built: bool = False  # made now; False when found by content, or when nothing is made
    seconds: float = 0.0
    reason: str = ""  # one line, when preparing failed: the environment is `build-failed`


def prepared_image(env: Environment, image: ImageResult, from_registry: bool = False) -> Prepared:
    """`env` made ready as `image`, or why not: a failed build says so; a failed pull or push
    (`from_registry`) already names the registry."""
    if image.status == "ok":
        return Prepared(env, image.tag, image.built, image.seconds)
    reason = image.reason if from_registry else f"image build failed: {image.reason}"
    return Prepared(env, image.tag, image.built, image.seconds, reason)


@dataclass
class Ended:
    """What a harness handle knows about its end beyond the exit code (defaults: nothing)."""

    prepared: Prepared | None = None  # the environment as made where the harness ran, if there
    reason: str = ""  # one line on why it failed, when the exit code does not say it
    recorded: bool = False  # its `failure` record is in the records file already
    retry: bool = False  # run the environment once more (its machine was lost): the backend's call
    details: dict[str, Any] = field(default_factory=dict)  # more for the manifest, e.g. its node


class Harness(abc.ABC):
    """A launched harness, waiting at its start gate: enough to watch it, serve it, stop it.

    `wait` raises subprocess.TimeoutExpired after `timeout`, as `Popen.wait` does. Leaving the
    `with` block releases it (`release`: a container is removed) whatever happened.
    """

    @abc.abstractmethod
    def poll(self) -> int | None: ...

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> int: ...

    @abc.abstractmethod
    def interrupt(self) -> None:
        """Stop it after the record it is writing (the Ctrl-C `matrix` got, passed on)."""

    @abc.abstractmethod
    def terminate(self) -> None: ...

    @abc.abstractmethod
    def kill(self) -> None: ...

    @abc.abstractmethod
    def release(self) -> None:
        """Free what it holds, stopping it if it still runs; a second call does nothing."""

    def serve(self) -> None:  # noqa: B027 (a hook: most harnesses need nothing served)
        """Called every poll while it runs: answer what it asks of the host (host calls), or
        bring its records here (a harness on another machine)."""

    def ended(self, returncode: int) -> Ended:
        """How it ended, once it exited with `returncode`."""
        return Ended()

    def __enter__(self) -> Harness:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Backend(abc.ABC):
    """One kind of environment the harness runs in (see the module docstring)."""

    name: ClassVar[str]
    makes: ClassVar[str] = ""  # what `prepare` makes, announced per environment ("image")
    slots: int = 1  # environments measured at once; on one machine never more than one

    @classmethod
    @abc.abstractmethod
    def create(cls, config: MatrixConfig, build_root: Path) -> Backend:
        """The backend, ready to plan; EnvironmentFailure naming the fix if it cannot run the
        harness here. Called before the run's lock and folder exist, so a run that cannot
        start leaves nothing behind."""

    @abc.abstractmethod
    def environments(self, config: MatrixConfig) -> tuple[list[Environment], list[Skipped]]:
        """The environments this backend can make, and the rest skipped with a reason."""

    def prepare(self, env: Environment, log: Path, on_line: Callable[[str], None]) -> Prepared:
        """Build or find `env` here, its output going to `log` and line by line to `on_line`.
        By default there is nothing to make (this interpreter; an environment made where it
        runs)."""
        return Prepared(env)

    @abc.abstractmethod
    def launch(self, run: MatrixRun, ready: Prepared, log: IO[bytes]) -> Harness:
        """Start the harness of `ready.env` held at its start gate, its output going to `log`."""

    def reclaim(self) -> str:
        """Once the run holds its lock: remove what runs killed outright left behind, which
        would measure beside this one; says what it removed ("" for nothing)."""
        return ""

    def cleanup(self, run_id: str) -> str:
        """After Ctrl-C, every harness released: remove what the run still left; says what."""
        return ""

    # A cross-load across machines (Ray) sends each saver's artifacts from where it ran to
    # where each loader runs: these say where a backend keeps them on this machine.

    def saved_artifacts(self, run: MatrixRun, env_id: str) -> Path | None:
        """The folder on this machine holding what `env_id` saved in `run` (None: nothing)."""
        folder = run.artifacts_dir(env_id)
        return folder if folder.is_dir() else None

    def artifacts_copy(self, run: MatrixRun, loader: str, saver: str) -> Path:
        """Where `saver`'s artifacts, brought from another machine, are put for `loader`'s
        harness to read: a folder not there yet, or empty. Here, in the loader's own results
        folder, which goes with it."""
        return run.artifacts_dir(saver)

    def drop_artifacts_copies(self, run: MatrixRun, loader: str) -> None:  # noqa: B027
        """Once `loader`'s harness is done: remove what `artifacts_copy` made outside its
        results folder."""


def backend_class(name: str) -> type[Backend]:
    """The backend called `name`, or a one-line error naming the ones that exist."""
    try:
        module, _, attribute = BACKENDS[name].partition(":")
    except KeyError:
        raise ConfigError(
            f"--backend: unknown backend {name!r}; choose from {', '.join(BACKENDS)}"
        ) from None
    found: type[Backend] = getattr(importlib.import_module(module), attribute)
    return found


def create_backend(config: MatrixConfig, build_root: Path, console: Console) -> Backend:
    """The matrix's backend, created. `auto` means Docker when a daemon answers, else a venv
    per environment; the choice is said, with why."""
    if config.backend != "auto":
        return backend_class(config.backend).create(config, build_root)
    try:
        backend = backend_class("docker").create(config, build_root)
    except EnvironmentFailure as exc:
        if config.isolation == "container":
            raise EnvironmentFailure(
                "--isolation container needs a Docker daemon and none "
                "answers: start it, or use --isolation process"
            ) from None
        console.print(f"backend auto: venv ({escape(str(exc).split(':')[0])})")
        return backend_class("venv").create(config, build_root)
    console.print("backend auto: docker (a Docker daemon answers)")
    return backend


def skip_gpu(
    environments: list[Environment], skipped: list[Skipped], reason: str
) -> list[Environment]:
    """Move every GPU environment to `skipped` (in place) with `reason`; the CPU ones remain."""
    skipped += [Skipped(env.id, reason) for env in environments if env.device == "gpu"]
    return [env for env in environments if env.device != "gpu"]
