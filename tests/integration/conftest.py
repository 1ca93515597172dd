"""Session fixtures of the end-to-end tests: the Docker daemon, one real CPU image, venv builds.

Take them as arguments (pytest finds them here); importing names from here would stop pytest
rewriting this module's asserts. The image
(current TF on the Debian base image, Python 3.11) is built at most once per session; its tag is
a content hash, so a later session on the same daemon reuses it without building. Without a
daemon or the base image the tests FAIL, saying what to start or build: CI (`.ci/run`) provides
both, and a suite that skips there would pass without testing anything.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import docker
import docker.errors
import pytest
import yaml

from matrix.build.images import ImageResult, docker_client, ensure_image
from matrix.errors import EnvironmentFailure
from matrix.plan.config import load_config
from matrix.plan.environments import Environment, expand
from tests.integration.docker_matrix import (
    BASE_IMAGE,
    FOUR_TF_YAML,
    MATRIX_YAML,
    OLD_BASE_IMAGE,
    matrix,
)

CPU_ENV = next(
    e
    for e in expand(load_config(None, yaml.safe_load(MATRIX_YAML)))[0]
    if e.id == "tf2.21-py3.11-cpu"
)


@pytest.fixture(scope="session")
def cpu_env() -> Environment:
    """Current TF on the Debian base image (Python 3.11): the environment `cpu_image` holds."""
    return CPU_ENV


@pytest.fixture(scope="session")
def docker_engine() -> docker.DockerClient:
    """A client of the running daemon, which has the Debian base image."""
    try:
        client = docker_client()
    except EnvironmentFailure as exc:
        pytest.fail(f"these tests need a Docker daemon: {exc}", pytrace=False)
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(
            f"these tests need the base image {BASE_IMAGE}: build it with "
            "`sudo dockerfiles/base/build-base-image.sh bookworm` (as .ci/run does)",
            pytrace=False,
        )
    return client


@pytest.fixture(scope="session")
def image_build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's build contexts are written (`<root>/<env id>/`)."""
    return tmp_path_factory.mktemp("image-contexts")


@pytest.fixture(scope="session")
def cpu_image(
    cpu_env: Environment,
    docker_engine: docker.DockerClient,
    image_build_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> ImageResult:
    """The image of `cpu_env`; its first build downloads TensorFlow (a minute or more)."""
    log = tmp_path_factory.mktemp("image-logs") / f"{cpu_env.id}.log"
    result = ensure_image(docker_engine, cpu_env, image_build_root, log)
    if result.status != "ok":
        pytest.fail(f"building {cpu_env.id} failed: {result.reason}", pytrace=False)
    return result


@pytest.fixture(scope="session")
def venv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the venv backend's virtual environments live (`<root>/venvs/<env id>-<hash>`),
    shared by the modules that run it: a TensorFlow venv takes minutes to make."""
    return tmp_path_factory.mktemp("venv-build")


class Sweep(NamedTuple):
    """A `matrix run` the tests share: its records, its report, how it ended and took."""

    run_dir: Path
    report: Path
    done: Any  # subprocess.CompletedProcess
    seconds: float


@pytest.fixture(scope="session")
def four_tf_sweep(
    docker_engine: docker.DockerClient,
    cpu_image: ImageResult,
    tmp_path_factory: pytest.TempPathFactory,
) -> Sweep:
    """`matrix run` over four TF minors (docker_matrix.FOUR_TF_YAML), as a user runs it; the
    longest test of the suite (three TensorFlow images to build), so the session runs it once."""
    try:
        docker_engine.images.get(OLD_BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(
            f"the four-TF sweep needs the base image {OLD_BASE_IMAGE}: build it with `sudo "
            "dockerfiles/base/build-base-image.sh bullseye` (as `make test` does)",
            pytrace=False,
        )
    cwd = tmp_path_factory.mktemp("four-tf")
    (cwd / "matrix.yaml").write_text(FOUR_TF_YAML)
    start = time.monotonic()
    done = matrix(cwd, "run", "--run-id", "four-tf", timeout=3600)
    return Sweep(
        cwd / "results" / "four-tf",
        cwd / "reports" / "four-tf" / "index.html",
        done,
        time.monotonic() - start,
    )


class Registry(NamedTuple):
    """A running Docker registry: its `HOST:PORT` and the log of every request it answered."""

    address: str
    log: Path


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A real Docker registry (Debian's docker-registry, distribution 2.8) on a free port of
    this machine, for `--registry`: dockerd pushes to one on localhost without TLS. Its
    storage (an image's compressed layers) is removed at teardown, not left to pytest."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail(
            "these tests need docker-registry: `make registry-ready` (apt-get install "
            "docker-registry), as `make test` does",
            pytrace=False,
        )
    root = tmp_path_factory.mktemp("registry")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    settings = {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {"filesystem": {"rootdirectory": str(root / "storage")}},
        "http": {"addr": address},
    }
    (root / "config.yml").write_text(yaml.safe_dump(settings))
    log = root / "registry.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [binary, "serve", str(root / "config.yml")], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://{address}/v2/", timeout=5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"docker-registry did not start; see {log}", pytrace=False)
                time.sleep(0.2)
        yield Registry(address, log)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(root / "storage", ignore_errors=True)
