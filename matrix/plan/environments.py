"""The environments of a matrix: what each one installs, and which cannot exist and why.

This is the plan stage (config -> environments). Everything later — rendering, building,
running — takes an `Environment` and nothing else, so what ran is exactly what was planned.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from harness import REQUIRES_PYTHON
from matrix.plan.compat import (
    CUDA_IMAGE_PYTHON,
    CompatTable,
    TfMinor,
    load_table,
    minor_of,
    span,
    version_key,
)
from matrix.plan.config import MatrixConfig


@dataclass(frozen=True)
class Environment:
    """One TensorFlow x Python x device (x Keras implementation) environment that can exist."""

    tf: str  # the exact TensorFlow version installed, e.g. "2.21.0"
    python: str  # "3.11"
    device: str  # "cpu" | "gpu"
    keras: str  # "default" | "legacy" (tf-keras with TF_USE_LEGACY_KERAS=1, TF >= 2.16)
    base_image: str  # FROM line of the Dockerfile, e.g. "python:3.11-slim-bookworm"
    template: str  # file name under dockerfiles/, e.g. "cpu.Dockerfile.j2"
    packages: tuple[str, ...]  # pinned pip requirements, TensorFlow first
    env_vars: tuple[tuple[str, str], ...] = ()  # set in the image (e.g. TF_USE_LEGACY_KERAS)
    # The base image only supplies CUDA (official -gpu image): install `python` from its apt.
    python_from_apt: bool = False

    @property
    def id(self) -> str:
        """Short, stable, readable and glob-friendly: `tf2.15-py3.11-cpu`.

        The legacy-Keras variant adds `-tfkeras`: `tf2.16-py3.12-gpu-tfkeras`.
        """
        return environment_id(self.tf, self.python, self.device, self.keras)


def environment_id(tf: str, python: str, device: str, keras: str) -> str:
    """The id of an environment, whether or not it can exist (a skipped one is named alike)."""
    suffix = "-tfkeras" if keras == "legacy" else ""
    return f"tf{minor_of(tf)}-py{python}-{device}{suffix}"


@dataclass(frozen=True)
class Skipped:
    """An environment the matrix asked for that cannot run, with the reason a user can act on."""

    id: str
    reason: str


DEVICES = ("cpu", "gpu")
KERAS = ("default", "legacy")
CPU_TEMPLATE = "cpu.Dockerfile.j2"
GPU_TEMPLATE = "gpu.Dockerfile.j2"


def expand(
    config: MatrixConfig,
    pythons: Collection[str] | None = None,
) -> tuple[list[Environment], list[Skipped]]:
    """Every tf x python x device x keras combination of `config`, as environments or skipped.

    Pure (no Docker, no disk beyond the shipped table), so `matrix plan` and CI fan-out are
    instant and testable. Both lists come in one stable order: TF, Python (numerically), device,
    keras. --only/--skip act last, on environments that could otherwise run; one that cannot exist
    keeps its compatibility reason, which is the one a user can act on. `pythons`, when given,
    are the only versions a backend can have (the host's, for venvs): `python: auto` then means
    the newest of those the TF supports, rather than a version that is not there.
    """
    table = load_table()
    resolved: list[Environment | Skipped] = []
    for spec in sorted(config.tf, key=version_key):
        entry, release = table.resolve(spec)
        pairs = {
            (_auto_python(entry, device, pythons) if python == "auto" else python, device)
            for python in config.python
            for device in config.device
        }
        for python, device in sorted(pairs, key=lambda p: (version_key(p[0]), DEVICES.index(p[1]))):
            for keras in (k for k in KERAS if k in config.keras):
                requested = _Requested(entry, release, python, device, keras)
                resolved.append(_filter(requested.resolve(config.base_images, table), config))
    return (
        [env for env in resolved if isinstance(env, Environment)],
        [env for env in resolved if isinstance(env, Skipped)],
    )


@dataclass(frozen=True)
class _Requested:
    """One requested environment, before we know whether it can exist."""

    entry: TfMinor
    release: str  # the exact TF release asked for, or the minor's latest
    python: str
    device: str
    keras: str

    @property
    def id(self) -> str:
        return environment_id(self.release, self.python, self.device, self.keras)

    def resolve(self, base_images: Mapping[str, str], table: CompatTable) -> Environment | Skipped:
        """The environment, or Skipped with the first rule it breaks (rules in compat.yaml)."""
        entry = self.entry
        cuda_image = entry.cuda_image if _on_cuda_image(entry, self.device) else None
        if self.keras == "legacy" and not (entry.keras3 and entry.tf_keras):
            keras3 = table.first_minor(lambda e: e.keras3)
            return self._skip(f"the legacy Keras axis exists for TF >= {keras3} only")
        if cuda_image and self.python != CUDA_IMAGE_PYTHON:
            and_cuda = table.first_minor(lambda e: e.and_cuda is not None)
            return self._skip(
                f"GPU cells of TF < {and_cuda} run Python {CUDA_IMAGE_PYTHON} "
                f"on the official CUDA image {cuda_image}"
            )
        if self.python not in entry.python:
            return self._skip(
                f"TensorFlow {minor_of(self.release)} has wheels for Python "
                f"{span(entry.python)} only"
            )
        if version_key(self.python) < version_key(REQUIRES_PYTHON):
            return self._skip(f"the harness needs Python >= {REQUIRES_PYTHON}")
        broken = self._and_cuda_problem()
        if broken:
            return self._skip(broken)
        if cuda_image:
            return self._environment(cuda_image, python_from_apt=True)
        if self.python not in base_images:
            return self._skip(
                f"no base image configured for Python {self.python} "
                f'(set base_images."{self.python}" in matrix.yaml)'
            )
        return self._environment(base_images[self.python], python_from_apt=False)

    def _and_cuda_problem(self) -> str | None:
        and_cuda = self.entry.and_cuda
        if self.device != "gpu" or and_cuda is None:
            return None
        install = f"tensorflow[and-cuda]=={self.release} cannot install"
        if self.release in and_cuda.broken_release:
            return (
                f"{install} ({and_cuda.broken_release[self.release]}); "
                f"use {minor_of(self.release)} or {self.entry.latest}"
            )
        if self.python in and_cuda.broken_python:
            return f"{install} on Python {self.python} ({and_cuda.broken_python[self.python]})"
        return None

    def _environment(self, base_image: str, python_from_apt: bool) -> Environment:
        legacy = self.keras == "legacy"
        entry = self.entry
        keras = entry.keras_for(self.python)
        packages = [
            _tf_requirement(self.release, self.device, entry),
            *([keras] if keras else []),
            *([entry.tf_keras] if legacy and entry.tf_keras else []),
            *entry.constraints,
            *([entry.litert] if entry.litert else []),
        ]
        return Environment(
            tf=self.release,
            python=self.python,
            device=self.device,
            keras=self.keras,
            base_image=base_image,
            template=GPU_TEMPLATE if self.device == "gpu" else CPU_TEMPLATE,
            packages=tuple(packages),
            env_vars=(("TF_USE_LEGACY_KERAS", "1"),) if legacy else (),
            python_from_apt=python_from_apt,
        )

    def _skip(self, reason: str) -> Skipped:
        return Skipped(id=self.id, reason=reason)


def _on_cuda_image(entry: TfMinor, device: str) -> bool:
    """GPU without `tensorflow[and-cuda]` (TF < 2.14): CUDA comes from the official image."""
    return device == "gpu" and entry.and_cuda is None


def _tf_requirement(release: str, device: str, entry: TfMinor) -> str:
    """The TensorFlow wheel: CPU-only, GPU with pip CUDA (2.14+), or the GPU build (< 2.14)."""
    if device == "cpu":
        return f"tensorflow-cpu=={release}"
    extra = "[and-cuda]" if entry.and_cuda is not None else ""
    return f"tensorflow{extra}=={release}"


def _auto_python(entry: TfMinor, device: str, pythons: Collection[str] | None) -> str:
    """The newest Python this TF minor can run on this device (for `python: auto`), among
    `pythons` when some of them qualify."""
    if _on_cuda_image(entry, device):
        return CUDA_IMAGE_PYTHON
    broken = entry.and_cuda.broken_python if device == "gpu" and entry.and_cuda else {}
    usable = [p for p in entry.python if p not in broken] or list(entry.python)
    present = [p for p in usable if pythons is None or p in pythons]
    return (present or usable)[-1]


def _filter(env: Environment | Skipped, config: MatrixConfig) -> Environment | Skipped:
    """Apply --only, then --skip (fnmatch globs over ids), to an environment that could run."""
    if isinstance(env, Skipped):
        return env
    if config.only and not any(fnmatchcase(env.id, glob) for glob in config.only):
        return Skipped(env.id, f"filtered out by --only '{','.join(config.only)}'")
    glob = next((g for g in config.skip if fnmatchcase(env.id, g)), None)
    if glob is not None:
        return Skipped(env.id, f"filtered out by --skip '{glob}'")
    return env
