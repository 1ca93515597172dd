"""The venv backend: run the harness in a virtual environment made for one environment.

For hosts without Docker. Each environment id gets its own venv (see `matrix.build.venvs`),
holding the same pinned TensorFlow the environment's Dockerfile installs, made from this host's
own Pythons; the harness runs there as a child process exactly as the local backend runs it,
with the same cache modes and records. The harness drops the page cache itself when it may
(root), else evicts the artifact's pages and records which method it used.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO

from matrix.build.venvs import VenvResult, ensure_venv
from matrix.execute.backends import Backend, Prepared, skip_gpu
from matrix.execute.backends.local import HarnessProcess, launch_harness
from matrix.execute.matrix_run import MatrixRun
from matrix.plan.config import MatrixConfig
from matrix.plan.environments import Environment, Skipped, expand
from matrix.plan.inputs import check_folder
from matrix.plan.pythons import find_pythons

NO_GPU_VENV = (
    "no NVIDIA GPU on this host (nvidia-smi not found): the venv backend runs GPU "
    "cells only where TensorFlow can see a GPU; use --cpu"
)
NO_PYTHON = (
    "Python {python} is not installed on this host (found: {found}); install "
    "python{python}, or run this cell with --backend docker"
)


class VenvBackend(Backend):
    """A virtual environment per environment, from this host's Pythons."""

    name = "venv"
    makes = "virtual environment"

    def __init__(self, build_root: Path, pythons: dict[str, Path]) -> None:
        self._build_root, self._pythons = build_root, pythons
        self._venvs: dict[str, VenvResult] = {}  # by environment id, once made

    @classmethod
    def create(cls, config: MatrixConfig, build_root: Path) -> VenvBackend:
        check_folder("--build-dir", build_root)
        return cls(build_root, find_pythons())

    def environments(self, config: MatrixConfig) -> tuple[list[Environment], list[Skipped]]:
        """Only Pythons present here can make a venv; `python: auto` picks among them."""
        environments, skipped = expand(config, pythons=self._pythons)
        if shutil.which("nvidia-smi") is None:
            environments = skip_gpu(environments, skipped, NO_GPU_VENV)
        found = ", ".join(self._pythons) or "none"
        missing = [env for env in environments if env.python not in self._pythons]
        skipped += [
            Skipped(env.id, NO_PYTHON.format(python=env.python, found=found)) for env in missing
        ]
        return [env for env in environments if env not in missing], skipped

    def prepare(self, env: Environment, log: Path, on_line: Callable[[str], None]) -> Prepared:
        venv = ensure_venv(env, self._pythons[env.python], self._build_root, log, on_line)
        if venv.status != "ok":
            reason = f"virtual environment failed: {venv.reason}"
            return Prepared(env, str(venv.path), False, venv.seconds, reason)
        self._venvs[env.id] = venv
        return Prepared(env, str(venv.path), venv.built, venv.seconds)

    def launch(self, run: MatrixRun, ready: Prepared, log: IO[bytes]) -> HarnessProcess:
        venv = self._venvs[ready.env.id]
        environ = dict(os.environ) | dict(ready.env.env_vars)
        environ["PYTHONPATH"] = str(venv.harness_path)
        environ.pop("PYTHONHOME", None)
        cache = run.artifact_cache(f"venv:{venv.path.absolute()}")
        args = run.harness_args(ready.env.id, artifact_cache=str(cache.absolute()))
        return launch_harness(str(venv.python), args, log, environ)
