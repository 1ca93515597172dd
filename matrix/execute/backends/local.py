"""The local backend: run the harness with this very interpreter and its own TensorFlow.

No image and no copy of the code: `sys.executable -m harness` sees the installed `harness`
package, so what is measured is exactly the TensorFlow that `pip` put next to `matrix`. It is
a sweep of one environment, this interpreter, named `local-…` apart from the ones a matrix
builds. The harness processes of the venv backend are launched the same way (`launch_harness`).
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from harness.artifact_cache import environment_fingerprint
from harness.envinfo import installed_tensorflow, local_env_id
from harness.lifetime import die_with_parent
from matrix.errors import EnvironmentFailure
from matrix.execute.backends import Backend, Harness, Prepared
from matrix.execute.matrix_run import MatrixRun
from matrix.plan.config import MatrixConfig
from matrix.plan.environments import Environment, Skipped


class HarnessProcess(subprocess.Popen, Harness):
    """The harness as a child process of `matrix`, in a session of its own (see launch_harness)."""

    def interrupt(self) -> None:
        """Pass the stop on: Ctrl-C, or the SIGTERM `matrix` got, as one SIGINT."""
        self.send_signal(signal.SIGINT)

    def release(self) -> None:
        """A harness not stopped by now (`matrix` failed or was stopped before measuring it)
        is killed, not left waiting at its start gate; then its exit is collected."""
        if self.poll() is None:
            self.kill()
        self.wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
        super().__exit__(exc_type, exc, tb)


def launch_harness(
    python: str, args: list[str], log: IO[bytes], environ: Mapping[str, str] | None = None
) -> HarnessProcess:
    """`python -m harness ARGS` as a child of `matrix`, its output going to `log`.

    Its own session keeps the terminal's Ctrl-C from reaching it beside the one `matrix`
    forwards (two would cut its clean stop short), and makes a SIGTERM sent to `matrix` alone
    stop it the same way. It is killed when `matrix` dies without stopping it (SIGKILL).
    """
    return HarnessProcess(
        [python, "-m", "harness", *args],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=None if environ is None else dict(environ),
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )


@dataclass(frozen=True)
class LocalEnvironment(Environment):
    """This interpreter: named `local-tf2.21-py3.11-cpu` (as `harness.envinfo` names it), so
    its records never pass for those of an environment the matrix built."""

    @property
    def id(self) -> str:
        return f"local-{super().id}"


class LocalBackend(Backend):
    """Measure the interpreter running `matrix`."""

    name = "local"

    @classmethod
    def create(cls, config: MatrixConfig, build_root: Path) -> LocalBackend:
        """Fail fast, before a results folder exists, if TensorFlow is not installed here.

        `find_spec` locates the package without importing it: importing TensorFlow here would
        load its libraries into the page cache and warm the very import the harness times.
        """
        if importlib.util.find_spec("tensorflow") is None:
            raise EnvironmentFailure(
                f"--backend local: TensorFlow is not installed for {sys.executable}; "
                "install it with pip install 'tf-load-matrix[tf]', or use `make run` in a clone"
            )
        return cls()

    def environments(self, config: MatrixConfig) -> tuple[list[Environment], list[Skipped]]:
        """One environment, whatever the matrix's axes say: this interpreter's."""
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        device = "gpu" if local_env_id().endswith("-gpu") else "cpu"
        this = LocalEnvironment(
            tf=installed_tensorflow() or "",
            python=python,
            device=device,
            keras="default",
            base_image="",
            template="",
            packages=(),
        )
        return [this], []

    def launch(self, run: MatrixRun, ready: Prepared, log: IO[bytes]) -> HarnessProcess:
        cache = run.artifact_cache(json.dumps(environment_fingerprint(), sort_keys=True))
        args = run.harness_args(ready.env.id, artifact_cache=str(cache.absolute()))
        return launch_harness(sys.executable, args, log)
