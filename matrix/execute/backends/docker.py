"""The Docker backend: run the harness inside an environment's image, one fresh container each.

The container is what makes the numbers honest across environments: no network
(`--network none`), the artifacts on a named volume kept per run (so their storage is a real
Docker volume, and the record says so).

It is also what contains the code a measurement runs — a model file, a package from the index —
which may be hostile. So the harness runs as an unprivileged user with no capability and no way
to regain one, and the container sees nothing of the host but its own files (`mounts`): its
records file, its host-call folder, its environment folder (start gate and model options,
read-only), its volume and the user's files: models, their code and inputs (read-only). The
run folder itself, the manifest, the logs and the other environments' records stay out of its
reach. Cold caches are dropped by the host on request (`matrix.execute.hostdrop`), never by a
container: what that needs would give it the host's root.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from docker.errors import APIError, NotFound
from docker.types import DeviceRequest
from requests.exceptions import RequestException

from harness.catalog import parse_model
from harness.hostcalls import CALLS_DIR_ENV, SERVES_ENV, Handler, serve_host_calls
from harness.records import open_regular
from matrix.build.dockerfile import HARNESS_UID
from matrix.errors import EnvironmentFailure
from matrix.execute import hostdrop
from matrix.execute.backends import Backend, Harness, Prepared, prepared_image, skip_gpu
from matrix.execute.crossload import CrossLoadStep
from matrix.execute.lock import holder_token
from matrix.execute.matrix_run import MatrixRun
from matrix.execute.stopping import remove_dead_runs_containers
from matrix.plan.config import MatrixConfig
from matrix.plan.environments import Environment, Skipped, expand
from matrix.plan.inputs import check_folder

RESULTS_MOUNT = "/results"
ARTIFACTS_MOUNT = "/artifacts"
ARTIFACT_CACHE_MOUNT = "/artifact-cache"  # the image's own artifact cache (harness.artifact_cache)
USER_FILES_MOUNT = "/user-files"
RUN_LABEL = "tf-load-matrix.run"
TRIAL_LABEL = "tf-load-matrix.trial"
# The `matrix` process that started it (matrix.execute.lock.holder_token): once that process is
# gone,
# the next run removes the container (matrix.execute.stopping).
HOLDER_LABEL = "tf-load-matrix.holder"
NO_GPU_RUNTIME = (
    "no NVIDIA runtime on this Docker host (`docker info` lists {runtimes}); "
    "install the NVIDIA Container Toolkit to run GPU cells"
)


def container_name(run_id: str, env_id: str) -> str:
    """Docker names allow [a-zA-Z0-9_.-]; env ids already fit, this keeps it certain."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", f"tflm-{run_id}-{env_id}")


def artifact_volume(run: MatrixRun, env_id: str, loader: str = "") -> str:
    """The Docker volume with `env_id`'s artifacts: its own, named as its container is, or,
    for a `loader` whose savers' artifacts were brought from other machines (Ray), the
    loader's own copy of them, which two loaders on one engine never share."""
    if loader and isinstance(run, CrossLoadStep) and run.received:
        return container_name(run.run_id, f"{loader}-from-{env_id}")
    return container_name(run.run_id, env_id)


def volume_folder(volume: Any) -> Path:
    """Where a volume's files are on this machine: the engine's own folder for it, which only
    an engine running here has (a Ray node's docker backend talks to its own engine), and only
    root may enter."""
    folder = Path(volume.attrs["Mountpoint"])
    if not folder.is_dir():
        raise EnvironmentFailure(
            f"Docker volume {volume.name} is at {folder}, which this process cannot reach: a "
            "docker node that cross-loads runs `ray start` as root beside its own Docker "
            "engine (docs/ray.md)"
        )
    return folder


def host_calls_dir(run: MatrixRun, env_id: str) -> Path:
    """Where a container asks the host for what it may not do itself (mounted read-write)."""
    return run.run_dir / f".host-calls-{env_id}"


def container_user() -> str:
    """Who the harness runs as, never root: the image's own user under a root `matrix` (which
    hands it its files), else `matrix`'s own uid, which owns them already. Either way it is in
    the image user's group (`group_add`), which may write the venv: see the Dockerfile."""
    if os.geteuid() == 0:
        return f"{HARNESS_UID}:{HARNESS_UID}"
    return f"{os.getuid()}:{os.getgid()}"


def user_files(run: MatrixRun) -> dict[str, str]:
    """The user's files — model files (`--models ./file`), their code and inputs — → where
    their container sees them.

    Each is mounted read-only under USER_FILES_MOUNT, keeping its base name (the harness names
    a file model after it, so the records match a run outside Docker), in one folder per host
    folder: code modules given together can import each other there as on the host. Only the
    files given are mounted, never their whole folder. Nothing of them is copied into an
    image: the measured environment stays the same.
    """
    paths = [parse_model(name).path for name in run.config.model_names]
    for entry in run.config.models:
        if not isinstance(entry, str):
            paths += [str(path) for path in (*entry.code, entry.inputs) if path is not None]
    files: dict[str, str] = {}
    folders: dict[str, int] = {}  # host folder → its number under USER_FILES_MOUNT
    for path in filter(None, paths):
        folder, base = os.path.split(os.path.normpath(os.path.abspath(path)))
        files.setdefault(
            path, f"{USER_FILES_MOUNT}/{folders.setdefault(folder, len(folders))}/{base}"
        )
    return files


def mounts(env: Environment, run: MatrixRun, tag: str = "") -> dict[str, dict[str, str]]:
    """Everything of the host a container of `env` sees (`binds`: host path or volume name →
    where it appears). The records file and both folders are the host's (`prepare_host_files`):
    a container cannot rename or remove a mount point, so it can never swap one for a link.
    With the image's `tag`, its artifact cache too: its own folder, which no other image's
    container sees."""
    run_dir = run.run_dir.absolute()
    gate = run.start_gate(env.id).absolute()
    calls = host_calls_dir(run, env.id).absolute()
    binds = {
        str(run_dir / f"{env.id}.jsonl"): {"bind": f"{RESULTS_MOUNT}/{env.id}.jsonl", "mode": "rw"},
        str(calls): {"bind": f"{RESULTS_MOUNT}/{calls.name}", "mode": "rw"},
        str(gate.parent): {"bind": f"{RESULTS_MOUNT}/{gate.parent.name}", "mode": "ro"},
    }
    savers = run.reads_artifacts_of(env.id)
    for saver in savers:  # a cross-load: every saver's volume, read-only, and none of its own
        binds[artifact_volume(run, saver, env.id)] = {
            "bind": f"{ARTIFACTS_MOUNT}/{saver}",
            "mode": "ro",
        }
    if not savers:
        binds[artifact_volume(run, env.id)] = {"bind": ARTIFACTS_MOUNT, "mode": "rw"}
        if tag:
            cache = run.artifact_cache(f"docker:{tag}").absolute()
            binds[str(cache)] = {"bind": ARTIFACT_CACHE_MOUNT, "mode": "rw"}
    binds |= {path: {"bind": seen, "mode": "ro"} for path, seen in user_files(run).items()}
    return binds


def prepare_host_files(run: MatrixRun, env_id: str, tag: str = "") -> None:
    """Create what `mounts` binds from the run folder, handed to the container's user.

    The records file is new (O_EXCL: an earlier attempt's was set aside by the sweep); the
    folders may remain from an interrupted run, and must then be real folders, not links.
    """
    uid = HARNESS_UID if os.geteuid() == 0 else -1  # -1: keep; a non-root `matrix` owns them
    run.run_dir.mkdir(parents=True, exist_ok=True)
    fd = open_regular(str(run.run_dir / f"{env_id}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        os.fchown(fd, uid, uid)
    finally:
        os.close(fd)
    for folder in (host_calls_dir(run, env_id), run.start_gate(env_id).parent):
        folder.mkdir(exist_ok=True)
        if not stat.S_ISDIR(folder.lstat().st_mode):
            raise OSError(f"{folder} is not a folder; remove it")
    os.chown(host_calls_dir(run, env_id), uid, uid, follow_symlinks=False)
    if tag:
        os.chown(run.artifact_cache(f"docker:{tag}"), uid, uid, follow_symlinks=False)


def run_request(env: Environment, run: MatrixRun, tag: str, host_calls: Sequence[str] = ()) -> dict:
    """Everything sent to the engine for one harness container, as one plain dict.

    Kept pure so the exact request — including the GPU device request that cannot be exercised
    on a machine without one — is tested without an engine. `host` is what the engine's
    HostConfig receives: no network, no capability, no privilege gained through a setuid file.
    """
    host: dict[str, Any] = {
        "network_mode": "none",
        "binds": mounts(env, run, tag),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "group_add": [str(HARNESS_UID)],
    }
    if env.device == "gpu":
        host["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    environment = {}
    if host_calls:  # the kinds of call (harness.hostcalls) the host answers for this container
        environment[CALLS_DIR_ENV] = f"{RESULTS_MOUNT}/{host_calls_dir(run, env.id).name}"
        environment[SERVES_ENV] = ",".join(host_calls)
    return {
        "image": tag,
        "environment": environment,
        "entrypoint": None,  # the image's own: python3 -m harness
        "command": run.harness_args(
            env.id,
            out=RESULTS_MOUNT,
            work=ARTIFACTS_MOUNT,
            seen=user_files(run),
            artifact_cache=ARTIFACT_CACHE_MOUNT if not run.reads_artifacts_of(env.id) else "",
        ),
        "name": container_name(run.run_id, env.id),
        "labels": {
            RUN_LABEL: run.run_id,
            "tf-load-matrix.env": env.id,
            HOLDER_LABEL: holder_token(),
        },
        "user": container_user(),
        "host": host,
    }


def trial_request(env: Environment, run: MatrixRun, tag: str, call: dict) -> dict:
    """The container of one trial (`--isolation container`), for a harness `trial` call.

    It is the environment's own request — same image, user, mounts, no capability, no network,
    run label (so the Ctrl-C cleanup finds it too) — running only the trial worker's argv.
    Paths in the argv are valid in it because the mounts are the same; the artifacts are the
    same volume's inodes, so the page-cache state the harness prepared and proved is the one the
    worker meets.
    """
    argv, environment = call.get("argv"), call.get("env")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError(f"trial call: argv must be a non-empty list of strings (got {argv!r})")
    if not (
        isinstance(environment, dict) and all(isinstance(v, str) for v in environment.values())
    ):
        raise ValueError(f"trial call: env must map names to strings (got {environment!r})")
    request = run_request(env, run, tag)
    request.update(
        name=f"{request['name']}-trial-{call['id']}",
        entrypoint=argv[:1],
        command=argv[1:],
        environment=dict(environment),
        labels={**request["labels"], TRIAL_LABEL: str(call["id"])},
    )
    return request


def start_container(client: Any, request: dict, **overrides: Any) -> Any:
    """Create and start the container a request describes (low-level API: see run_request)."""
    host_config = client.api.create_host_config(**request["host"])
    created = client.api.create_container(
        image=request["image"],
        command=request["command"],
        name=request["name"],
        labels=request["labels"],
        host_config=host_config,
        environment=request["environment"],
        user=request["user"],
        volumes=[b["bind"] for b in request["host"].get("binds", {}).values()],
        **{"entrypoint": request["entrypoint"], **overrides},
    )
    client.api.start(created["Id"])
    # The SDK's Container for that id, without the inspect request `containers.get` would send:
    # waiting, logs and removal need only the id.
    return client.containers.prepare_model({"Id": created["Id"]})


class ContainerHarness(Harness):
    """A running harness container behind the same surface as a harness process.

    Its output is copied to the run's log by a thread; `release` removes the container
    whatever happened, so Ctrl-C never leaves one behind. Every poll it answers the
    container's host calls (`services`), which it may not do itself.
    """

    def __init__(
        self, container: Any, log: IO[bytes], calls: Path, services: dict[str, Handler]
    ) -> None:
        self._container, self._calls, self._services = container, calls, services
        self._copier = threading.Thread(target=self._copy_logs, args=(log,), daemon=True)
        self._copier.start()
        # One blocking `docker wait` in a thread: the exit is seen the moment it happens,
        # without an inspect request per poll.
        self._exited = threading.Event()
        self._exit_code = -1
        threading.Thread(target=self._wait_for_exit, daemon=True).start()

    def _copy_logs(self, log: IO[bytes]) -> None:
        try:
            for chunk in self._container.logs(stream=True, follow=True):
                log.write(chunk)
                log.flush()
        except (APIError, ValueError):  # container removed, or log file closed at shutdown
            return

    def _wait_for_exit(self) -> None:
        with contextlib.suppress(APIError, RequestException):  # removed under us: code -1
            self._exit_code = int(self._container.wait()["StatusCode"])
        self._exited.set()

    def poll(self) -> int | None:
        return self._exit_code if self._exited.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired("docker wait", timeout or 0)
        self._copier.join(timeout=5)
        return self._exit_code

    def interrupt(self) -> None:
        """The container is outside our process group: hand it the Ctrl-C (its PID 1 is the
        harness, which then stops after the record it is writing)."""
        with contextlib.suppress(APIError):
            self._container.kill(signal="SIGINT")

    def terminate(self) -> None:
        self._container.stop(timeout=10)

    def kill(self) -> None:
        self._container.kill()

    def serve(self) -> None:
        if self._services:
            serve_host_calls(str(self._calls), self._services)

    def release(self) -> None:
        with contextlib.suppress(NotFound):
            self._container.remove(force=True)
        self._copier.join(timeout=5)


class DockerBackend(Backend):
    """An image per environment (`matrix.build.images`), a container per run of the harness."""

    name = "docker"
    makes = "image"

    def __init__(
        self,
        client: Any,
        build_root: Path,
        drop_route: str | None,
        pulls: dict[str, str] | None = None,
    ) -> None:
        self._client, self._build_root = client, build_root
        self._drop_route = (
            drop_route  # how this host drops the page cache (matrix.execute.hostdrop)
        )
        self._pulls = pulls or {}  # env id -> the registry reference to pull instead of building

    @classmethod
    def create(
        cls, config: MatrixConfig, build_root: Path, pulls: dict[str, str] | None = None
    ) -> DockerBackend:
        """A daemon must answer (EnvironmentFailure naming the fix); the cache-drop route is
        found once, for every container of the run. `pulls`: the images a Ray driver pushed to
        `--registry`, pulled by their exact reference, never built here."""
        from matrix.build.images import docker_client

        check_folder("--build-dir", build_root)
        return cls(docker_client(), build_root, hostdrop.route(), pulls)

    def environments(self, config: MatrixConfig) -> tuple[list[Environment], list[Skipped]]:
        """GPU cells need the engine's NVIDIA runtime: without it they are skipped, up front."""
        environments, skipped = expand(config)
        if any(env.device == "gpu" for env in environments):
            runtimes = sorted(self._client.info().get("Runtimes", {}))
            if "nvidia" not in runtimes:
                reason = NO_GPU_RUNTIME.format(runtimes=", ".join(runtimes) or "none")
                environments = skip_gpu(environments, skipped, reason)
        return environments, skipped

    def prepare(self, env: Environment, log: Path, on_line: Callable[[str], None]) -> Prepared:
        from matrix.build.images import ensure_image, pull_image

        if env.id in self._pulls:
            pulled = pull_image(self._client, env, self._pulls[env.id], log)
            return prepared_image(env, pulled, from_registry=True)
        return prepared_image(
            env, ensure_image(self._client, env, self._build_root, log, on_line=on_line)
        )

    def launch(self, run: MatrixRun, ready: Prepared, log: IO[bytes]) -> ContainerHarness:
        env, tag = ready.env, ready.ref
        prepare_host_files(run, env.id, tag)
        services = self._services(run, env, tag)
        request = run_request(env, run, tag, host_calls=sorted(services))
        container = start_container(self._client, request)
        return ContainerHarness(container, log, host_calls_dir(run, env.id), services)

    def reclaim(self) -> str:
        runs = remove_dead_runs_containers(self._client)
        return f"removed the containers left by ended run(s) {', '.join(runs)}" if runs else ""

    def cleanup(self, run_id: str) -> str:
        return f"removed {remove_run_containers(self._client, run_id)} container(s)"

    def saved_artifacts(self, run: MatrixRun, env_id: str) -> Path | None:
        try:
            volume = self._client.volumes.get(artifact_volume(run, env_id))
        except NotFound:
            return None
        return volume_folder(volume)

    def artifacts_copy(self, run: MatrixRun, loader: str, saver: str) -> Path:
        """A new volume (an earlier attempt's copy of the same name goes first)."""
        name = artifact_volume(run, saver, loader)
        with contextlib.suppress(NotFound):
            self._client.volumes.get(name).remove(force=True)
        return volume_folder(self._client.volumes.create(name))

    def drop_artifacts_copies(self, run: MatrixRun, loader: str) -> None:
        for saver in run.reads_artifacts_of(loader):
            with contextlib.suppress(NotFound):
                self._client.volumes.get(artifact_volume(run, saver, loader)).remove(force=True)

    def _services(self, run: MatrixRun, env: Environment, tag: str) -> dict[str, Handler]:
        """What the harness container may ask of this host: page-cache drops (when the host
        can drop it) and, with `isolation: container`, each trial run in a fresh container, so
        no trial inherits another's container state."""
        services: dict[str, Handler] = {}
        if self._drop_route:
            services["drop"] = self._drop_caches
        if run.config.isolation == "container":
            services["trial"] = lambda call: self._run_trial(run, env, tag, call)
        return services

    def _drop_caches(self, _call: dict) -> dict:
        hostdrop.drop(str(self._drop_route))
        return {}

    def _run_trial(self, run: MatrixRun, env: Environment, tag: str, call: dict) -> dict:
        request = trial_request(env, run, tag, call)
        return run_trial_container(self._client, request, float(call["timeout_s"]))


def run_trial_container(client: Any, request: dict, timeout_s: float) -> dict:
    """Run one trial's container to its end and remove it; the `trial` call's answer.

    Docker reports a PID 1 killed by signal N as exit code 128 + N, as a shell does; it is
    turned back into -N, which the harness reports as "killed by SIGN", as for a child process.
    """
    container = start_container(client, request)
    try:
        try:
            code = int(container.wait(timeout=timeout_s)["StatusCode"])
        except RequestException:  # requests' ReadTimeout: still running at the deadline
            raise TimeoutError(f"trial timed out after {timeout_s:g} s") from None
        stderr = container.logs(stdout=False, stderr=True, tail=50)
    finally:
        with contextlib.suppress(NotFound):
            container.remove(force=True)
    return {
        "exit_code": -(code - 128) if code > 128 else code,
        "stderr": stderr.decode(errors="replace"),
        "container_id": container.id,
    }


def remove_run_containers(client: Any, run_id: str) -> int:
    """Remove every container this run started (after Ctrl-C); returns how many."""
    removed = 0
    for container in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}):
        container.remove(force=True)
        removed += 1
    return removed
