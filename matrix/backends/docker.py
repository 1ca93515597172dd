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
from pathlib import Path
from typing import IO, Any

from docker.errors import APIError, NotFound
from docker.types import DeviceRequest

from harness.cache import HOST_DROP_ENV, drop_caches_allowed, serve_host_drops
from matrix.environments import Environment
from matrix.plan import RunPlan

RESULTS_MOUNT = "/results"
ARTIFACTS_MOUNT = "/artifacts"
RUN_LABEL = "tf-load-matrix.run"


def container_name(run_id: str, env_id: str) -> str:
    """Docker names allow [a-zA-Z0-9_.-]; env ids already fit, this keeps it certain."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", f"tflm-{run_id}-{env_id}")


def host_drop_dir(plan: RunPlan, env_id: str) -> Path:
    """Where a container asks the host to drop the page cache (inside the records mount)."""
    return plan.run_dir / f".cache-drop-{env_id}"


def run_request(env: Environment, plan: RunPlan, tag: str, allow_cache_drop: bool,
                host_drop: bool = False) -> dict:
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
    if host_drop:
        inside = f"{RESULTS_MOUNT}/{host_drop_dir(plan, env.id).name}"
        environment[HOST_DROP_ENV] = inside
    return {
        "image": tag,
        "environment": environment,
        "command": plan.harness_args(env.id, out=RESULTS_MOUNT, work=ARTIFACTS_MOUNT),
        "name": container_name(plan.run_id, env.id),
        "labels": {RUN_LABEL: plan.run_id, "tf-load-matrix.env": env.id},
        "host": host,
        "unmasked_proc": allow_cache_drop,
    }


def start_container(client: Any, request: dict, **overrides: Any) -> Any:
    """Create and start the container a request describes (low-level API: see run_request)."""
    host_config = client.api.create_host_config(**request["host"])
    if request["unmasked_proc"]:  # systempaths=unconfined: /proc/sys writable for drop_caches
        host_config["MaskedPaths"] = []
        host_config["ReadonlyPaths"] = []
    created = client.api.create_container(
        image=request["image"], command=request["command"], name=request["name"],
        labels=request["labels"], host_config=host_config, environment=request["environment"],
        volumes=[b["bind"] for b in request["host"].get("binds", {}).values()], **overrides)
    client.api.start(created["Id"])
    return client.containers.get(created["Id"])


class ContainerHarness:
    """A running harness container behind the same surface as `subprocess.Popen`.

    Its output is copied to the run's log by a thread; leaving the `with` block removes the
    container whatever happened, so Ctrl-C never leaves one behind.
    """

    def __init__(self, container: Any, log: IO[bytes]) -> None:
        self._container = container
        self._copier = threading.Thread(target=self._copy_logs, args=(log,), daemon=True)
        self._copier.start()

    def _copy_logs(self, log: IO[bytes]) -> None:
        try:
            for chunk in self._container.logs(stream=True, follow=True):
                log.write(chunk)
                log.flush()
        except (APIError, ValueError):  # container removed, or log file closed at shutdown
            return

    def poll(self) -> int | None:
        self._container.reload()
        if self._container.status in ("exited", "dead"):
            return int(self._container.attrs["State"]["ExitCode"])
        return None

    def wait(self, timeout: float | None = None) -> int:
        try:
            result = self._container.wait(timeout=timeout)
        except Exception as exc:  # the SDK raises requests' ReadTimeout / ConnectionError
            if "timed out" in str(exc).lower() or type(exc).__name__ == "ReadTimeout":
                raise subprocess.TimeoutExpired("docker wait", timeout or 0) from exc
            raise
        self._copier.join(timeout=5)
        return int(result["StatusCode"])

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
                              host_drop=self._host_drop)
        return ContainerHarness(start_container(self._client, request), log)

    def serve(self, plan: RunPlan, env_id: str) -> None:
        if self._host_drop:
            serve_host_drops(str(host_drop_dir(plan, env_id)))


def remove_run_containers(client: Any, run_id: str) -> int:
    """Remove every container this run started (after Ctrl-C); returns how many."""
    removed = 0
    for container in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}):
        container.remove(force=True)
        removed += 1
    return removed
