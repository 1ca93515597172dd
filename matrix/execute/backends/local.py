"""The local backend: run the harness with this very interpreter and its own TensorFlow.

No image and no copy of the code: `sys.executable -m harness` sees the installed `harness`
package, so what is measured is exactly the TensorFlow that `pip` put next to `matrix`.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
from collections.abc import Mapping
from typing import IO

from harness.envinfo import local_env_id
from harness.lifetime import die_with_parent
from matrix.errors import EnvironmentFailure
from matrix.execute.run_plan import RunPlan


class HarnessProcess(subprocess.Popen):
    """The harness as a child process of `matrix`, in a session of its own (see launch_harness)."""

    def interrupt(self) -> None:
        """Pass the stop on: Ctrl-C, or the SIGTERM `matrix` got, as one SIGINT."""
        self.send_signal(signal.SIGINT)

    def __exit__(self, *exc_info: object) -> None:
        """Leaving the block, the harness is gone: one not stopped by then (`matrix` failed or
        was stopped before measuring it) is killed, not left waiting at its start gate."""
        if self.poll() is None:
            self.kill()
        super().__exit__(*exc_info)


class LocalBackend:
    """Measure the interpreter running `matrix`."""

    name = "local"

    def check(self) -> None:
        """Fail fast, before a results folder exists, if TensorFlow is not installed here.

        `find_spec` locates the package without importing it: importing TensorFlow here would
        load its libraries into the page cache and warm the very import the harness times.
        """
        if importlib.util.find_spec("tensorflow") is None:
            raise EnvironmentFailure(
                f"--backend local: TensorFlow is not installed for {sys.executable}; "
                "install it with pip install 'tf-load-matrix[tf]', or use `make run` in a clone"
            )

    def env_id(self) -> str:
        return local_env_id()

    def launch(self, plan: RunPlan, env_id: str, log: IO[bytes]) -> HarnessProcess:
        return launch_harness(sys.executable, plan.harness_args(env_id), log)

    def serve(self, plan: RunPlan, env_id: str) -> None:
        """The local harness drops caches itself (or records why it cannot)."""


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
