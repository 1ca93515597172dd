"""Build the image of an environment, once: its tag names the content it was built from.

`ensure_image` writes the build context, and builds only when no image has that content's tag
(a second run of the same matrix builds nothing). The base image is part of that content, so it
must be here (or be pulled) even when nothing is built. A build that fails is returned as a result,
never raised: one broken environment must not stop a sweep over the others. So are a push to a
registry and a pull from one (`--registry`: the nodes of a Ray cluster pull what the driver built).
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests
from docker.utils import parse_repository_tag

from harness.records import open_regular
from matrix.build import TAIL_LINES, pipsettings
from matrix.build.dockerfile import image_tag, write_build_context
from matrix.errors import EnvironmentFailure
from matrix.plan.environments import Environment

LINE_CHARS = 240  # each clipped to this: pip's "(from versions: …)" lists every release

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the classic builder colours a step's stderr
_STEP = re.compile(r"Step (\d+/\d+) : (\S+)")
_BOOKKEEPING = re.compile(r"\s*(---> |Removing intermediate container )")
_FAILED_COMMAND = re.compile(r"The command '.*' returned")  # the whole RUN script, quoted


@dataclass(frozen=True)
class ImageResult:
    """The image of one environment, or why there is none."""

    env_id: str
    tag: str
    built: bool  # False when an image with this tag already existed (or the build failed)
    seconds: float
    status: str  # "ok" | "error"
    reason: str = ""  # one line, for `error`
    image_id: str = ""  # sha256:… of the image, for `ok`


def docker_client() -> docker.DockerClient:
    """A client of a daemon that answers, or EnvironmentFailure saying how to get one."""
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise EnvironmentFailure(
            f"cannot reach the Docker daemon at {host}: start it (e.g. 'sudo dockerd &' or "
            "'systemctl start docker') or use --backend venv (no Docker needed)"
        ) from None
    return client


def _first_line(error: Exception) -> str:
    lines = str(getattr(error, "explanation", None) or error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _image_exists(client: docker.DockerClient, reference: str) -> bool:
    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        return False
    return True


def _base_image_id(client: docker.DockerClient, base_image: str) -> tuple[str, str]:
    """(its ID, "") when the base image is here or can be pulled, else ("", a one-line reason)."""
    try:
        return client.images.get(base_image).id, ""
    except docker.errors.ImageNotFound:
        pass
    repository, tag = parse_repository_tag(base_image)
    try:
        return client.images.pull(repository, tag=tag).id, ""
    except docker.errors.DockerException as error:
        return "", (
            f"base image {base_image} is not available locally and cannot be pulled "
            f"({_first_line(error)}); build it or set base_images in matrix.yaml"
        )


class _Transcript:
    """What a build printed: the step it is at, and that step's own last output lines."""

    def __init__(self) -> None:
        self.step = "the start"
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    def add(self, line: str) -> None:
        step = _STEP.match(line)
        if step:
            self.step = f"step {step[1]} ({step[2]})"
            self.tail.clear()
        elif not _BOOKKEEPING.match(line):
            self.tail.append(line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + "…")

    def reason(self, error: str) -> str:
        """One line: where it failed, the daemon's error (without the RUN script), the output."""
        error = _FAILED_COMMAND.sub("the command returned", " ".join(error.split()))
        output = f"; output: {' | '.join(self.tail)}" if self.tail else ""
        return f"build failed at {self.step}: {error}{output}"


def _follow(
    events: Iterable[dict[str, Any]], log: IO[str], on_line: Callable[[str], None] | None
) -> str:
    """Copy the build's event stream to `log` and `on_line`; return a reason if it failed."""
    transcript = _Transcript()
    for event in events:
        error = event.get("error") or event.get("errorDetail", {}).get("message")
        text = pipsettings.redact(_ANSI.sub("", event.get("stream") or event.get("status") or ""))
        log.write(text if text.endswith("\n") or not text else text + "\n")
        for line in filter(None, (part.rstrip() for part in text.splitlines())):
            transcript.add(line)
            if on_line:
                on_line(line)
        if error:
            error = pipsettings.redact(error)
            log.write(f"ERROR: {error}\n")
            return transcript.reason(error)
    return ""


def _build(
    client: docker.DockerClient,
    context: Path,
    tag: str,
    log_path: Path,
    on_line: Callable[[str], None] | None,
) -> str:
    """Build `context` as `tag`, logging to `log_path`; "" on success, else a one-line reason."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_fd = open_regular(str(log_path), os.O_WRONLY | os.O_CREAT, truncate=True)
    with open(log_fd, "w", encoding="utf-8", buffering=1) as log:
        try:
            with pipsettings.serve(pipsettings.host_pip_settings()) as settings_url:
                error = _follow(
                    client.api.build(
                        path=str(context),
                        tag=tag,
                        buildargs={"PIP_SETTINGS_URL": settings_url},
                        network_mode="host",
                        pull=False,
                        rm=True,
                        forcerm=True,
                        decode=True,
                    ),
                    log,
                    on_line,
                )
        except (
            docker.errors.DockerException,
            requests.exceptions.RequestException,
            OSError,
            ValueError,
        ) as exc:  # ValueError: a CA bundle that is not text
            error = pipsettings.redact(f"build failed: {_first_line(exc)}")
            log.write(f"ERROR: {error}\n")
    return f"{error} (log: {log_path})" if error else ""


def ensure_image(
    client: docker.DockerClient,
    env: Environment,
    build_root: Path,
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
) -> ImageResult:
    """The image of `env` on the engine `client`, built from `<build_root>/<env.id>/` unless its
    tag already exists.

    The build log goes to `log_path` (keep it outside `build_root/<env.id>`, which is the
    context) and each output line to `on_line`, for a progress view.
    """
    start = time.monotonic()
    context = write_build_context(env, build_root)
    base_id, reason = _base_image_id(client, env.base_image)
    tag = image_tag(env, context, base_id)
    built = not reason and not _image_exists(client, tag)
    if built:
        reason = _build(client, context, tag, Path(log_path), on_line)
    return ImageResult(
        env_id=env.id,
        tag=tag,
        built=built and not reason,
        seconds=round(time.monotonic() - start, 3),
        status="error" if reason else "ok",
        reason=reason,
        image_id="" if reason else client.images.get(tag).id,
    )


def registry_reference(registry: str, tag: str) -> str:
    """Where `tag` lives in `registry` (`HOST:PORT[/prefix]`): `HOST:PORT/tf-load-matrix:<tag>`.
    The content tag names the same content on every machine, so the name does too."""
    return f"{registry}/{tag}"


def push_image(
    client: docker.DockerClient, image: ImageResult, registry: str, log_path: Path
) -> ImageResult:
    """`image` pushed to `registry` for the nodes of a cluster to pull (its log appended to
    `log_path`); the result names the registry's reference, or why the push failed.

    The registry's name is removed here once pushed (the content tag keeps the image): this
    engine does not collect a second name per image, and a node that shares it really pulls.
    Credentials are the engine's own (`docker login`), never passed through `matrix`.
    """
    start = time.monotonic()
    reference = registry_reference(registry, image.tag)
    repository, tag = parse_repository_tag(reference)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        client.images.get(image.tag).tag(repository, tag)
        try:
            events = client.api.push(repository, tag=tag, stream=True, decode=True)
            error = _transfer(events, log_path)
        finally:
            client.images.remove(reference)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        error = _first_line(exc)
    host = registry.split("/")[0]
    reason = (
        f"pushing {image.tag} to the registry {registry} failed ({error}); check that it answers "
        f"(curl http://{host}/v2/), that this Docker engine may push there (TLS, or dockerd's "
        f"insecure-registries for one not on localhost) and, if it asks, `docker login {host}`"
        if error
        else ""
    )
    return ImageResult(
        env_id=image.env_id,
        tag=reference,
        built=image.built,
        seconds=round(image.seconds + time.monotonic() - start, 3),
        status="error" if error else "ok",
        reason=reason,
        image_id=image.image_id,
    )


def pull_image(
    client: docker.DockerClient, env: Environment, reference: str, log_path: Path
) -> ImageResult:
    """The image of `env` pulled from a registry by the exact `reference` the driver pushed,
    never built here (its log written to `log_path`); a failure is returned as the reason."""
    start = time.monotonic()
    repository, tag = parse_repository_tag(reference)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    os.close(open_regular(str(log_path), os.O_WRONLY | os.O_CREAT, truncate=True))
    try:
        error = _transfer(client.api.pull(repository, tag=tag, stream=True, decode=True), log_path)
        image_id = "" if error else client.images.get(reference).id
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        error, image_id = _first_line(exc), ""
    host = reference.split("/")[0]
    reason = (
        f"pulling {reference} from the registry {host} failed ({error}); check that it answers "
        f"from this node (curl http://{host}/v2/), that this node's Docker engine may pull from "
        f"it (TLS, or dockerd's insecure-registries) and, if it asks, `docker login {host}`"
        if error
        else ""
    )
    return ImageResult(
        env_id=env.id,
        tag=reference,
        built=False,
        seconds=round(time.monotonic() - start, 3),
        status="error" if error else "ok",
        reason=reason,
        image_id=image_id,
    )


def _transfer(events: Iterable[dict[str, Any]], log_path: Path) -> str:
    """Append a push's or pull's events to `log_path`, without the progress bars; the
    daemon's error ("" when none)."""
    fd = open_regular(str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    with open(fd, "w", encoding="utf-8", buffering=1) as log:
        for event in events:
            error = event.get("error") or event.get("errorDetail", {}).get("message")
            if error:
                log.write(f"ERROR: {error}\n")
                return " ".join(str(error).split())
            if event.get("status") and not event.get("progress"):
                layer = f"{event['id']}: " if event.get("id") else ""
                log.write(f"{layer}{event['status']}\n")
    return ""
