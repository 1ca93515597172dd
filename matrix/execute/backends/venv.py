"""The venv backend: run the harness in a virtual environment made for one environment.

For hosts without Docker. Each environment id gets its own venv (see `matrix.build.venvs`), holding
the same pinned TensorFlow the environment's Dockerfile installs; the harness runs there as a
child process exactly as the local backend runs it, with the same cache modes and records. The
harness drops the page cache itself when it may (root), else evicts the artifact's pages and
records which method it used.
"""

from __future__ import annotations

import os
from typing import IO

from matrix.build.venvs import VenvResult
from matrix.execute.backends.local import HarnessProcess, launch_harness
from matrix.execute.run_plan import RunPlan
from matrix.plan.environments import Environment


class VenvBackend:
    """Run the harness with the interpreter of one environment's venv."""

    name = "venv"

    def __init__(self, env: Environment, venv: VenvResult) -> None:
        self._env, self._venv = env, venv

    def check(self) -> None:
        """The venv was made (or found complete) just before; nothing else can be missing."""

    def env_id(self) -> str:
        return self._env.id

    def launch(self, plan: RunPlan, env_id: str, log: IO[bytes]) -> HarnessProcess:
        environ = dict(os.environ) | dict(self._env.env_vars)
        environ["PYTHONPATH"] = str(self._venv.harness_path)
        environ.pop("PYTHONHOME", None)
        return launch_harness(str(self._venv.python), plan.harness_args(env_id), log, environ)

    def serve(self, plan: RunPlan, env_id: str) -> None:
        """The harness drops caches itself (or records why it cannot)."""
