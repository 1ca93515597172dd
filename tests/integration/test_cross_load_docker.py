"""`matrix run --cross-load 'tf2.21-*'` on the docker backend: TF 2.21 (Keras 3) loads what TF
2.15 (Keras 2) saved, from the saver's artifact volume mounted read-only. Its images are the
four-TF sweep's (test_four_tf_sweep.py: the same environments, found by content), so in a full
session nothing is built twice; alone, it builds them (minutes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from matrix.execute.backends.docker import (
    ARTIFACTS_MOUNT,
    artifact_volume,
    container_name,
    mounts,
)
from matrix.execute.crossload import CrossLoadStep
from matrix.plan.config import load_config
from matrix.plan.environments import expand
from matrix.results.runs import run_dirs
from tests.integration.docker_matrix import BASE_IMAGE, matrix, records

pytestmark = pytest.mark.slow

OLD, NEW = "tf2.15-py3.11-cpu", "tf2.21-py3.11-cpu"
CROSS_YAML = f"""
models: [dense-10k]
formats: [h5, savedmodel-keras]
cache: [warm]
repeats: 1
warmup: 0
inference_runs: 2
tf: ["2.15", "2.21"]
python: ["3.11"]
backend: docker
base_images:
  "3.11": {BASE_IMAGE}
cross_load: "tf2.21-*"
"""


def test_a_loader_sees_every_saver_volume_read_only_its_own_too(tmp_path: Path) -> None:
    config = load_config(None, {**yaml.safe_load(CROSS_YAML), "results_dir": tmp_path})
    loader = next(e for e in expand(config)[0] if e.id == NEW)
    run = CrossLoadStep(config=config, run_id="r1", savers=({"env_id": OLD}, {"env_id": NEW}))
    binds = mounts(loader, run)
    for env in (OLD, NEW):
        seen = {"bind": f"{ARTIFACTS_MOUNT}/{env}", "mode": "ro"}
        assert binds[container_name("r1", env)] == seen
    assert all(b["mode"] == "ro" for b in binds.values() if b["bind"].startswith(ARTIFACTS_MOUNT))


def test_loaders_of_artifacts_that_travelled_mount_copies_of_their_own(tmp_path: Path) -> None:
    """On Ray the savers' artifacts are brought to each loader: on one engine (two nodes of a
    machine, or two slots of a node) each loader mounts its own copies, never the savers' own
    volumes, so one loader replacing its copies cannot pull another's from under it."""
    config = load_config(None, {**yaml.safe_load(CROSS_YAML), "results_dir": tmp_path})
    savers = ({"env_id": OLD}, {"env_id": NEW})
    run = CrossLoadStep(config=config, run_id="r1", savers=savers, received=True)
    seen: dict[str, set[str]] = {}
    for loader in (e for e in expand(config)[0] if e.id in (OLD, NEW)):
        binds = mounts(loader, run)
        seen[loader.id] = {
            name for name, b in binds.items() if b["bind"].startswith(ARTIFACTS_MOUNT)
        }
        assert seen[loader.id] == {artifact_volume(run, saver, loader.id) for saver in (OLD, NEW)}
    assert not seen[OLD] & seen[NEW]
    assert not seen[OLD] & {container_name("r1", OLD), container_name("r1", NEW)}


@pytest.fixture(scope="module")
def crossed(tmp_path_factory: pytest.TempPathFactory, docker_engine: Any) -> tuple[Any, Path]:
    work = tmp_path_factory.mktemp("cross-load-docker")
    (work / "matrix.yaml").write_text(CROSS_YAML)
    proc = matrix(work, "run", "--no-report", timeout=3600)
    (run_dir,) = run_dirs(work / "results")
    return proc, run_dir


def test_keras_3_loads_the_keras_2_h5_and_refuses_its_savedmodel_in_docker(
    crossed: tuple[Any, Path],
) -> None:
    proc, run_dir = crossed
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert not (run_dir / "crossload" / f"{OLD}.jsonl").exists()  # not a selected loader
    loads = [r for r in records(run_dir / "crossload", NEW) if r["kind"] == "trial"]
    assert {r["saved_by"]["env_id"] for r in loads} == {OLD, NEW}  # its own: the diagonal
    by = {(r["format"], r["load_api"]): r for r in loads if r["saved_by"]["env_id"] == OLD}
    h5 = by["h5", "keras.models.load_model"]
    assert h5["status"] == "ok" and h5["parity_status"] == "pass"
    assert h5["container_id"]  # it ran in the loader's container
    refusal = by["savedmodel-keras", "keras.models.load_model"]
    assert refusal["status"] == "incompatible" and refusal["exception"] == "ValueError"
    assert "legacy SavedModel format is not supported" in refusal["reason"]
    fallback = by["savedmodel-keras", "keras.layers.TFSMLayer"]
    assert fallback["status"] == "ok" and fallback["parity_status"] == "pass"
