"""`matrix run --backend ray` on a real two-node Ray cluster: two `ray start` processes here.

The nodes measure with their venv backend, reusing the venvs the venv tests make
(`venv_root`). One sweep shows both nodes used, one measurement at a time per node, records
of the local schema carrying their node, and a failing environment recorded while the others
finish; then Ctrl-C, which must leave no task, process or folder behind, and the loss of a
node, whose environment is retried once on the other. On the same cluster the docker node
backend pulls the session's image from a real registry the driver pushed it to (`--registry`).
The cluster is always torn down.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from harness.contract import RECORDS, common_fields, fields_of
from matrix.build.images import ImageResult, registry_reference
from matrix.build.venvs import venv_path
from matrix.execute.backends.ray_local import LocalCluster
from matrix.plan.config import load_config
from matrix.plan.environments import expand
from matrix.plan.pythons import find_pythons
from matrix.results.dataset import load_runs
from matrix.results.reader import read_jsonl
from tests.integration.docker_matrix import MATRIX_YAML, matrix, records

pytestmark = pytest.mark.slow

WORKER_LABEL = "tier=worker"
SLOT_RELEASE_S = 60.0
WAIT_S = 900.0  # for harnesses to start: a venv is made first when the venv tests have not
MEASURE = (
    "--py",
    "3.11",
    "--models",
    "dense-10k",
    "--formats",
    "h5",
    "--cache",
    "warm",
    "--repeats",
    "2",
    "--warmup",
    "0",
    "--inference-runs",
    "2",
    "--no-report",
)
SLICE = ("--node-backend", "venv", *MEASURE)
OK_ENVS = ["tf2.12-py3.11-cpu", "tf2.21-py3.11-cpu", "tf2.21-py3.11-cpu-tfkeras"]
FAILING_ENV = "tf2.20-py3.11-cpu"  # its venv folder is taken by a file: its install fails


@dataclass
class Cluster:
    """The two-node cluster, and where its nodes keep their venvs."""

    local: LocalCluster
    build_root: Path

    def run(self, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return matrix(work, *self.run_args(*args), env=self.local.environ)

    def run_args(self, *args: str) -> list[str]:
        ray = ["--backend", "ray", "--address", self.local.address]
        return ["run", *ray, "--build-dir", str(self.build_root), *args]

    def start(self, work: Path, *args: str) -> subprocess.Popen[str]:
        """`matrix run` started, in a session of its own: a SIGINT sent to it alone is the
        Ctrl-C a user types."""
        return subprocess.Popen(
            [sys.executable, "-m", "matrix", *self.run_args(*args)],
            cwd=work,
            env={**self.local.environ, "COLUMNS": "200"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def processes(self, text: str) -> list[str]:
        return [cmd for _, cmd in self.local.processes(text)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, venv_root: Path) -> Iterator[Cluster]:
    """A head and a worker node, one slot and one CPU each, with token authentication on."""
    with LocalCluster(tmp_path_factory.mktemp("ray"), labels=["", WORKER_LABEL]) as local:
        yield Cluster(local, venv_root)


@pytest.fixture(scope="module")
def sweep(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sweep of four environments over both nodes, one of them made to fail."""
    config = load_config(None, {"tf": "2.20", "python": "3.11"})
    (failing,) = expand(config)[0]
    blocker = venv_path(failing, find_pythons()["3.11"], cluster.build_root)
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a virtual environment\n")
    work = tmp_path_factory.mktemp("ray-sweep")
    try:
        proc = cluster.run(
            work,
            *("--tf", "2.12,2.20,2.21", "--keras", "default,legacy"),
            *("--only", f"tf2.12-*,{FAILING_ENV},tf2.21-*"),
            *("--run-id", "ray-sweep"),
            *SLICE,
        )
    finally:
        blocker.unlink()
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    return work / "results" / "ray-sweep"


def test_every_environment_is_measured_or_recorded_as_failed(sweep) -> None:
    run_dir = sweep
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["backend"] == "ray"
    status = {o["env_id"]: o["status"] for o in manifest["outcomes"]}
    assert status == {**dict.fromkeys(OK_ENVS, "ok"), FAILING_ENV: "build-failed"}
    for env_id in OK_ENVS:
        found = records(run_dir, env_id)
        assert found[-1]["kind"] == "done", found[-1]
        trials = [r for r in found if r["kind"] == "trial"]
        assert len(trials) == found[-1]["trials_written"] >= 2, trials
        assert all(t["status"] == "ok" for t in trials), trials
    (failure,) = records(run_dir, FAILING_ENV)
    assert failure["kind"] == "failure" and failure["scope"] == "environment"
    assert "virtual environment failed" in failure["reason"], failure


def test_both_nodes_measured_and_the_records_say_which(sweep, cluster: Cluster) -> None:
    run_dir = sweep
    outcomes = json.loads((run_dir / "manifest.json").read_text())["outcomes"]
    assert len({o["node_id"] for o in outcomes}) == 2, outcomes
    for outcome in outcomes:
        assert outcome["node_hostname"] == socket.gethostname()
        assert outcome["node_backend"] == "venv" and outcome["attempt"] == 1
        if outcome["status"] == "ok":
            (environment,) = [
                r for r in records(run_dir, outcome["env_id"]) if r["kind"] == "environment"
            ]
            assert environment["ray_node_id"] == outcome["node_id"]
            assert environment["ray_node_hostname"] == socket.gethostname()
            assert environment["ray_attempt"] == 1


def test_a_node_never_measures_two_environments_at_once(sweep) -> None:
    """From the records' own times: per node, each environment's span (its plan record to its
    done record) ends before the next begins. Four environments on two nodes: one node ran at
    least two of the three that measured."""
    run_dir = sweep
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for env_id in OK_ENVS:
        found = records(run_dir, env_id)
        (environment,) = [r for r in found if r["kind"] == "environment"]
        times = [datetime.fromisoformat(r["time"]) for r in found]
        spans.setdefault(environment["ray_node_id"], []).append((min(times), max(times)))
    assert max(len(s) for s in spans.values()) >= 2, spans
    for node_spans in spans.values():
        node_spans.sort()
        for (_, end), (start, _) in zip(node_spans, node_spans[1:]):
            assert end <= start, node_spans


def test_every_record_matches_the_schema(sweep) -> None:
    """The driver's records files are what a local sweep writes: every line a record of a
    known kind with only the fields the contract defines for it (docs/records.md)."""
    run_dir = sweep
    for env_id in [*OK_ENVS, FAILING_ENV]:
        read = read_jsonl(run_dir / f"{env_id}.jsonl")
        assert read.problems == []
        for record in read.records:
            assert record["kind"] in RECORDS, record
            assert record["run_id"] == "ray-sweep" and record["env_id"] == env_id
            unknown = set(record) - set(common_fields()) - set(fields_of(record["kind"]))
            assert not unknown, (record["kind"], unknown)


def test_cross_load_carries_the_artifacts_to_each_loader_s_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    """`--cross-load` on two nodes: each environment's artifacts travel through Ray's object
    store to every loader, which loads them on its own node (its records say which), and the
    records stream to the driver's `crossload/` as an environment's do. Keras 2's H5 loads in
    Keras 3; Keras 3's is refused by Keras 2 (as the venv cross-load observes)."""
    old, new = "tf2.12-py3.11-cpu", "tf2.21-py3.11-cpu"
    started = time.monotonic()
    proc = cluster.run(
        tmp_path,
        *("--run-id", "ray-cross", "--tf", "2.12,2.21", "--node-backend", "venv", "--py", "3.11"),
        *("--models", "dense-10k", "--formats", "h5", "--cache", "warm", "--repeats", "1"),
        *("--warmup", "0", "--inference-runs", "1", "--no-report", "--cross-load"),
    )
    print(f"ray sweep with --cross-load: {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    run_dir = tmp_path / "results" / "ray-cross"
    own = json.loads((run_dir / "manifest.json").read_text())["outcomes"]
    assert len({o["node_id"] for o in own}) == 2, own  # so every loader loads another node's
    outcomes = json.loads((run_dir / "crossload" / "manifest.json").read_text())["outcomes"]
    assert [(o["env_id"], o["status"], o["attempt"]) for o in outcomes] == [
        (old, "ok", 1),
        (new, "ok", 1),
    ]
    loads: dict[tuple[str, str], dict] = {}
    for outcome in outcomes:
        loader = outcome["env_id"]
        found = records(run_dir / "crossload", loader)
        (environment,) = [r for r in found if r["kind"] == "environment"]
        assert environment["ray_node_id"] == outcome["node_id"], (environment, outcome)
        assert found[-1]["kind"] == "done", found[-1]
        for trial in (r for r in found if r["kind"] == "trial"):
            loads[trial["saved_by"]["env_id"], loader] = trial
    assert set(loads) == {(old, old), (old, new), (new, old), (new, new)}, loads
    keras2_in_keras3 = loads[old, new]
    assert keras2_in_keras3["status"] == "ok" and keras2_in_keras3["parity_status"] == "pass"
    assert keras2_in_keras3["load_api"] == "keras.models.load_model"
    assert loads[new, old]["status"] == "incompatible", loads[new, old]
    assert "batch_shape" in loads[new, old]["reason"]
    assert not (cluster.build_root / "ray-runs" / "ray-cross").exists()
    _assert_read_as_given(run_dir, len(loads))


def _assert_read_as_given(run_dir: Path, trials: int) -> None:
    """The driver wrote whom it gave each loader, so the report reads every streamed trial."""
    ds = load_runs([run_dir])
    assert len(ds.crossloads[ds.crossloads["kind"] == "trial"]) == trials, ds.problems
    assert not [p for p in ds.problems if "saver" in p], ds.problems


def test_docker_nodes_cross_load_from_copies_of_each_saver_s_volume(
    cluster: Cluster, docker_engine, tmp_path: Path
) -> None:
    """`--cross-load` with `--node-backend docker`: each saver's volume is packed on its node,
    travels through the object store, and each loader's node makes its own copies of them as
    volumes, mounted read-only into the loader's container (the engine's own events show them
    made and removed: both nodes share this machine's engine, so the savers' volumes are there
    too, and are not what the loaders read). Keras 2's H5 loads in Keras 3 in a container."""
    old, new, run_id = "tf2.15-py3.11-cpu", "tf2.21-py3.11-cpu", "ray-docker-cross"
    (tmp_path / "matrix.yaml").write_text(MATRIX_YAML)  # the session's images, by content
    since = int(time.time())
    try:
        proc = cluster.run(
            tmp_path,
            *("--run-id", run_id, "--tf", "2.15,2.21", "--node-backend", "docker", "--py", "3.11"),
            *("--models", "dense-10k", "--formats", "h5", "--cache", "warm", "--repeats", "1"),
            *("--warmup", "0", "--inference-runs", "1", "--no-report", "--cross-load"),
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        events = docker_engine.events(
            since=since, until=int(time.time()) + 1, filters={"type": "volume"}, decode=True
        )
        made = {(e["Action"], e["Actor"]["ID"]) for e in events}
    finally:
        for volume in docker_engine.volumes.list(filters={"name": f"tflm-{run_id}-"}):
            volume.remove(force=True)
    run_dir = tmp_path / "results" / run_id
    outcomes = json.loads((run_dir / "crossload" / "manifest.json").read_text())["outcomes"]
    assert {(o["env_id"], o["status"], o["node_backend"]) for o in outcomes} == {
        (old, "ok", "docker"),
        (new, "ok", "docker"),
    }, outcomes
    copies = {
        f"tflm-{run_id}-{loader}-from-{saver}" for loader in (old, new) for saver in (old, new)
    }
    assert {("create", name) for name in copies} <= made, made
    assert {("destroy", name) for name in copies} <= made, made
    loads = {}
    for loader in (old, new):
        for trial in (r for r in records(run_dir / "crossload", loader) if r["kind"] == "trial"):
            loads[trial["saved_by"]["env_id"], loader] = trial
    assert set(loads) == {(old, old), (old, new), (new, old), (new, new)}, loads
    keras2_in_keras3 = loads[old, new]
    assert keras2_in_keras3["status"] == "ok" and keras2_in_keras3["parity_status"] == "pass"
    assert keras2_in_keras3["container_id"], keras2_in_keras3  # in the loader's container
    assert loads[new, old]["status"] == "incompatible", loads[new, old]
    assert "batch_shape" in loads[new, old]["reason"]
    _assert_read_as_given(run_dir, len(loads))


def test_doctor_lists_the_nodes_and_where_each_environment_can_run(
    cluster: Cluster, tmp_path: Path
) -> None:
    args = ["doctor", "--backend", "ray", "--address", cluster.local.address]
    args += ["--node-backend", "venv"]
    args += ["--tf", "2.21", "--py", "3.11", "--both", "--build-dir", str(cluster.build_root)]
    proc = matrix(tmp_path, *args, env=cluster.local.environ)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 measurement node(s) of 2, 2 slot(s), 0 GPU(s)" in proc.stdout
    assert "every node runs tf-load-matrix" in proc.stdout
    assert re.search(r"tf2\.21-py3\.11-cpu\s+│ \S+ \(\w{8}\), \S+ \(\w{8}\)", proc.stdout)
    assert re.search(r"tf2\.21-py3\.11-gpu\s+│ none: .*no GPU", proc.stdout)
    proc = matrix(tmp_path, *args, "--ray-nodes", WORKER_LABEL, env=cluster.local.environ)
    assert "1 measurement node(s) of 2, 1 slot(s)" in proc.stdout, proc.stdout


def test_gpu_environments_without_a_gpu_node_are_skipped_at_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Ray would keep a task asking for a GPU pending forever: it is never submitted."""
    started = time.monotonic()
    proc = cluster.run(tmp_path, "--tf", "2.21", "--gpu", *SLICE)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no GPU (Ray resource GPU)" in proc.stdout
    assert time.monotonic() - started < 120


def test_ctrl_c_leaves_no_task_process_or_folder_behind(cluster: Cluster, tmp_path: Path) -> None:
    run_id = f"ray-stop-{secrets.token_hex(2)}"
    driver = cluster.start(tmp_path, "--run-id", run_id, "--tf", "2.12,2.21", *SLICE)
    run_dir = tmp_path / "results" / run_id
    try:
        _wait_for(
            lambda: all(
                any(r["kind"] == "environment" for r in _maybe_records(run_dir, env_id))
                for env_id in ("tf2.12-py3.11-cpu", "tf2.21-py3.11-cpu")
            ),
            run_dir,
        )
        assert cluster.processes(run_id), "both harnesses run: the check below means something"
        driver.send_signal(signal.SIGINT)
        output, _ = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, output[-4000:]
    assert cluster.processes(run_id) == []
    # the raylets free a killed task's slot when they see its worker gone, and `ray status`
    # reports their view some seconds later: a slot still held after a minute is leaked
    _wait_for(lambda: cluster.local.slots_in_use() == 0, "free slots", timeout=SLOT_RELEASE_S)
    assert not (cluster.build_root / "ray-runs" / run_id).exists()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["ended"] is None
    assert {o["status"] for o in manifest["outcomes"]} == {"interrupted"}
    assert "interrupted: cancelled 2 task(s)" in output


def test_docker_nodes_pull_the_image_the_driver_pushed_to_the_registry(
    cluster: Cluster, registry, cpu_image: ImageResult, docker_engine, tmp_path: Path
) -> None:
    """`--node-backend docker --registry`: the driver finds the session's image by its content
    tag (builds nothing) and pushes it to a real registry; the node pulls that exact reference
    and measures in it. The driver removes the registry's name once pushed, so on this one
    engine the name comes back only by the node's pull, which the registry's log shows too."""
    (tmp_path / "matrix.yaml").write_text(MATRIX_YAML)
    reference = registry_reference(registry.address, cpu_image.tag)
    repository, _, tag = reference.partition("/")[2].rpartition(":")
    run_dir = tmp_path / "results" / "ray-registry"
    started = time.monotonic()
    try:
        proc = cluster.run(
            tmp_path,
            *("--node-backend", "docker", "--registry", registry.address),
            *("--run-id", "ray-registry", "--tf", "2.21", *MEASURE),
        )
        print(f"ray sweep through the registry: {time.monotonic() - started:.0f} s")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        (outcome,) = json.loads((run_dir / "manifest.json").read_text())["outcomes"]
        assert outcome["status"] == "ok" and outcome["node_backend"] == "docker", outcome
        assert outcome["image_source"] == "pulled" and outcome["image"] == reference, outcome
        assert docker_engine.images.get(reference).id == cpu_image.image_id
    finally:  # the registry's names only: the images stay, under their content tags
        for image in docker_engine.images.list(name=f"{registry.address}/{repository}"):
            for name in image.tags:
                if name.startswith(f"{registry.address}/"):
                    docker_engine.images.remove(name)
    found = records(run_dir, outcome["env_id"])
    assert found[-1]["kind"] == "done" and found[-1]["trials_written"] >= 2, found[-1]
    (environment,) = [r for r in found if r["kind"] == "environment"]
    assert environment["in_container"] and environment["ray_node_id"] == outcome["node_id"]
    listed = urllib.request.urlopen(f"http://{registry.address}/v2/{repository}/tags/list")
    assert tag in json.load(listed)["tags"]
    # The node's pull asks for the manifest the push had put (HEAD by tag, perhaps GET by digest)
    log = registry.log.read_text()
    manifest = rf'http\.request\.uri="?/v2/{repository}/manifests/'
    pushed = re.search(rf"method=PUT \S+ {manifest}", log)
    assert pushed and re.search(rf"method=(HEAD|GET) \S+ {manifest}", log[pushed.end() :]), log
    assert "Downloaded newer image" in (run_dir / f"{outcome['env_id']}.build.log").read_text()


def test_a_registry_that_does_not_answer_is_a_failure_naming_it(
    cluster: Cluster, cpu_image: ImageResult, tmp_path: Path
) -> None:
    """The push fails at once: a `failure` record naming the registry and what to check, the
    run's exit code 3 (nothing measured), no traceback."""
    (tmp_path / "matrix.yaml").write_text(MATRIX_YAML)
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{probe.getsockname()[1]}"
    started = time.monotonic()
    proc = cluster.run(
        tmp_path,
        *("--node-backend", "docker", "--registry", nowhere),
        *("--run-id", "ray-no-registry", "--tf", "2.21", *MEASURE),
    )
    print(f"ray sweep with a dead registry: {time.monotonic() - started:.0f} s")
    assert proc.returncode == 3, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    (failure,) = records(tmp_path / "results" / "ray-no-registry", cpu_image.env_id)
    assert failure["kind"] == "failure" and failure["scope"] == "environment", failure
    assert f"to the registry {nowhere} failed" in failure["reason"], failure
    assert f"curl http://{nowhere}/v2/" in failure["reason"], failure


def test_a_lost_node_s_environment_is_retried_once_on_the_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The worker node is killed outright while it measures: its environment is recorded as
    failed (set aside), then measured again on the head node, and its records say so."""
    run_id = "ray-lost-node"
    driver = cluster.start(tmp_path, "--run-id", run_id, "--tf", "2.12,2.21", *SLICE)
    run_dir = tmp_path / "results" / run_id
    worker = cluster.local.node_id("worker1")
    try:
        on_worker = _wait_for(lambda: _env_on(worker, run_dir), run_dir)
        cluster.local.kill("worker1")
        output, _ = driver.communicate(timeout=1500)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, output[-4000:]
    outcomes = json.loads((run_dir / "manifest.json").read_text())["outcomes"]
    (retried,) = [o for o in outcomes if o["env_id"] == on_worker]
    assert retried["status"] == "ok" and retried["attempt"] == 2, retried
    (environment,) = [r for r in records(run_dir, on_worker) if r["kind"] == "environment"]
    assert environment["ray_attempt"] == 2 and environment["ray_node_id"] == retried["node_id"]
    assert retried["node_id"] == cluster.local.node_id("head")
    aside = read_jsonl(run_dir / f"{on_worker}.jsonl.partial").records
    assert aside[-1]["kind"] == "failure", aside[-1]
    assert "retried once on another node" in aside[-1]["reason"]


def _env_on(node_id: str, run_dir: Path) -> str | None:
    """The environment node `node_id` measures, once its records say so."""
    for path in run_dir.glob("*.jsonl"):
        for record in _maybe_records(run_dir, path.stem):
            if record["kind"] == "environment" and record.get("ray_node_id") == node_id:
                return path.stem
    return None


def _maybe_records(run_dir: Path, env_id: str) -> list[dict]:
    path = run_dir / f"{env_id}.jsonl"
    return read_jsonl(path).records if path.exists() else []


def _wait_for(condition, what: object, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting on {what}")
