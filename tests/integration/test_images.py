"""Images on the real Docker engine: content-hash tags, no rebuild, no pip setting left behind.

The one real build (TF from the package index) is shared with the run tests through
tests/integration/conftest.py; every other build here is small or fails within seconds.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO

import docker.errors
import pytest
from docker import DockerClient

import harness
from matrix.build.dockerfile import LABEL_ENV_ID, LABEL_VERSION, image_tag
from matrix.build.images import ImageResult, docker_client, ensure_image
from matrix.build.pipsettings import (
    SETTINGS_DIR,
    PipSettings,
    container_settings,
    host_pip_settings,
    serve,
)
from matrix.errors import EnvironmentFailure
from matrix.plan.environments import Environment

PEM = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"]+")
SETTINGS_URL = re.compile(r"http://127\.0\.0\.1:\d+/[\w-]{43}/pip-settings\.json")
PIP_CONF_PATH = re.compile(r"(root|etc|tmp)/(.*/)?pip\.(conf|ini)")


# --- host settings -> container settings (no Docker) ---------------------------------------


def test_only_what_a_container_can_use_is_kept(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n")
    settings = container_settings(
        {
            "index-url": "https://user:secret@mirror.example/simple",
            "extra-index-url": "file:///opt/pypi/simple https://extra.example/simple",
            "find-links": "/opt/wheels",
            "constraint": "/etc/xdg/pip/constraints.txt",
            "trusted-host": "mirror.example\nindex-url=http://evil/",
            "default-timeout": "180",
            "cert": str(bundle),
        },
        environ={"HTTPS_PROXY": "http://proxy.example:3128"},
    )
    assert dict(settings.options) == {
        "index-url": "https://user:secret@mirror.example/simple",
        "extra-index-url": "https://extra.example/simple",
        "trusted-host": "mirror.example",
        "timeout": "180",
        "proxy": "http://proxy.example:3128",
    }
    conf = settings.files()["pip.conf"]
    assert f"cert = {SETTINGS_DIR}/ca.pem" in conf
    assert "/opt" not in conf and "evil" not in conf
    assert settings.files()["ca.pem"] == bundle.read_text()


def test_ca_bundle_from_requests_variable_when_pip_names_none(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("PEM")
    settings = container_settings({}, environ={"REQUESTS_CA_BUNDLE": str(bundle)})
    assert settings.ca_bundle == "PEM"
    assert not container_settings({"cert": str(tmp_path / "missing.pem")}, environ={})


def test_settings_are_served_under_their_secret_path_only_while_the_block_runs() -> None:
    settings = PipSettings(options=(("index-url", "https://mirror.example/simple"),))
    with serve(settings) as url:
        assert SETTINGS_URL.fullmatch(url)
        with urllib.request.urlopen(url) as answer:
            assert json.load(answer) == settings.files()
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url.rsplit("/", 2)[0] + "/guess/pip-settings.json")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


def test_no_settings_no_server() -> None:
    with serve(PipSettings()) as url:
        assert url == ""


# --- the real image ----------------------------------------------------------------------


def test_image_is_tagged_by_content_and_labelled(
    cpu_env: Environment,
    cpu_image: ImageResult,
    docker_engine: DockerClient,
    image_build_root: Path,
) -> None:
    context = image_build_root / cpu_env.id
    base_id = docker_engine.images.get(cpu_env.base_image).id
    assert cpu_image.tag == image_tag(cpu_env, context, base_id) != image_tag(cpu_env, context)
    image = docker_engine.images.get(cpu_image.tag)
    assert image.id == cpu_image.image_id
    assert image.labels[LABEL_ENV_ID] == cpu_env.id
    assert image.labels[LABEL_VERSION] == harness.__version__


def test_an_unchanged_environment_is_not_rebuilt(
    cpu_env: Environment,
    cpu_image: ImageResult,
    docker_engine: DockerClient,
    image_build_root: Path,
    tmp_path: Path,
) -> None:
    again = ensure_image(docker_engine, cpu_env, image_build_root, tmp_path / "again.log")
    assert (again.status, again.built, again.tag, again.image_id) == (
        "ok",
        False,
        cpu_image.tag,
        cpu_image.image_id,
    )
    assert again.seconds < 5
    assert not (tmp_path / "again.log").exists()


def test_harness_runs_in_the_image_without_network(
    cpu_image: ImageResult, docker_engine: DockerClient
) -> None:
    output = docker_engine.containers.run(
        cpu_image.tag, ["--help"], network_mode="none", remove=True
    ).decode()
    assert "usage: python -m harness" in output


def test_a_rebuilt_base_image_is_not_reused(
    cpu_env: Environment, docker_engine: DockerClient, tmp_path: Path
) -> None:
    """A base rebuilt under the same name (`build-base-image.sh bookworm`) rebuilds what uses it."""
    base = "tf-load-matrix/test-base:rebuilt"
    env = replace(cpu_env, base_image=base, packages=())
    docker_engine.images.get(cpu_env.base_image).tag(base)
    tags = []
    try:
        first = ensure_image(docker_engine, env, tmp_path / "a", tmp_path / "a.log")
        tags.append(first.tag)
        container = docker_engine.containers.create(base, ["true"])
        try:  # the same name now points at another image
            container.commit(*base.split(":"), changes=["LABEL rebuilt=1"])
        finally:
            container.remove()
        second = ensure_image(docker_engine, env, tmp_path / "b", tmp_path / "b.log")
        tags.append(second.tag)
        assert (first.status, second.status, second.built) == ("ok", "ok", True)
        assert second.tag != first.tag
    finally:
        for tag in [*tags, base]:
            docker_engine.images.remove(tag)


def _host_secrets(docker_engine: DockerClient, base_image: str) -> tuple[PipSettings, list[str]]:
    """The host's pip settings, and strings that must not be found in any image.

    These are its http(s) option values and one line of each certificate the host's CA bundle
    adds to the base image's own (the site's private CAs: public ones are in every image).
    """
    settings = host_pip_settings()
    base_bundle = docker_engine.containers.run(
        base_image,
        ["cat", "/etc/ssl/certs/ca-certificates.crt"],
        network_mode="none",
        remove=True,
    ).decode()
    public = {"".join(cert.split()) for cert in PEM.findall(base_bundle)}
    extra = [c for c in PEM.findall(settings.ca_bundle) if "".join(c.split()) not in public]
    needles = [cert.splitlines()[len(cert.splitlines()) // 2] for cert in extra]
    needles += [v for _, value in settings.options for v in value.split() if URL.match(v)]
    return settings, [*needles, f"cert = {SETTINGS_DIR}"]


def test_history_holds_no_pip_setting(
    cpu_env: Environment, cpu_image: ImageResult, docker_engine: DockerClient
) -> None:
    settings, needles = _host_secrets(docker_engine, cpu_env.base_image)
    image = docker_engine.images.get(cpu_image.tag)
    history = "\n".join(layer["CreatedBy"] for layer in image.history())
    for needle in [*needles, "BEGIN CERTIFICATE", *settings.files()["pip.conf"].splitlines()[1:]]:
        assert needle not in history
    assert [url for url in URL.findall(history) if not SETTINGS_URL.fullmatch(url)] == []
    config_env = "\n".join(image.attrs["Config"]["Env"])
    assert "PIP_" not in config_env and "proxy" not in config_env.lower()


class _Chunks(io.RawIOBase):
    """A readable file over an iterator of byte chunks: `export()` streamed, never on disk."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size], self._pending = self._pending[:size], self._pending[size:]
        return size


def _contains(file: IO[bytes], needles: list[bytes], block: int = 1 << 22) -> bool:
    """Whether any needle occurs in `file`, read in blocks that overlap by a needle's length."""
    overlap = max(map(len, needles)) - 1
    carry = b""
    while data := file.read(block):
        window = carry + data
        if any(needle in window for needle in needles):
            return True
        carry = window[-overlap:] if overlap else b""
    return False


def test_image_files_hold_no_pip_setting(
    cpu_env: Environment, cpu_image: ImageResult, docker_engine: DockerClient
) -> None:
    """No pip.conf where pip looks for one, no settings folder, no file with a host secret."""
    settings, needles = _host_secrets(docker_engine, cpu_env.base_image)
    patterns = [needle.encode() for needle in needles]
    if settings.ca_bundle:  # the search itself works: it finds them where they do belong
        assert _contains(io.BytesIO(settings.ca_bundle.encode()), patterns)
    settings_dir = SETTINGS_DIR.lstrip("/")
    leaks, scanned = [], set()
    container = docker_engine.containers.create(cpu_image.tag)
    try:
        stream = io.BufferedReader(_Chunks(container.export()), buffer_size=1 << 20)
        with tarfile.open(fileobj=stream, mode="r|", bufsize=1 << 20) as files:
            for member in files:
                if PIP_CONF_PATH.fullmatch(member.name) or member.name.startswith(settings_dir):
                    leaks.append(member.name)
                elif member.isfile():
                    scanned.add(member.name)
                    if _contains(files.extractfile(member), patterns):
                        leaks.append(member.name)
    finally:
        container.remove()
    assert leaks == []
    assert "opt/tf-load-matrix/harness/__main__.py" in scanned


# --- failures: one line, and results rather than exceptions -------------------------------


def test_no_daemon_is_one_line_saying_how_to_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = f"unix://{tmp_path}/no-daemon.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    with pytest.raises(EnvironmentFailure) as failure:
        docker_client()
    message = str(failure.value)
    assert message.startswith(f"cannot reach the Docker daemon at {host}: start it (e.g. ")
    assert message.endswith("or use --backend venv (no Docker needed)") and "\n" not in message
    assert failure.value.exit_code == 3


def test_missing_base_image_is_one_line_error(
    cpu_env: Environment, docker_engine: DockerClient, tmp_path: Path
) -> None:
    env = replace(cpu_env, python="3.8", base_image="python:3.8-slim", packages=())
    result = ensure_image(docker_engine, env, tmp_path / "contexts", tmp_path / "build.log")
    assert (result.status, result.built, result.image_id) == ("error", False, "")
    assert result.reason.startswith(
        "base image python:3.8-slim is not available locally and cannot be pulled ("
    )
    assert result.reason.endswith("); build it or set base_images in matrix.yaml")
    assert "\n" not in result.reason


def test_broken_pin_fails_fast_with_reason_and_log(
    cpu_env: Environment, docker_engine: DockerClient, tmp_path: Path
) -> None:
    containers_before = {c.id for c in docker_engine.containers.list(all=True)}
    env = replace(cpu_env, packages=("tensorflow-cpu==0.0.1",))
    lines: list[str] = []
    start = time.monotonic()
    result = ensure_image(
        docker_engine, env, tmp_path / "contexts", tmp_path / "logs" / "broken.log", lines.append
    )
    assert time.monotonic() - start < 120
    assert (result.status, result.built, result.image_id) == ("error", False, "")
    assert result.reason.startswith("build failed at step ")
    assert "No matching distribution found for tensorflow-cpu==0.0.1" in result.reason
    assert "\n" not in result.reason and str(tmp_path / "logs" / "broken.log") in result.reason
    assert "No matching distribution" in (tmp_path / "logs" / "broken.log").read_text()
    assert any(line.startswith("Step ") for line in lines)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_engine.images.get(result.tag)
    assert {c.id for c in docker_engine.containers.list(all=True)} == containers_before


def test_hostile_env_value_reaches_the_container_verbatim(
    cpu_env: Environment, docker_engine: DockerClient, tmp_path: Path
) -> None:
    """The Dockerfile parser, not only a shell, must read the quoted value back exactly."""
    value = 'a\'b "c" $HOME ${PATH} \\ ; rm -rf / #'
    env = replace(cpu_env, packages=(), env_vars=(("HOSTILE", value),))
    result = ensure_image(docker_engine, env, tmp_path / "contexts", tmp_path / "build.log")
    assert result.status == "ok", result.reason
    try:
        output = docker_engine.containers.run(
            result.tag,
            network_mode="none",
            remove=True,
            entrypoint=["python3", "-c", "import os; print(os.environ['HOSTILE'])"],
        ).decode()
    finally:
        docker_engine.images.remove(result.tag)
    assert output == value + "\n"
