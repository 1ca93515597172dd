"""A throwaway Ray cluster on this machine: `ray start` processes, one per node, token on.

What the ray backend's tests and its benchmark run against, and a way to try `--backend ray`
before there is a real cluster: each node is its own `ray start --block` process group with one
measurement slot and one CPU, its own temporary folder, and free ports, so the nodes are real
Ray nodes of one cluster, and stopping the groups leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from matrix.execute.backends.ray import SLOT

START_TIMEOUT_S = 240.0  # a head node starts in ~10 s alone, in minutes beside a test suite
STOP_GRACE_S = 20.0


class LocalCluster:
    """`nodes` Ray nodes under `root` (`head`, `worker1`, …), each with `labels[i]` if given."""

    def __init__(self, root: Path, nodes: int = 2, labels: list[str] | None = None) -> None:
        self.root = root
        self.names = ["head", *(f"worker{i}" for i in range(1, nodes))]
        self._labels = labels or []
        token = root / "token"
        self.environ = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        self.marker = str(token).encode()  # in the environment of every process of the cluster
        self.address = f"127.0.0.1:{_free_port()}"
        self.groups: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> LocalCluster:
        token = self.root / "token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        try:
            for index, name in enumerate(self.names):
                self._start(name, self._labels[index] if index < len(self._labels) else "")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start(self, name: str, label: str) -> None:
        port = self.address.rpartition(":")[2]
        if name == "head":
            where = ["--head", "--port", port, "--include-dashboard=false"]
            where += ["--ray-client-server-port", str(_free_port())]
            where += ["--dashboard-port", str(_free_port())]
        else:
            where = ["--address", self.address]
        where += ["--labels", label] if label else []
        log = self.root / f"{name}.log"
        ray = Path(sys.executable).with_name("ray")
        argv = [str(ray), "start", "--block", *where, "--num-cpus", "1"]
        argv += ["--resources", json.dumps({SLOT: 1}), "--node-ip-address", "127.0.0.1"]
        argv += ["--disable-usage-stats", "--temp-dir", str(self.root / name)]
        with log.open("wb") as out:
            self.groups[name] = subprocess.Popen(
                argv,
                env=self.environ,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its process group is the node
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"Ray runtime started" not in log.read_bytes():
            if self.groups[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {name} did not start; see {log}")
            time.sleep(0.5)

    def processes(self, text: str = "") -> list[tuple[int, str]]:
        """(pid, command line) of this cluster's processes whose command line has `text`:
        they all carry the token's path in their environment, Ray's workers and what they
        start included."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):  # ended meanwhile, or not ours to read
                if self.marker in Path(f"/proc/{pid}/environ").read_bytes():
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    if text in cmd.decode(errors="replace"):
                        found.append((int(pid), cmd.decode(errors="replace")))
        return found

    def node_id(self, name: str) -> str:
        """The Ray node id of node `name`, from its raylet's command line."""
        for _, cmd in self.processes(f"--temp-dir={self.root / name}"):
            found = re.search(r"--node_id=(\w+)", cmd)
            if found and "raylet/raylet" in cmd:
                return found.group(1)
        raise LookupError(f"no raylet of the {name} node")

    def kill(self, name: str) -> None:
        """Node `name` dies at once, as a machine that loses power (SIGKILL to its group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.groups[name].pid, signal.SIGKILL)

    def slots_in_use(self) -> float:
        """The measurement slots tasks hold now, by `ray status`."""
        status = subprocess.run(
            [str(Path(sys.executable).with_name("ray")), "status", "--address", self.address],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.environ,
        ).stdout
        used = re.search(rf"([\d.]+)/[\d.]+ {SLOT}", status)
        if used is None:
            raise RuntimeError(f"`ray status` lists no {SLOT}: {status}")
        return float(used.group(1))

    def stop(self) -> None:
        """Each node's own shutdown (SIGTERM), SIGKILL for what remains, then for any process
        still carrying the cluster's token (the workers of a node killed outright)."""
        for group in reversed(self.groups.values()):
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(group.pid, signal.SIGTERM)
                group.wait(timeout=STOP_GRACE_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group.pid, signal.SIGKILL)
            group.wait()
        for pid, _ in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
