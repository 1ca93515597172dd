"""The TensorFlow compatibility table (`compat.yaml`), loaded and validated once.

What a TF release needs (Pythons, Keras, pins, CUDA, official images) is data, not if-chains:
adding TF 2.22 is one YAML entry, and docs/compat.md is generated from it (`python -m
matrix.plan.compat > docs/compat.md`). Versions are checked strictly: they end up in Dockerfiles.
No `from __future__ import annotations`: pydantic evaluates them, on Python 3.9 (`Optional`).
"""

import re
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from harness import REQUIRES_PYTHON

# Used with fullmatch, never match: `$` would also accept a trailing newline.
TF_VERSION = re.compile(r"\d+\.\d+(\.\d+)?")
PYTHON_VERSION = re.compile(r"3\.\d+")
OFFICIAL_IMAGE = "tensorflow/tensorflow"
# What apt installs on the official -gpu images without `[and-cuda]` (Ubuntu 18.04: bionic-updates
# universe; 20.04: the default python3), and what every such TF minor has wheels for.
CUDA_IMAGE_PYTHON = "3.8"


def version_key(version: str) -> tuple[int, ...]:
    """Numeric sort key: "2.10" sorts after "2.9", "3.10" after "3.9"."""
    return tuple(int(part) for part in version.split("."))


def minor_of(version: str) -> str:
    return ".".join(version.split(".")[:2])


def span(versions: tuple[str, ...]) -> str:
    """`3.6–3.8` for a run of versions, as the skip reasons and docs print them."""
    return versions[0] if len(versions) == 1 else f"{versions[0]}–{versions[-1]}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AndCuda(_Strict):
    """`tensorflow[and-cuda]` exists; these Pythons / releases cannot install it, and why."""

    broken_python: dict[str, str] = {}
    broken_release: dict[str, str] = {}


class DockerImages(_Strict):
    """Official `tensorflow/tensorflow` tags seen in use, and the Python inside them."""

    python: str = Field(pattern=f"^{PYTHON_VERSION.pattern}$")
    tags: tuple[str, ...] = Field(min_length=1)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        for tag in tags:
            if not re.fullmatch(r"\d+\.\d+\.\d+(-gpu)?", tag):
                raise ValueError(f"tag {tag!r} is not X.Y.Z or X.Y.Z-gpu")
        return tags

    @property
    def newest_gpu_tag(self) -> Optional[str]:
        """The newest `-gpu` tag: every patch of a minor is built for the same CUDA."""
        gpu = [t for t in self.tags if t.endswith("-gpu")]
        return max(gpu, key=lambda t: version_key(t.removesuffix("-gpu")), default=None)


class TfMinor(_Strict):
    """One TF minor (e.g. 2.15): see the key glossary at the top of compat.yaml."""

    releases: tuple[str, ...] = Field(min_length=1)
    python: tuple[str, ...] = Field(min_length=1)
    keras: Optional[str]
    keras_by_python: dict[str, str] = {}
    keras3: bool
    tf_keras: Optional[str]
    constraints: tuple[str, ...]
    litert: Optional[str]
    cuda: str
    cudnn: str
    and_cuda: Optional[AndCuda]
    docker: Optional[DockerImages]
    notes: tuple[str, ...]

    @field_validator("releases")
    @classmethod
    def _releases(cls, releases: tuple[str, ...]) -> tuple[str, ...]:
        for release in releases:
            if not TF_VERSION.fullmatch(release) or release.count(".") != 2:
                raise ValueError(f"release {release!r} is not X.Y.Z")
        return tuple(sorted(releases, key=version_key))

    @field_validator("python")
    @classmethod
    def _pythons(cls, pythons: tuple[str, ...]) -> tuple[str, ...]:
        for python in pythons:
            if not PYTHON_VERSION.fullmatch(python):
                raise ValueError(f"Python {python!r} is not 3.X")
        return tuple(sorted(pythons, key=version_key))

    @property
    def latest(self) -> str:
        return self.releases[-1]

    @model_validator(mode="after")
    def _gpu_has_cuda(self) -> "TfMinor":
        if self.and_cuda is None and self.cuda_image is None:
            raise ValueError("without tensorflow[and-cuda], GPU cells need an official -gpu tag")
        return self

    @property
    def cuda_image(self) -> Optional[str]:
        """The official image whose CUDA/cuDNN GPU cells use when there is no `[and-cuda]`."""
        tag = self.docker.newest_gpu_tag if self.docker else None
        return f"{OFFICIAL_IMAGE}:{tag}" if tag else None

    def keras_for(self, python: str) -> Optional[str]:
        return self.keras_by_python.get(python, self.keras)


class CompatTable(RootModel[dict[str, TfMinor]]):
    """TF minor ("2.15") → its facts, in version order."""

    @field_validator("root")
    @classmethod
    def _minors(cls, table: dict[str, TfMinor]) -> dict[str, TfMinor]:
        for minor, entry in table.items():
            if not re.fullmatch(r"\d+\.\d+", minor) or any(
                minor_of(r) != minor for r in entry.releases
            ):
                raise ValueError(f"{minor}: key must be the minor of every release")
        return dict(sorted(table.items(), key=lambda item: version_key(item[0])))

    def minors(self) -> tuple[str, ...]:
        return tuple(self.root)

    def first_minor(self, has: Callable[[TfMinor], bool]) -> str:
        """The oldest minor with a property (Keras 3, `[and-cuda]`), for reasons and docs."""
        return next(minor for minor, entry in self.root.items() if has(entry))

    def resolve(self, spec: str) -> tuple[TfMinor, str]:
        """`2.15` → (its entry, "2.15.1"); `2.15.0` → (its entry, "2.15.0").

        Raises ValueError with a one-line message naming the valid choices: the config validator
        shows it as is, so the planner and the config never disagree on what exists.
        """
        if not TF_VERSION.fullmatch(spec):
            raise ValueError(
                f"invalid TensorFlow version {spec!r}; write a minor such as 2.21 "
                f"or a release such as 2.21.0"
            )
        entry = self.root.get(minor_of(spec))
        if entry is None:
            raise ValueError(
                f"unknown TensorFlow minor {minor_of(spec)!r}; "
                f"choose from {', '.join(self.minors())}"
            )
        if spec == minor_of(spec):
            return entry, entry.latest
        if spec not in entry.releases:
            raise ValueError(
                f"TensorFlow {spec} is not a final release; "
                f"{minor_of(spec)} has {', '.join(entry.releases)}"
            )
        return entry, spec


# libyaml's C parser when PyYAML was built with it: every `matrix` command reads this table at
# start, and the pure-Python parser is the slow part of that.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@lru_cache(maxsize=1)
def load_table() -> CompatTable:
    """The shipped table (validated; a broken table is a bug, so pydantic's error is fine)."""
    text = resources.files("matrix.plan").joinpath("compat.yaml").read_text(encoding="utf-8")
    return CompatTable.model_validate(yaml.load(text, Loader=SAFE_LOADER))


def markdown(table: CompatTable) -> str:
    """docs/compat.md: the table a user reads, generated so it cannot drift from the data."""
    and_cuda_since = table.first_minor(lambda entry: entry.and_cuda is not None)
    lines = [
        "# TensorFlow compatibility table",
        "",
        "Generated from [`matrix/plan/compat.yaml`](../matrix/compat.yaml) by",
        "`python -m matrix.plan.compat > docs/compat.md`; edit the YAML, not this file.",
        "A minor (`--tf 2.15`) means its latest release, and Python `auto` the newest one listed",
        "(for GPU cells, the newest that can install).",
        f"The harness needs Python >= {REQUIRES_PYTHON}, so cells on an older Python are skipped.",
        "",
        f"GPU cells of TF < {and_cuda_since} take only CUDA and cuDNN from the newest official "
        "`-gpu` image of their minor:",
        f"they install Python {CUDA_IMAGE_PYTHON} from the image's Ubuntu, and the TF release "
        "into a venv.",
        "Later ones install `tensorflow[and-cuda]` on a `base_images` image.",
        "",
        "| TF | releases | Python | Keras | tf-keras | pins | CUDA / cuDNN "
        "| `[and-cuda]` | official `-gpu` image (its Python) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for minor, e in table.root.items():
        keras = f"`{e.keras}`" if e.keras else "bundled"
        keras += "".join(f" (py{py}: `{req}`)" for py, req in e.keras_by_python.items())
        pins = [*e.constraints, *([e.litert] if e.litert else [])]
        gpu_tag = e.docker.newest_gpu_tag if e.docker else None
        image = f"`{gpu_tag}` ({e.docker.python})" if e.docker and gpu_tag else "—"
        cells = [
            minor,
            ", ".join(e.releases),
            span(e.python),
            keras,
            f"`{e.tf_keras}`" if e.tf_keras else "—",
            ", ".join(f"`{pin}`" for pin in pins) or "—",
            f"{e.cuda} / {e.cudnn}",
            _and_cuda_cell(e.and_cuda),
            image,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Notes", ""]
    for minor, e in table.root.items():
        lines += [f"- **{minor}**: {note}" for note in e.notes]
    return "\n".join(lines) + "\n"


def _and_cuda_cell(and_cuda: Optional[AndCuda]) -> str:
    if and_cuda is None:
        return "no"
    broken = [f"not py{py}" for py in and_cuda.broken_python]
    broken += [f"not {release}" for release in and_cuda.broken_release]
    return "yes" + (f" ({', '.join(broken)})" if broken else "")


if __name__ == "__main__":
    print(markdown(load_table()), end="")
