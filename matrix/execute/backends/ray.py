"""The Ray backend: each environment is one task on a node of a Ray cluster the user runs.

A node offers measurement slots through the custom resource `tf_load_matrix` (`ray start
--resources '{"tf_load_matrix": 1}'`); every task asks for one, so a node never measures two
environments at once, and a GPU environment also asks for a GPU. On its node the task measures
with that node's own docker or venv backend (`ray_node`) and streams the records back as they are
written, so the records file, progress and resume here are those of a local sweep. With
`--registry` the driver builds each image once and pushes it, and the docker nodes pull it. The code
reaches nodes by installation (docs/ray.md): each node is surveyed first, and one running other
code than the driver is an error naming both versions. Ray is imported only by this module.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import ray
from ray import exceptions as ray_errors

from harness.records import open_regular
from matrix.errors import EnvironmentFailure
from matrix.execute.backends import Backend, Ended, Harness, Prepared, prepared_image, ray_node
from matrix.execute.backends.ray_node import NodeSpec, tool_version
from matrix.execute.crossload import CrossLoadStep
from matrix.execute.matrix_run import MatrixRun
from matrix.plan.config import MatrixConfig
from matrix.plan.environments import Environment, Skipped, expand

SLOT = "tf_load_matrix"  # the custom resource of a measurement slot
NODE_ID_LABEL = "ray.io/node-id"  # the label Ray gives every node: how a task is pinned
SURVEY_TIMEOUT_S = 120.0  # a node's first task starts a worker: seconds on a busy machine
CLEAN_TIMEOUT_S = 60.0
REACH_TIMEOUT_S = 10.0
PENDING_CHECK_S = 2.0  # how often a task not started yet checks it still has a node to go to
# Failures of the machinery, not of the environment: the one retry is for these. An
# environment that fails on its own (its build, its harness) fails the same way elsewhere.
LOST = (ray_errors.NodeDiedError, ray_errors.WorkerCrashedError, ray_errors.LocalRayletDiedError)


@dataclass(frozen=True)
class Node:
    """One node of the cluster as Ray lists it, and what its survey found (if it has a slot)."""

    id: str
    hostname: str
    address: str
    alive: bool
    slots: int
    gpus: int
    labels: dict[str, str]
    resources: dict[str, float]
    survey: dict[str, Any] = field(default_factory=dict)  # `ray_node.survey`'s answer, or error

    @property
    def name(self) -> str:
        """`vm-2 (3f2a9c1b)`: a hostname can repeat (nodes on one machine, pods), an id not."""
        return f"{self.hostname} ({self.id[:8]})"

    def runs(self, env: Environment) -> bool:
        """Whether this node can measure `env`: its own backend plans it, and it has the GPU."""
        planned = {e["id"] for e in self.survey.get("environments", [])}
        return self.alive and env.id in planned and (env.device != "gpu" or self.gpus >= 1)

    def why_not(self, env: Environment) -> str:
        if self.survey.get("error"):
            return str(self.survey["error"])
        if env.device == "gpu" and self.gpus < 1:
            return "no GPU (Ray resource GPU)"
        reasons = {s["id"]: s["reason"] for s in self.survey.get("skipped", [])}
        return reasons.get(env.id, "not in its plan")


def connect(address: str) -> None:
    """Join the cluster at `address` (`auto`: the one this machine belongs to, or RAY_ADDRESS),
    never starting one: a measurement cluster is the user's, with its slots declared."""
    if ray.is_initialized():
        ray.shutdown()
    check_reachable(address)
    try:
        ray.init(
            address=address,
            log_to_driver=False,  # node output goes to the environment's log, not the terminal
            logging_level=logging.WARNING,
            namespace="tf-load-matrix",
        )
    except ConnectionError as exc:
        raise EnvironmentFailure(
            f"--address {address}: no Ray cluster there ({_first_line(exc)}); start one with "
            f"`ray start --head --resources '{{\"{SLOT}\": 1}}'` (docs/ray.md) or give "
            "--address HOST:PORT"
        ) from None
    except ray_errors.AuthenticationError:
        raise EnvironmentFailure(
            f"--address {address}: the cluster wants its token: set RAY_AUTH_TOKEN_PATH to the "
            "file holding it (docs/ray.md, 'Token')"
        ) from None
    except RuntimeError as exc:  # Ray's own check: "Version mismatch: the cluster … this process …"
        raise EnvironmentFailure(f"--address {address}: {_first_line(exc)}") from None


def check_reachable(address: str) -> None:
    """EnvironmentFailure at once if nothing answers at the head's address: Ray would retry
    for minutes. (`auto` finds a running cluster or fails by itself, at once.)"""
    target = os.environ.get("RAY_ADDRESS") or address  # Ray prefers the variable, so we do
    if target == "auto":
        return
    host, _, port = target.rpartition(":")
    if target.startswith("ray://") or not port.isdigit():
        raise EnvironmentFailure(
            f"--address {target}: give the head's HOST:PORT (its GCS, 6379 by default); a Ray "
            "Client address (ray://) cannot stream records"
        )
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise EnvironmentFailure(
            f"--address {target}: no Ray cluster answers there ({exc.strerror or exc}); start "
            f"its head with `ray start --head --resources '{{\"{SLOT}\": 1}}'` (docs/ray.md)"
        ) from None


def nodes() -> list[Node]:
    """Every node Ray knows, alive or not (a dead one is listed until it is forgotten)."""
    listed = []
    for info in ray.nodes():
        resources = {k: float(v) for k, v in info.get("Resources", {}).items()}
        listed.append(
            Node(
                id=info["NodeID"],
                hostname=info.get("NodeManagerHostname", "?"),
                address=info.get("NodeManagerAddress", "?"),
                alive=bool(info.get("Alive")),
                slots=int(resources.get(SLOT, 0)),
                gpus=int(resources.get("GPU", 0)),
                labels=dict(info.get("Labels", {})),
                resources=resources,
            )
        )
    return listed


def selected(all_nodes: list[Node], ray_nodes: str) -> list[Node]:
    """The alive nodes with a slot that `--ray-nodes` keeps: `KEY=VALUE` matches a node label
    (`ray start --labels`), a bare name a custom resource the node declares."""
    chosen = [n for n in all_nodes if n.alive and n.slots > 0]
    if not ray_nodes:
        return chosen
    key, is_label, value = ray_nodes.partition("=")
    if is_label:
        return [n for n in chosen if n.labels.get(key) == value]
    return [n for n in chosen if n.resources.get(ray_nodes, 0) > 0]


def survey(config: MatrixConfig, build_root: Path, targets: list[Node]) -> list[Node]:
    """Ask every target node what it runs (`ray_node.survey`), side by side; a node that cannot
    answer keeps the reason as its survey's `error`."""
    payload = config.model_dump(mode="json")
    pending = {
        node.id: _survey.options(label_selector={NODE_ID_LABEL: node.id}).remote(
            payload, str(build_root)
        )
        for node in targets
    }
    answers: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + SURVEY_TIMEOUT_S
    for node_id, ref in pending.items():
        try:
            answers[node_id] = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
        except ray_errors.GetTimeoutError:
            ray.cancel(ref, force=True)
            answers[node_id] = {"error": f"no answer in {SURVEY_TIMEOUT_S:g} s"}
        except ray_errors.RayError as exc:
            answers[node_id] = {"error": _node_error(exc)}
    return [_with_survey(node, answers[node.id]) for node in targets]


def _with_survey(node: Node, answer: dict[str, Any]) -> Node:
    return Node(**{**asdict(node), "survey": answer})


def other_code(surveyed: list[Node], ours: set[str]) -> list[Node]:
    """The nodes that run other code than this driver: their records would not be comparable.

    `ours`: the driver's version before and after the survey, so a checkout edited while the
    nodes answered is not mistaken for a node running other code.
    """
    return [node for node in surveyed if node.survey.get("tool", next(iter(ours))) not in ours]


def mismatch(node: Node) -> str:
    """The one line naming both versions."""
    return (
        f"node {node.name} runs {node.survey['tool']}, this driver {tool_version()}: install "
        "the driver's version on every node (pip install 'tf-load-matrix[ray]' from the same "
        "release or checkout; docs/ray.md)"
    )


class RayBackend(Backend):
    """Environments measured on the nodes of a Ray cluster, each by that node's backend."""

    name = "ray"

    def __init__(
        self, config: MatrixConfig, build_root: Path, targets: list[Node], client: Any = None
    ) -> None:
        self._config, self._build_root, self._nodes = config, build_root, targets
        self._client = client  # the driver's Docker engine, which pushes to `--registry`
        self._eligible: dict[str, list[str]] = {}  # env id -> ids of the nodes that can run it
        self._attempts: dict[tuple[Path, str], int] = {}  # (step's folder, env id) -> launched
        # Nodes a task was lost on: still listed alive for a while after dying, never used again
        self._lost: set[str] = set()
        self._handles: list[RayHarness] = []
        # env id -> the streamed item holding its packed artifacts, kept in Ray's object store
        # for the cross-load's loaders (`ray_node.pack_artifacts`)
        self._packs: dict[str, Any] = {}

    @classmethod
    def create(cls, config: MatrixConfig, build_root: Path) -> RayBackend:
        client = None
        if config.registry:  # the driver builds and pushes: its engine must answer first
            from matrix.build.images import docker_client

            client = docker_client()
        connect(config.address)
        everyone = nodes()
        targets = selected(everyone, config.ray_nodes)
        if not targets:
            which = f" matching --ray-nodes {config.ray_nodes}" if config.ray_nodes else ""
            raise EnvironmentFailure(
                f"--address {config.address}: no alive node{which} offers a measurement slot "
                f"({len(everyone)} node(s)); start nodes with `ray start --resources "
                f"'{{\"{SLOT}\": 1}}'` (docs/ray.md)"
            )
        before = tool_version()
        surveyed = survey(config, build_root.absolute(), targets)
        other = other_code(surveyed, {before, tool_version()})
        if other:
            raise EnvironmentFailure(mismatch(other[0]))
        return cls(config, build_root.absolute(), surveyed, client)

    def environments(self, config: MatrixConfig) -> tuple[list[Environment], list[Skipped]]:
        """Every environment some node can run (its own backend plans it, and has the GPU a
        GPU environment asks for); the rest skipped, with each node's reason."""
        pythons = {p for node in self._nodes for p in node.survey.get("pythons", [])}
        wanted, skipped = expand(config, pythons=pythons or None)
        environments = []
        for env in wanted:
            able = [node for node in self._nodes if node.runs(env)]
            if able:
                self._eligible[env.id] = [node.id for node in able]
                environments.append(env)
            else:
                why = "; ".join(f"{node.name}: {node.why_not(env)}" for node in self._nodes)
                skipped.append(Skipped(env.id, f"no node can run it ({why})"))
        used = {node_id for ids in self._eligible.values() for node_id in ids}
        self.slots = max(1, sum(node.slots for node in self._nodes if node.id in used))
        return environments, skipped

    def prepare(self, env: Environment, log: Path, on_line: Callable[[str], None]) -> Prepared:
        """With `--registry`, the image every docker node pulls: built here (or found by its
        content tag) and pushed, once; without, nothing: each node makes its own."""
        if self._client is None:
            return Prepared(env)
        from matrix.build.images import ensure_image, push_image

        image = ensure_image(self._client, env, self._build_root, log, on_line=on_line)
        if image.status != "ok":
            return prepared_image(env, image)
        pushed = push_image(self._client, image, self._config.registry, log)
        return prepared_image(env, pushed, from_registry=True)

    def launch(self, run: MatrixRun, ready: Prepared, log: IO[bytes]) -> RayHarness:
        env = ready.env
        key = (run.run_dir, env.id)  # a loader's cross-load is its own first attempt
        attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
        alive = {node.id for node in nodes() if node.alive}
        eligible = [i for i in self._eligible[env.id] if i in alive and i not in self._lost]
        spec = NodeSpec(
            run_id=run.run_id,
            env=asdict(env),
            config=run.config.model_dump(mode="json"),
            build_root=str(self._build_root),
            attempt=attempt,
            driver_run_dir=str(run.run_dir.absolute()),
            image=ready.ref,  # pushed to `--registry` by `prepare`; "" without one
            savers=run.savers if isinstance(run, CrossLoadStep) else (),
        )
        # A saver finished by an earlier attempt at the run (`--resume`) has none any more
        packs = [self._packs[s] for s in run.reads_artifacts_of(env.id) if s in self._packs]
        handle = RayHarness(
            run, env, spec, eligible, log, self._node_names(), self._lost, packs, self._packs
        )
        self._handles.append(handle)
        return handle

    def cleanup(self, run_id: str) -> str:
        """After Ctrl-C (every task cancelled by then): on each node, what a task killed
        outright could not remove itself: its containers, its folder."""
        alive = {node.id for node in nodes() if node.alive}
        refs = [
            _clean.options(label_selector={NODE_ID_LABEL: node.id}).remote(
                self._config.model_dump(mode="json"), str(self._build_root), run_id
            )
            for node in self._nodes
            if node.id in alive
        ]
        try:
            said = [text for text in ray.get(refs, timeout=CLEAN_TIMEOUT_S) if text]
        except ray_errors.RayError as exc:
            said = [f"cleaning the nodes failed: {_first_line(exc)}"]
        cancelled = sum(handle.cancelled for handle in self._handles)
        return "; ".join([f"cancelled {cancelled} task(s)", *said])

    def _node_names(self) -> dict[str, str]:
        return {node.id: node.name for node in self._nodes}


class RayHarness(Harness):
    """One environment's task, behind the surface of a local harness process.

    `serve` appends what the task streamed since the last poll to this machine's records file
    and logs; the exit code is the node's `matrix` child's (0 ok, 1 failed and recorded,
    130/143 stopped), or 1 when the task itself was lost (its node died) or could not start.
    """

    def __init__(
        self,
        run: MatrixRun,
        env: Environment,
        spec: NodeSpec,
        eligible: list[str],
        log: IO[bytes],
        names: dict[str, str],
        lost: set[str],
        packs: list[Any],
        kept: dict[str, Any],
    ) -> None:
        """`packs`: the refs of the savers' artifacts its task unpacks first (a loader of the
        cross-load); `kept`: where it keeps the ref of its own, if its task streams them."""
        self._env, self._spec, self._eligible, self._log = env, spec, eligible, log
        self._names, self._lost_nodes, self._packs = names, lost, kept
        self._build_log = run.run_dir / f"{env.id}.build.log"
        self._records = open_regular(
            str(run.records_file(env.id)), os.O_WRONLY | os.O_CREAT | os.O_APPEND
        )
        self._code: int | None = None
        self._end: dict[str, Any] = {}
        self._node: dict[str, str] = {}  # where it runs, once it has started
        self._reason = ""  # why it failed, when the node's own records cannot say it
        self._retry = False
        self._stopping = False
        self.cancelled = False
        self._checked = time.monotonic()
        if not eligible:
            self._code, self._reason = 1, "no node that can run it is alive any more"
            return
        options: dict[str, Any] = {
            "num_returns": "streaming",
            "resources": {SLOT: 1},
            "num_gpus": 1 if env.device == "gpu" else 0,
            "label_selector": {NODE_ID_LABEL: f"in({','.join(eligible)})"},
            "name": f"tf-load-matrix {env.id}",
        }
        # Refs as arguments: Ray fetches their objects to the node before the task starts
        self._task: Any = _measure.options(**options).remote(asdict(spec), *packs)

    def serve(self) -> None:
        self._drain(0.0)

    def poll(self) -> int | None:
        self._drain(0.0)
        return self._code

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._code is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"ray task {self._env.id}", timeout or 0)
            self._drain(PENDING_CHECK_S if left is None else min(left, PENDING_CHECK_S))
        return self._code

    def interrupt(self) -> None:
        """Ray raises KeyboardInterrupt in the task, which stops its `matrix` child as Ctrl-C
        stops ours; the task's end arrives once that is done."""
        self._cancel(force=False)

    def terminate(self) -> None:
        self._cancel(force=True)  # the worker is killed; its child and harness die with it

    def kill(self) -> None:
        self._cancel(force=True)

    def release(self) -> None:
        if self._code is None:
            self._cancel(force=True)
            self._code = 1
        if self._records >= 0:
            os.close(self._records)
            self._records = -1

    def ended(self, returncode: int) -> Ended:
        details: dict[str, Any] = {"attempt": self._spec.attempt}
        if self._node:
            details |= {"node_id": self._node["id"], "node_hostname": self._node["hostname"]}
        outcome = self._end.get("outcome")
        if outcome is None:
            return Ended(reason=self._reason, details=details, retry=self._retry)
        details["node_backend"] = self._end.get("backend", "")
        made = Prepared(
            self._env,
            ref=outcome.get("image", ""),
            built=bool(outcome.get("image_built")),
            seconds=float(outcome.get("build_s") or 0.0),
            reason=outcome.get("reason", "") if outcome.get("status") == "build-failed" else "",
        )
        if made.ref and not made.reason:  # a node given a pushed image only pulls it
            source = "pulled" if self._spec.image else "built" if made.built else "found"
            details["image_source"] = source
        return Ended(
            prepared=made,
            reason=outcome.get("reason", ""),
            recorded=outcome.get("status") != "ok",  # the node's sweep wrote its failure record
            details=details,
        )

    def _cancel(self, force: bool) -> None:
        if self._code is None:
            self._stopping = self.cancelled = True
            ray.cancel(self._task, force=force)

    def _drain(self, timeout: float) -> None:
        """Take every item the task has streamed, waiting up to `timeout` for the first."""
        while self._code is None:
            ready, _ = ray.wait([self._task], timeout=timeout)
            timeout = 0.0
            if not ready:
                self._check_pending()
                return
            try:
                ref = next(self._task)
                item = ray.get(ref)
            except StopIteration:  # ended without its last item: only a cancelled task does
                self._code = 130
                return
            except ray_errors.RayError as exc:
                self._lost(exc)
                return
            self._take(item)
            if "artifacts" in item:  # its ref keeps the object in the store, not the bytes here
                self._packs[self._env.id] = ref

    def _take(self, item: dict[str, Any]) -> None:
        if "node" in item:
            self._node = item["node"]
        if item.get("records"):
            os.write(self._records, item["records"])
            os.fsync(self._records)
        if item.get("log"):
            self._log.write(item["log"])
            self._log.flush()
        if item.get("build_log"):
            with self._build_log.open("ab") as build_log:
                build_log.write(item["build_log"])
        if "end" in item:
            self._end = item["end"]
            self._reason = self._end.get("console", "")
            self._code = int(self._end["returncode"])

    def _lost(self, exc: ray_errors.RayError) -> None:
        """The task ended without its end: cancelled by us, or lost with its node."""
        if self._stopping or isinstance(exc, ray_errors.TaskCancelledError):
            self._code = 130
            return
        node_id = self._node.get("id", "")
        where = self._names.get(node_id, "its node")
        self._code = 1
        if not isinstance(exc, LOST):  # the task itself failed: the node is still good
            self._reason = f"the task failed on {where}: {_first_line(exc)}"
            return
        self._lost_nodes.add(node_id)
        self._reason = f"lost on {where}: {_first_line(exc)}"
        self._retry = self._spec.attempt == 1
        self._reason += "; retried once on another node" if self._retry else "; not retried again"

    def _check_pending(self) -> None:
        """A task not started yet waits for a slot; once no node it may go to is alive it
        would wait forever, so it fails then, saying so."""
        if self._node or time.monotonic() - self._checked < PENDING_CHECK_S:
            return
        self._checked = time.monotonic()
        alive = {node.id for node in nodes() if node.alive}
        if not alive & set(self._eligible):
            self._cancel(force=True)
            self._code = 1
            names = ", ".join(self._names.get(i, i[:8]) for i in self._eligible)
            self._reason = f"no node that can run it is alive any more ({names})"


@ray.remote(num_cpus=0, max_retries=0)
def _survey(config: dict[str, Any], build_root: str) -> dict[str, Any]:
    """On a node: its code's version, Pythons, and which environments its backend can make."""
    return ray_node.survey(config, build_root)


@ray.remote(num_cpus=0, max_retries=0)
def _measure(spec: dict[str, Any], *packs: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """On a node: one environment, streamed (`ray_node.stream`), after saying where it runs;
    a loader of the cross-load is given the items holding its savers' artifacts."""
    node = {"id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname()}
    yield {"node": node}
    parsed = NodeSpec(**spec)
    stamp = {
        "ray_node_id": node["id"],
        "ray_node_hostname": node["hostname"],
        "ray_attempt": parsed.attempt,
    }
    yield from ray_node.stream(parsed, stamp, tuple(item["artifacts"] for item in packs))


@ray.remote(num_cpus=0, max_retries=0)
def _clean(config: dict[str, Any], build_root: str, run_id: str) -> str:
    """On a node, after Ctrl-C: what the run's killed tasks left there (`ray_node.cleanup`)."""
    return ray_node.cleanup(config, build_root, run_id)


def _node_error(exc: BaseException) -> str:
    """Why a node could not answer, as a user can act on it."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, ModuleNotFoundError):
        return (
            f"{_first_line(cause)}: install tf-load-matrix there "
            "(pip install 'tf-load-matrix[ray]'; docs/ray.md)"
        )
    return _first_line(cause)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
