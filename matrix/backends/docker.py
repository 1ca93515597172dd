"""The Docker backend: run the harness inside an environment's image, one fresh container each.

The container is what makes the numbers honest across environments: no network
(`--network none`), the records bind-mounted back to `<run_dir>/`, the artifacts on a named
volume kept per run (so their storage is a real Docker volume, and the record says so). Cold
caches need the page cache dropped, which a container may only do with exactly
`--cap-add SYS_ADMIN --security-opt systempaths=unconfined` (`--privileged` fails to start on
some hosts), so that is given only when the user allows it.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from docker.errors import APIError, NotFound
from docker.types import DeviceRequest
from requests.exceptions import RequestException

from harness.cache import drop_all_caches, drop_caches_allowed
from harness.hostcalls import CALLS_DIR_ENV, SERVES_ENV, Handler, serve_host_calls
from matrix.environments import Environment
from matrix.plan import RunPlan

RESULTS_MOUNT = "/results"
ARTIFACTS_MOUNT = "/artifacts"
RUN_LABEL = "tf-load-matrix.run"
TRIAL_LABEL = "tf-load-matrix.trial"


def container_name(run_id: str, env_id: str) -> str:
    """Docker names allow [a-zA-Z0-9_.-]; env ids already fit, this keeps it certain."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", f"tflm-{run_id}-{env_id}")


def host_calls_dir(plan: RunPlan, env_id: str) -> Path:
    """Where a container asks the host for what it may not do itself (in the records mount)."""
    return plan.run_dir / f".host-calls-{env_id}"


def run_request(env: Environment, plan: RunPlan, tag: str, allow_cache_drop: bool,
                host_calls: Sequence[str] = ()) -> dict:
    """Everything sent to the engine for one harness container, as one plain dict.

    Kept pure so the exact request — including the GPU device request that cannot be exercised
    on a machine without one — is tested without an engine. `host` is what the engine's
    HostConfig receives; `--security-opt systempaths=unconfined` is not an engine option but
    the Docker CLI's name for empty MaskedPaths and ReadonlyPaths, so it is spelled that way.
    """
    host: dict[str, Any] = {
        "network_mode": "none",
        "binds": {
            str(plan.run_dir.absolute()): {"bind": RESULTS_MOUNT, "mode": "rw"},
            container_name(plan.run_id, env.id): {"bind": ARTIFACTS_MOUNT, "mode": "rw"},
        },
    }
    if allow_cache_drop:
        host["cap_add"] = ["SYS_ADMIN"]
    if env.device == "gpu":
        host["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    environment = {}
    if host_calls:  # the kinds of call (harness.hostcalls) the host answers for this container
        environment[CALLS_DIR_ENV] = f"{RESULTS_MOUNT}/{host_calls_dir(plan, env.id).name}"
        environment[SERVES_ENV] = ",".join(host_calls)
    return {
        "image": tag,
        "environment": environment,
        "entrypoint": None,  # the image's own: python3 -m harness
        "command": plan.harness_args(env.id, out=RESULTS_MOUNT, work=ARTIFACTS_MOUNT),
        "name": container_name(plan.run_id, env.id),
        "labels": {RUN_LABEL: plan.run_id, "tf-load-matrix.env": env.id},
        "host": host,
        "unmasked_proc": allow_cache_drop,
    }


def trial_request(env: Environment, plan: RunPlan, tag: str, allow_cache_drop: bool,
                  call: dict) -> dict:
    """The container of one trial (`--isolation container`), for a harness `trial` call.

    It is the environment's own request — same image, mounts, capabilities, no network, run
    label (so the Ctrl-C cleanup finds it too) — running only the trial worker's argv. Paths in
    the argv are valid in it because the mounts are the same; the artifacts are the same
    volume's inodes, so the page-cache state the harness prepared and proved is the one the
    worker meets.
    """
    argv, environment = call.get("argv"), call.get("env")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError(f"trial call: argv must be a non-empty list of strings (got {argv!r})")
    if not (isinstance(environment, dict) and
            all(isinstance(v, str) for v in environment.values())):
        raise ValueError(f"trial call: env must map names to strings (got {environment!r})")
    request = run_request(env, plan, tag, allow_cache_drop)
    request.update(name=f"{request['name']}-trial-{call['id']}", entrypoint=argv[:1],
                   command=argv[1:], environment=dict(environment),
                   labels={**request["labels"], TRIAL_LABEL: str(call["id"])})
    return request


def start_container(client: Any, request: dict, **overrides: Any) -> Any:
    """Create and start the container a request describes (low-level API: see run_request)."""
    host_config = client.api.create_host_config(**request["host"])
    if request["unmasked_proc"]:  # systempaths=unconfined: /proc/sys writable for drop_caches
        host_config["MaskedPaths"] = []
        host_config["ReadonlyPaths"] = []
    created = client.api.create_container(
        image=request["image"], command=request["command"], name=request["name"],
        labels=request["labels"], host_config=host_config, environment=request["environment"],
        volumes=[b["bind"] for b in request["host"].get("binds", {}).values()],
        **{"entrypoint": request["entrypoint"], **overrides})
    client.api.start(created["Id"])
    # The SDK's Container for that id, without the inspect request `containers.get` would send:
    # waiting, logs and removal need only the id.
    return client.containers.prepare_model({"Id": created["Id"]})


class ContainerHarness:
    """A running harness container behind the same surface as `subprocess.Popen`.

    Its output is copied to the run's log by a thread; leaving the `with` block removes the
    container whatever happened, so Ctrl-C never leaves one behind.
    """

    def __init__(self, container: Any, log: IO[bytes]) -> None:
        self._container = container
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

    def __enter__(self) -> ContainerHarness:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(NotFound):
            self._container.remove(force=True)
        self._copier.join(timeout=5)


class DockerBackend:
    """Run the harness in the image built for one environment."""

    name = "docker"

    def __init__(self, client: Any, env: Environment, tag: str, allow_cache_drop: bool) -> None:
        self._client, self._env, self._tag = client, env, tag
        self._allow_cache_drop = allow_cache_drop
        # Root on the host (same kernel, same page cache) drops it for an unprivileged container.
        self._host_drop = not allow_cache_drop and drop_caches_allowed()

    def check(self) -> None:
        """The image was built (or found) just before; nothing else can be missing."""

    def env_id(self) -> str:
        return self._env.id

    def launch(self, plan: RunPlan, env_id: str, log: IO[bytes]) -> ContainerHarness:
        request = run_request(self._env, plan, self._tag, self._allow_cache_drop,
                              host_calls=sorted(self._services(plan)))
        return ContainerHarness(start_container(self._client, request), log)

    def serve(self, plan: RunPlan, env_id: str) -> None:
        services = self._services(plan)
        if services:
            serve_host_calls(str(host_calls_dir(plan, env_id)), services)

    def _services(self, plan: RunPlan) -> dict[str, Handler]:
        """What the harness container may ask of this host: page-cache drops (when the host may
        and the container may not) and, with `isolation: container`, each trial run in a
        fresh container, so no trial inherits another's container state."""
        services: dict[str, Handler] = {}
        if self._host_drop:
            services["drop"] = _drop_caches
        if plan.config.isolation == "container":
            services["trial"] = lambda call: self._run_trial(plan, call)
        return services

    def _run_trial(self, plan: RunPlan, call: dict) -> dict:
        request = trial_request(self._env, plan, self._tag, self._allow_cache_drop, call)
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
    return {"exit_code": -(code - 128) if code > 128 else code,
            "stderr": stderr.decode(errors="replace"), "container_id": container.id}


def _drop_caches(_call: dict) -> dict:
    drop_all_caches()
    return {}


def remove_run_containers(client: Any, run_id: str) -> int:
    """Remove every container this run started (after Ctrl-C); returns how many."""
    removed = 0
    for container in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}):
        container.remove(force=True)
        removed += 1
    return removed
