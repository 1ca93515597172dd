"""The ray backend's decisions, from a cluster described in data (no Ray process runs here).

Which nodes measure (`--ray-nodes`), which environments each can run and why not, the version
check's message, and what a node changes in the records it streams. The real two-node cluster
runs in tests/integration/test_ray_backend.py; these are its fast doubles.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from matrix.build.images import registry_reference
from matrix.errors import ConfigError
from matrix.execute.backends.ray import Node, RayBackend, mismatch, other_code, selected
from matrix.execute.backends.ray_node import (
    NodeSpec,
    _Rewrite,
    _Tail,
    node_matrix,
    pack_artifacts,
    unpack_artifacts,
)
from matrix.execute.crossload import CrossLoadStep
from matrix.plan.config import load_config
from matrix.plan.environments import Environment, expand

CONFIG = load_config(None, {"backend": "ray", "tf": "2.21", "python": "3.11", "device": "cpu,gpu"})
CPU, GPU = expand(CONFIG)[0]


def node(name: str, planned: list[Environment], **fields: Any) -> Node:
    survey = {
        "tool": "tf-load-matrix 0.1.0 (source aaaa)",
        "pythons": ["3.11"],
        "backend": "venv",
        "environments": [asdict(env) | {"id": env.id} for env in planned],
        "skipped": [],
    }
    defaults: dict[str, Any] = {
        "id": name * 8,
        "hostname": name,
        "address": "10.0.0.1",
        "alive": True,
        "slots": 1,
        "gpus": 0,
        "labels": {},
        "resources": {"tf_load_matrix": 1.0},
        "survey": survey,
    }
    return Node(**(defaults | fields))


def test_only_alive_nodes_with_a_slot_measure() -> None:
    nodes = [node("a", []), node("b", [], alive=False), node("c", [], slots=0)]
    assert [n.hostname for n in selected(nodes, "")] == ["a"]


def test_ray_nodes_keeps_one_hardware_class_by_label_or_resource() -> None:
    a100 = node("g", [], labels={"hw": "a100"}, resources={"tf_load_matrix": 1.0, "a100": 1.0})
    cpu = node("c", [], labels={"hw": "c6i"})
    assert selected([a100, cpu], "hw=a100") == [a100]
    assert selected([a100, cpu], "a100") == [a100]
    assert selected([a100, cpu], "hw=h100") == []


def test_a_gpu_environment_goes_only_where_ray_counts_a_gpu() -> None:
    cpu_node = node("c", [CPU, GPU])  # its backend could make it, Ray has no GPU to give it
    gpu_node = node("g", [CPU, GPU], gpus=1)
    backend = RayBackend(CONFIG, Path("/build"), [cpu_node, gpu_node])
    environments, skipped = backend.environments(CONFIG)
    assert environments == [CPU, GPU] and skipped == []
    assert [cpu_node.runs(env) for env in (CPU, GPU)] == [True, False]
    assert gpu_node.runs(GPU)
    assert backend.slots == 2


def test_an_environment_no_node_can_run_is_skipped_with_each_node_s_reason() -> None:
    why = {"id": GPU.id, "reason": "no NVIDIA GPU on this host"}
    a = node("a", [CPU])
    a.survey["skipped"].append(why)
    b = node("b", [], survey={"error": "No module named 'matrix'"})
    environments, skipped = RayBackend(CONFIG, Path("/build"), [a, b]).environments(CONFIG)
    assert environments == [CPU]
    (cell,) = [s for s in skipped if s.id == GPU.id]
    assert "a (aaaaaaaa): no GPU (Ray resource GPU)" in cell.reason
    assert "b (bbbbbbbb): No module named 'matrix'" in cell.reason


def test_a_node_running_other_code_is_named_with_both_versions() -> None:
    ours = "tf-load-matrix 0.1.0 (source aaaa)"
    other = node("b", [], survey={"tool": "tf-load-matrix 0.1.0 (source bbbb)"})
    assert other_code([node("a", []), other], {ours}) == [other]
    assert other_code([node("a", []), other], {ours, "tf-load-matrix 0.1.0 (source bbbb)"}) == []
    message = mismatch(other)
    assert "node b (bbbbbbbb) runs tf-load-matrix 0.1.0 (source bbbb), this driver " in message


def test_a_node_stamps_the_environment_record_and_points_reasons_at_the_driver() -> None:
    rewrite = _Rewrite({"ray_node_id": "n1", "ray_attempt": 1}, "/node/run", "/driver/run")
    trial = b'{"kind": "trial", "load_s": 0.1}\n'
    environment = b'{"kind": "environment", "hostname": "h"}\n'
    failure = b'{"kind": "failure", "scope": "environment", "reason": "see /node/run/e.log"}\n'
    out = rewrite.lines(trial + environment + failure).splitlines(keepends=True)
    assert out[0] == trial  # untouched, byte for byte
    assert json.loads(out[1]) == {"kind": "environment", "hostname": "h", "ray_node_id": "n1"} | {
        "ray_attempt": 1
    }
    assert json.loads(out[2])["reason"] == "see /driver/run/e.log"


def test_the_tail_hands_over_whole_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    tail = _Tail(path, whole_lines=True)
    assert tail.read() == b""
    path.write_bytes(b'{"a": 1}\n{"b"')
    assert tail.read() == b'{"a": 1}\n'
    with path.open("ab") as more:
        more.write(b": 2}\n")
    assert tail.read() == b'{"b": 2}\n'


def test_the_spec_travels_as_plain_data_and_comes_back_the_same() -> None:
    spec = NodeSpec(
        run_id="r1",
        env=asdict(GPU),
        config=CONFIG.model_dump(mode="json") | {"node_backend": "docker"},
        build_root="/var/cache/tflm",
        attempt=2,
        driver_run_dir="/home/me/results/r1",
        image="reg.lab:5000/tf-load-matrix:tf2.21-py3.11-gpu-0123456789ab",
    )
    back = NodeSpec(**json.loads(json.dumps(asdict(spec))))
    assert back.image == spec.image and back.environment() == GPU
    assert back.workdir() == Path(f"/var/cache/tflm/ray-runs/r1/{GPU.id}-2")
    measured = node_matrix(back.config, Path("/scratch"))
    assert measured.backend == "docker" and measured.results_dir == Path("/scratch")
    same = {"backend", "results_dir", "node_backend"}
    assert measured.model_dump(exclude=same) == CONFIG.model_dump(exclude=same)


def test_a_loader_s_spec_runs_the_cross_load_step_and_unpacks_checked_read_only(
    tmp_path: Path,
) -> None:
    """The artifacts' trip between nodes, without Ray: packed where they were saved, unpacked
    where the loader's harness reads them (`CrossLoadStep`'s default `--work`)."""
    saver = {"env_id": CPU.id, "tensorflow": "2.21.0", "keras_impl": "keras3"}
    spec = NodeSpec("r1", asdict(CPU), CONFIG.model_dump(mode="json"), "/b", 1, "/d", "", (saver,))
    run = NodeSpec(**json.loads(json.dumps(asdict(spec)))).matrix_run(CONFIG)
    assert isinstance(run, CrossLoadStep) and run.savers == (saver,)
    assert spec.workdir().name == f"{CPU.id}-crossload-1"
    saved = tmp_path / "saved"
    (saved / "dense-10k").mkdir(parents=True)
    (saved / "dense-10k" / "model.h5").write_bytes(b"weights")
    pack = pack_artifacts(saved, CPU.id)
    unpack_artifacts(pack, tmp_path / "copy")
    copy = tmp_path / "copy" / "dense-10k" / "model.h5"
    assert copy.read_bytes() == b"weights" and copy.stat().st_mode & 0o777 == 0o444
    with pytest.raises(ValueError, match=f"the artifacts of {CPU.id} arrived with sha256"):
        unpack_artifacts(pack | {"tar": pack["tar"][:-1] + b"x"}, tmp_path / "tampered")


def test_matrix_starts_without_ray() -> None:
    """Ray is an optional extra: the CLI, and every backend but ray, never import it."""
    code = (
        "import sys, matrix.cli, matrix.execute.backends.venv, matrix.execute.backends.local;"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_registry_is_host_port_and_prefix_for_docker_nodes_only() -> None:
    """`--registry` names where images go, never how to log in; only docker nodes pull."""
    docker_nodes = {"backend": "ray", "node_backend": "docker"}
    config = load_config(None, docker_nodes | {"registry": "reg.lab:5000/team"})
    assert registry_reference(config.registry, "tf-load-matrix:tf2.21-py3.11-cpu-0a1b") == (
        "reg.lab:5000/team/tf-load-matrix:tf2.21-py3.11-cpu-0a1b"
    )
    assert load_config(None, docker_nodes).registry == ""  # the default: each node builds
    for given in ("https://reg.lab:5000", "me:secret@reg.lab:5000", "reg.lab:5000/Team"):
        with pytest.raises(ConfigError, match=r"--registry: invalid registry .*docker login"):
            load_config(None, docker_nodes | {"registry": given})
    for other in ({"backend": "ray", "node_backend": "venv"}, {"backend": "docker"}):
        with pytest.raises(ConfigError, match=r"^--registry: only --backend ray with --node-b"):
            load_config(None, other | {"registry": "reg.lab:5000"})
