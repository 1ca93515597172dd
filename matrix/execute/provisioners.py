"""How a sweep makes each environment exist before running the harness in it, per backend.

Docker builds (or finds) an image; venv installs (or finds) a virtual environment. Both are
cached by content and both can fail for one environment without stopping the others, so the
sweep treats them alike through `Provisioner`: it plans, prepares, runs, and cleans up after
Ctrl-C without knowing which one it drives.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from matrix.execute.backends import Backend
from matrix.plan.config import MatrixConfig
from matrix.plan.environments import Environment, Skipped, expand

NO_GPU_RUNTIME = (
    "no NVIDIA runtime on this Docker host (`docker info` lists {runtimes}); "
    "install the NVIDIA Container Toolkit to run GPU cells"
)
NO_GPU_VENV = (
    "no NVIDIA GPU on this host (nvidia-smi not found): the venv backend runs GPU "
    "cells only where TensorFlow can see a GPU; use --cpu"
)
NO_PYTHON = (
    "Python {python} is not installed on this host (found: {found}); install "
    "python{python}, or run this cell with --backend docker"
)


@dataclass(frozen=True)
class Prepared:
    """An environment ready to run (`backend` set), or why it is not."""

    ref: str  # the image tag, or the venv folder
    built: bool  # False when found by content (or when preparing failed)
    seconds: float
    reason: str = ""  # one line, when preparing failed
    backend: Backend | None = None


class Provisioner(Protocol):
    """One way of making environments exist (see the module docstring)."""

    name: str

    def plan(self, config: MatrixConfig) -> tuple[list[Environment], list[Skipped]]:
        """The environments this provisioner can make, and the rest skipped with a reason."""

    def prepare(self, env: Environment, log: Path, on_line: Callable[[str], None]) -> Prepared:
        """Build or find `env`, its output going to `log` and line by line to `on_line`."""

    def cleanup(self, run_id: str) -> str:
        """After Ctrl-C: remove what the run left running; says what it removed."""


class DockerProvisioner:
    """An image per environment (`matrix.build.images`), a container per run of the harness."""

    name = "docker"

    def __init__(self, client: Any, build_root: Path) -> None:
        from matrix.execute.hostdrop import route

        self._client, self._build_root = client, build_root
        self._drop_route = route()  # found once: how the host drops the cache for containers

    def plan(self, config: MatrixConfig) -> tuple[list[Environment], list[Skipped]]:
        """GPU cells need the engine's NVIDIA runtime: without it they are skipped, up front."""
        environments, skipped = expand(config)
        if any(env.device == "gpu" for env in environments):
            runtimes = sorted(self._client.info().get("Runtimes", {}))
            if "nvidia" not in runtimes:
                reason = NO_GPU_RUNTIME.format(runtimes=", ".join(runtimes) or "none")
                environments = _skip_gpu(environments, skipped, reason)
        return environments, skipped

    def prepare(self, env: Environment, log: Path, on_line: Callable[[str], None]) -> Prepared:
        from matrix.build.images import ensure_image
        from matrix.execute.backends.docker import DockerBackend

        image = ensure_image(self._client, env, self._build_root, log, on_line=on_line)
        if image.status != "ok":
            return Prepared(image.tag, False, image.seconds, f"image build failed: {image.reason}")
        backend = DockerBackend(self._client, env, image.tag, self._drop_route)
        return Prepared(image.tag, image.built, image.seconds, backend=backend)

    def cleanup(self, run_id: str) -> str:
        from matrix.execute.backends.docker import remove_run_containers

        return f"removed {remove_run_containers(self._client, run_id)} container(s)"


class VenvProvisioner:
    """A virtual environment per environment (`matrix.build.venvs`) from this host's Pythons."""

    name = "venv"

    def __init__(self, build_root: Path, pythons: dict[str, Path]) -> None:
        self._build_root, self._pythons = build_root, pythons

    def plan(self, config: MatrixConfig) -> tuple[list[Environment], list[Skipped]]:
        """Only Pythons present here can make a venv; `python: auto` picks among them."""
        environments, skipped = expand(config, pythons=self._pythons)
        if shutil.which("nvidia-smi") is None:
            environments = _skip_gpu(environments, skipped, NO_GPU_VENV)
        found = ", ".join(self._pythons) or "none"
        missing = [env for env in environments if env.python not in self._pythons]
        skipped += [
            Skipped(env.id, NO_PYTHON.format(python=env.python, found=found)) for env in missing
        ]
        return [env for env in environments if env not in missing], skipped

    def prepare(self, env: Environment, log: Path, on_line: Callable[[str], None]) -> Prepared:
        from matrix.build.venvs import ensure_venv
        from matrix.execute.backends.venv import VenvBackend

        venv = ensure_venv(env, self._pythons[env.python], self._build_root, log, on_line)
        if venv.status != "ok":
            return Prepared(
                str(venv.path), False, venv.seconds, f"virtual environment failed: {venv.reason}"
            )
        return Prepared(str(venv.path), venv.built, venv.seconds, backend=VenvBackend(env, venv))

    def cleanup(self, run_id: str) -> str:
        return "the harness process stopped with matrix"


def _skip_gpu(
    environments: list[Environment], skipped: list[Skipped], reason: str
) -> list[Environment]:
    """Move every GPU environment to `skipped` (in place) with `reason`; the CPU ones remain."""
    skipped += [Skipped(env.id, reason) for env in environments if env.device == "gpu"]
    return [env for env in environments if env.device != "gpu"]
