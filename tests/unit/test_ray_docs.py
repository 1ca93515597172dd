"""docs/ray.md's cluster recipes, checked offline (no Kubernetes, no Slurm here).

The KubeRay manifest is validated against the RayCluster v1 OpenAPI schema of KubeRay's CRD,
vendored (tests/fixtures/kuberay/raycluster-v1-schema.json says from where), with unknown fields
refused as `kubectl apply --validate=strict` refuses them; then what the schema cannot know: each
worker group declares one measurement slot, the GPU group asks for a GPU. The Slurm script gets
a shell syntax check only. Every `ray start` shown declares the slot as valid JSON.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import tomllib
import yaml

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "ray.md"
SCHEMA = REPO / "tests" / "fixtures" / "kuberay" / "raycluster-v1-schema.json"
SLOT = "tf_load_matrix"  # matrix.execute.backends.ray.SLOT, without importing Ray here


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the API server would prune them."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    (found,) = [yaml.safe_load(text) for text in blocks("yaml") if "kind: RayCluster" in text]
    return found


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(strict(json.loads(SCHEMA.read_text())["openAPIV3Schema"]))


def test_the_manifest_is_a_valid_raycluster(manifest, validator) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(manifest)]
    assert errors == []
    assert manifest["apiVersion"] == "ray.io/v1"


@pytest.mark.parametrize(
    "path, value",
    [
        (("spec", "workerGroupSpecs", 0, "replica"), 4),  # a typo of `replicas`
        (("spec", "workerGroupSpecs", 0, "resources", SLOT), 1),  # a number where text goes
        (("spec", "headGroupSpec", "template", "spec", "containers", 0, "imagePullPolicy"), 3),
        (("spec", "authOptions", "mode"), "tokens"),  # not in the enum
    ],
)
def test_the_schema_check_refuses_what_kubernetes_would(
    manifest, validator, path: tuple[Any, ...], value: Any
) -> None:
    """The check can fail: a misspelt field, a wrong type, a value outside an enum."""
    broken = json.loads(json.dumps(manifest))
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert list(validator.iter_errors(broken))


def test_every_worker_group_offers_one_slot_and_the_head_none(manifest) -> None:
    groups = manifest["spec"]["workerGroupSpecs"]
    assert {group["resources"][SLOT] for group in groups} == {"1"}
    assert SLOT not in manifest["spec"]["headGroupSpec"].get("resources", {})
    for group in groups:
        assert group["minReplicas"] == group["maxReplicas"] == group["replicas"], group["groupName"]


def test_the_gpu_group_asks_for_a_gpu_and_the_cpu_group_none(manifest) -> None:
    limits = {
        group["groupName"]: group["template"]["spec"]["containers"][0]["resources"]["limits"]
        for group in manifest["spec"]["workerGroupSpecs"]
    }
    assert [name for name, limit in limits.items() if limit.get("nvidia.com/gpu") == "1"] == [
        "gpu-a100"
    ]
    assert "nvidia.com/gpu" not in limits["cpu"]


def test_the_ray_version_is_the_tested_one(manifest) -> None:
    """The image and `rayVersion` are the version the `ray` extra pins: driver and nodes must
    run the same Ray."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (pin,) = extras["optional-dependencies"]["ray"]
    tested = pin.split(">=")[1]
    assert manifest["spec"]["rayVersion"] == tested
    assert f"FROM rayproject/ray:{tested}-py311" in DOC.read_text()


def test_the_slurm_script_is_valid_shell() -> None:
    (script,) = blocks("bash")
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("where", [DOC, REPO / "README.md"])
def test_every_ray_start_shown_declares_the_slot(where: Path) -> None:
    lines = [line.strip() for line in where.read_text().splitlines()]
    starts = [line for line in lines if line.startswith("ray start")]
    assert starts, f"{where.name} shows no `ray start`"
    for line in starts:
        words = shlex.split(line)
        assert json.loads(words[words.index("--resources") + 1]) == {SLOT: 1}, line
