"""`matrix doctor`: what this host can run, on one screen, and how to fix what it cannot.

A sweep that finds out after an hour that GPU cells were skipped, that `cold` trials were all
`unsupported` or that the disk filled up has wasted the hour. Each check here is one small
function returning a `Check`, so the same facts the command prints can be tested one by one;
the checks probe for real (a daemon ping, mincore on a real file, a request to the real index)
rather than guess from configuration, because a guess is what fails later.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import requests
from rich.table import Table
from rich.text import Text

from harness import REQUIRES_PYTHON, cache
from matrix.build import pipsettings
from matrix.build.images import docker_client
from matrix.build.venvs import uv_command
from matrix.errors import EnvironmentFailure, ExitCode
from matrix.execute import hostdrop
from matrix.plan.compat import load_table, span, version_key
from matrix.plan.pythons import find_pythons
from matrix.results.reader import short_reason

Status = Literal["ok", "warn", "fail"]
STYLES: dict[str, str] = {"ok": "green", "warn": "yellow", "fail": "bold red"}

MIN_FREE_GIB = 10  # one TF image is ~2 GiB, a full sweep's artifacts a few more
PROBE_BYTES = 1 << 20  # the mincore/fadvise probe file: 256 pages, written and gone in ms
INDEX_TIMEOUT_S = (3.0, 10.0)  # (connect, read): a dead index must not stall the screen
PYPI = "https://pypi.org/simple"
PROJECT = "tensorflow-cpu"  # what every CPU image installs
# A final release in a PEP 503 page's file names (`tensorflow_cpu-2.21.0-cp311-…whl`).
RELEASE_FILE = re.compile(r"tensorflow[-_.]cpu-(\d+(?:\.\d+)*)-", re.IGNORECASE)
ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")
NVIDIA_TOOLKIT = (
    "install the NVIDIA Container Toolkit (https://docs.nvidia.com/datacenter/"
    "cloud-native/container-toolkit/latest/install-guide.html) and restart Docker"
)
NO_DAEMON = "unknown: the Docker daemon does not answer"
SEE_DOCKER = "fix the docker line first"


@dataclass(frozen=True)
class Check:
    """One line of the screen: what was checked, its verdict, what was found, how to fix it."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def run_checks(results_dir: Path, reports_dir: Path) -> list[Check]:
    """Every check, in screen order; the daemon is asked once and its info shared."""
    docker_line, info = check_docker()
    return [
        docker_line,
        check_gpu_runtime(info),
        check_page_cache(hostdrop.route(), info),
        check_cache_control(results_dir),
        check_disk(
            "disk: results",
            results_dir,
            "`matrix prune --keep N` keeps only the "
            "newest N runs, or move --results-dir to a larger disk",
        ),
        check_disk(
            "disk: reports",
            reports_dir,
            "delete old reports/<run-id>/ folders "
            "(`matrix prune --keep N`), or write them elsewhere with --out",
        ),
        check_docker_disk(info),
        check_pythons(find_pythons()),
        check_uv(),
        check_index(),
    ]


def check_docker() -> tuple[Check, dict[str, Any] | None]:
    """The daemon's version, and its `docker info` for the lines that need it (None: no answer)."""
    try:
        client = docker_client()
    except EnvironmentFailure as exc:
        problem, _, fix = str(exc).partition(": ")
        return Check("docker", "fail", problem, fix or str(exc)), None
    try:
        version, info = client.version(), client.info()
    finally:
        client.close()
    detail = (
        f"Docker Engine {version['Version']} (API {version['ApiVersion']}), "
        f"images in {info.get('DockerRootDir', '?')}"
    )
    return Check("docker", "ok", detail), info


def check_gpu_runtime(info: Mapping[str, Any] | None) -> Check:
    """GPU cells need the daemon's `nvidia` runtime; without it they are skipped, not failed."""
    if info is None:
        return Check("gpu runtime", "warn", NO_DAEMON, SEE_DOCKER)
    runtimes = sorted(info.get("Runtimes", {}))
    if "nvidia" in runtimes:
        return Check("gpu runtime", "ok", "nvidia runtime present: GPU cells can run")
    return Check(
        "gpu runtime",
        "warn",
        f"no nvidia runtime (runtimes: {', '.join(runtimes) or 'none'}): GPU cells "
        "will be skipped, CPU cells still run",
        NVIDIA_TOOLKIT,
    )


def check_page_cache(route: str | None, info: Mapping[str, Any] | None) -> Check:
    """Which route `matrix run` will take to drop the page cache for `cold` trials.

    `route` is `matrix.execute.hostdrop.route()`: `root` (this process writes
    /proc/sys/vm/drop_caches),
    `sudo` (the one-command sudoers grant, Docker only: the host drops it on each container's
    request) or None. A container never drops it itself (that privilege is the host's root).
    `cold-model` evicts only the model's files and needs none of them, so no route is a warning.
    """
    backend = "venv" if info is None else "docker"
    auto = f"--backend auto picks {backend} here"
    eviction = "`cold-model` (targeted eviction of the model's files) runs anyway"
    if route == "root":
        how = (
            "this host drops the page cache on each container's request"
            if backend == "docker"
            else f"the harness drops the page cache itself ({cache.DROP_CACHES})"
        )
        return Check("cold cache", "ok", f"root here; {auto}: {how}")
    if route == "sudo" and backend == "docker":
        return Check(
            "cold cache",
            "ok",
            f"not root, but sudo runs `{' '.join(hostdrop.drop_command())}` without a "
            f"password; {auto}: this host drops the page cache on each container's "
            "request (--backend venv or local: `cold` trials need root)",
        )
    if backend == "docker":
        return Check(
            "cold cache",
            "warn",
            f"not root and no sudoers grant to drop the page cache; {auto}: `cold` "
            f"trials will be recorded unsupported. {eviction}",
            f"grant exactly that one command: echo '{hostdrop.sudoers_line()}' | sudo "
            f"tee {hostdrop.SUDOERS_FILE} && sudo chmod 0440 {hostdrop.SUDOERS_FILE}; "
            "or run matrix as root",
        )
    return Check(
        "cold cache",
        "warn",
        f"not root, so {cache.DROP_CACHES} is not writable: `cold` trials will be "
        f"recorded unsupported. {eviction}",
        "run matrix as root (e.g. sudo), or use --cache cold-model,warm",
    )


def check_cache_control(folder: Path) -> Check:
    """mincore and posix_fadvise, tried on a real file where artifacts are written.

    They prove every cold trial and evict for `cold-model`; on tmpfs eviction does nothing
    (the cache *is* the file), which only a real try shows.
    """
    where = existing_parent(folder)
    try:
        with tempfile.NamedTemporaryFile(dir=where, prefix=".matrix-doctor-") as probe:
            probe.write(os.urandom(PROBE_BYTES))
            probe.flush()
            files = [probe.name]
            cache.read_all(files)
            warm = cache.residency(files)
            cache.evict(files)
            cold = cache.residency(files)
    except OSError as exc:
        return Check(
            "mincore/fadvise",
            "fail",
            f"cannot probe the page cache in {where}: {exc}",
            "cold proofs and `cold-model` need Linux mincore(2) and posix_fadvise(2) "
            "on a writable --results-dir",
        )
    found = f"in {where}: {warm:.0%} resident after a read, {cold:.0%} after eviction"
    if warm < cache.WARM_MIN_RESIDENT or cold > cache.COLD_MAX_RESIDENT:
        return Check(
            "mincore/fadvise",
            "warn",
            f"eviction does not take {found}: cold trials there will be recorded invalid",
            "put --results-dir on a disk filesystem (not tmpfs)",
        )
    return Check("mincore/fadvise", "ok", f"both work {found}")


def check_disk(name: str, folder: Path, fix: str, min_free_gib: float = MIN_FREE_GIB) -> Check:
    """Free space on the filesystem holding `folder` (or its nearest existing parent)."""
    where = existing_parent(folder)
    free_gib = shutil.disk_usage(where).free / 2**30
    detail = f"{free_gib:.1f} GiB free in {where}"
    if free_gib < min_free_gib:
        return Check(name, "warn", f"{detail} (under {min_free_gib:g} GiB)", fix)
    return Check(name, "ok", detail)


def check_docker_disk(info: Mapping[str, Any] | None) -> Check:
    """Free space where the daemon keeps images, if that folder is on this machine."""
    name = "disk: docker"
    if info is None:
        return Check(name, "warn", NO_DAEMON, SEE_DOCKER)
    root = Path(info.get("DockerRootDir", ""))
    if not root.is_absolute() or not root.exists():
        return Check(
            name,
            "warn",
            f"Docker's image folder {root} is not on this machine",
            "check free space on the Docker host: `docker system df`",
        )
    return check_disk(
        name,
        root,
        "`docker image prune -a` removes unused images "
        "(old tf-load-matrix tags too); `docker builder prune` the build cache",
    )


def check_pythons(pythons: Mapping[str, Path]) -> Check:
    """Which TF minors each Python on this host can run: the venv backend's cells."""
    table = load_table()
    lines, usable = [], False
    for version, path in pythons.items():
        minors = [minor for minor, entry in table.root.items() if version in entry.python]
        if version_key(version) < version_key(REQUIRES_PYTHON):
            runs = f"too old for the harness (needs >= {REQUIRES_PYTHON})"
        elif minors:
            runs, usable = f"TF {span(tuple(minors))}", True
        else:
            runs = "no TF release in the compat table"
        lines.append(f"{version} ({path}): {runs}")
    if usable:
        return Check("pythons", "ok", "; ".join(lines))
    return Check(
        "pythons",
        "warn",
        "; ".join(lines) or "no python3.X on PATH: the venv backend has no cell",
        "install a Python that TensorFlow supports (e.g. `apt-get install python3.11`); "
        "the docker backend needs none",
    )


def check_uv() -> Check:
    """uv found as the venv backend finds it: that backend creates and fills environments
    with it, so without uv it has no cell (the docker and local backends do not need it)."""
    command = uv_command()
    try:
        version = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return Check(
            "uv",
            "warn",
            f"no uv beside {sys.executable} or on PATH: the venv backend cannot "
            "create environments (docker and local backends do not need it)",
            f"`{sys.executable} -m pip install uv`",
        )
    return Check(
        "uv",
        "ok",
        f"{version} ({' '.join(command)}): the venv backend installs environments with it",
    )


def check_index(timeout: tuple[float, float] = INDEX_TIMEOUT_S) -> Check:
    """The newest tensorflow-cpu release on the http(s) indexes that image builds will use.

    Those are the host's pip settings as pipsettings passes them to a build (index URLs, trusted
    hosts, proxy), read through the CA bundle pip itself would use.
    """
    options = pipsettings.host_pip_options()
    kept = dict(pipsettings.container_settings(options, os.environ).options)
    indexes = [*kept.get("index-url", PYPI).split(), *kept.get("extra-index-url", "").split()]
    trusted = set(kept.get("trusted-host", "").split())
    proxy = kept.get("proxy")
    newest: dict[str, str] = {}
    errors: list[str] = []
    cert = options.get("cert") or True  # pip's own CA option; requests reads the CA variables
    for index in indexes:
        verify = False if urlsplit(index).hostname in trusted else cert
        try:
            newest[index] = newest_release(index, timeout, verify, proxy)
        except (requests.RequestException, ValueError) as exc:
            errors.append(f"{public(index)}: {_error_phrase(exc)}")
    if not newest:
        return Check(
            "package index",
            "fail",
            f"no {PROJECT} release from " + "; ".join(errors),
            "set PIP_INDEX_URL (or index-url in pip.conf) to an index this host can "
            "reach; behind a proxy set https_proxy, with a private CA set PIP_CERT",
        )
    best = max(newest.values(), key=version_key)
    where = ", ".join(public(index) for index, found in newest.items() if found == best)
    if errors:
        return Check(
            "package index",
            "warn",
            f"{PROJECT} {best} at {where}; unreachable: " + "; ".join(errors),
            "remove or fix the unreachable extra-index-url",
        )
    return Check("package index", "ok", f"{PROJECT} {best} (newest) at {where}")


def newest_release(
    index: str, timeout: tuple[float, float], verify: bool | str, proxy: str | None
) -> str:
    """The newest final release of tensorflow-cpu on a PEP 503 index; raises if it has none."""
    response = requests.get(
        f"{index.rstrip('/')}/{PROJECT}/",
        timeout=timeout,
        verify=verify,
        proxies={"http": proxy, "https": proxy} if proxy else None,
        headers={"Accept": "text/html"},
    )
    response.raise_for_status()
    releases = set(RELEASE_FILE.findall(response.text))
    if not releases:
        raise ValueError(f"its {PROJECT} page lists no release")
    return max(releases, key=version_key)


def public(url: str) -> str:
    """The URL without user:password, which index URLs may carry and a screen must not show."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _error_phrase(exc: Exception) -> str:
    """One short phrase: requests' connection errors nest three exceptions in one long line."""
    errno = ERRNO.search(str(exc))
    return f"{type(exc).__name__} ({errno[0]})" if errno else short_reason(exc, 200)


def existing_parent(folder: Path) -> Path:
    """The folder, or its nearest parent that exists: doctor creates nothing."""
    folder = folder.absolute()
    while not folder.exists():
        folder = folder.parent
    return folder


def checks_table(checks: list[Check]) -> Table:
    """The screen: one row per check; plain Text, so `[and-cuda]` or a path is never markup."""
    table = Table("check", "status", "detail", "fix")
    for column in table.columns[2:]:
        column.overflow = "fold"  # a URL or path is split over lines, never cut short
    for check in checks:
        table.add_row(
            check.name,
            Text(check.status, style=STYLES[check.status]),
            Text(check.detail),
            Text(check.fix),
        )
    return table


def summary_line(checks: list[Check]) -> str:
    counts = {status: sum(c.status == status for c in checks) for status in STYLES}
    verdict = (
        "some check failed: see its fix"
        if counts["fail"]
        else "this host can run the matrix (warnings say what is skipped or slower)"
    )
    return f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failed: {verdict}"


def exit_code(checks: list[Check]) -> ExitCode:
    return ExitCode.ENVIRONMENT_ERROR if any(c.status == "fail" for c in checks) else ExitCode.OK
