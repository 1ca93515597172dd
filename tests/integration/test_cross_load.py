"""`matrix run --cross-load` with two real stacks of different Keras generations, venv backend:
TF 2.12 with Keras 2.12 and TF 2.21 with Keras 3.13 (the venvs test_venv_backend.py makes, shared
through `venv_root`). What is asserted is what these stacks were observed to do (recorded in
docs/cross-load.md), not what their documentation promises.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from matrix.report.compat_grid import grid_cell, grids
from matrix.results.dataset import load_runs
from matrix.results.runs import run_dirs
from tests.integration.docker_matrix import matrix, records

OLD, NEW = "tf2.12-py3.11-cpu", "tf2.21-py3.11-cpu"
SLICE = (
    "--models",
    "dense-10k",
    "--formats",
    "h5,keras,savedmodel-keras",
    "--cache",
    "warm",
    "--repeats",
    "1",
    "--warmup",
    "0",
    "--inference-runs",
    "2",
    "--no-report",
)


@pytest.fixture(scope="module")
def crossed(tmp_path_factory: pytest.TempPathFactory, venv_root: Path) -> tuple[Any, Path]:
    work = tmp_path_factory.mktemp("cross-load")
    proc = matrix(
        work,
        "run",
        "--backend",
        "venv",
        "--tf",
        "2.12,2.21",
        "--py",
        "3.11",
        "--build-dir",
        str(venv_root),
        *SLICE,
        "--cross-load",
    )
    (run_dir,) = run_dirs(work / "results")
    return proc, run_dir


def _loads(run_dir: Path, loader: str, saver: str, fmt: str) -> list[dict[str, Any]]:
    """The cross-load trials of `saver`'s `fmt` artifact in `loader`, in the order made."""
    return [
        r
        for r in records(run_dir / "crossload", loader)
        if r["kind"] == "trial" and r["saved_by"]["env_id"] == saver and r["format"] == fmt
    ]


def test_the_cross_load_adds_cells_and_changes_none_of_the_own(crossed: tuple[Any, Path]) -> None:
    proc, run_dir = crossed
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr  # a refusal is no error
    for env_id in (OLD, NEW):
        own = [r for r in records(run_dir, env_id) if r["kind"] == "trial"]
        assert own and all("saved_by" not in r for r in own)
        assert {r["format"] for r in own if r["status"] == "ok"} == {
            "h5",
            "keras",
            "savedmodel-keras",
        }
        assert records(run_dir / "crossload", env_id)[-1]["kind"] == "done"
    manifest = json.loads((run_dir / "crossload" / "manifest.json").read_text())
    assert [o["status"] for o in manifest["outcomes"]] == ["ok", "ok"]
    assert "cross-load: 2 environments: 2 ok" in proc.stdout


def test_the_h5_keras_2_saved_loads_in_keras_3_and_predicts_the_same(
    crossed: tuple[Any, Path],
) -> None:
    (load,) = _loads(crossed[1], NEW, OLD, "h5")
    assert load["status"] == "ok" and load["load_api"] == "keras.models.load_model"
    assert load["saved_by"]["keras"].startswith("2.12") and not load["fallback"]
    assert load["parity_status"] == "pass"
    assert load["parity_rel_err"] <= load["parity_tolerance"]
    assert load["first_prediction_s"] > 0


def test_keras_3_refuses_the_keras_2_savedmodel_then_tfsmlayer_loads_it(
    crossed: tuple[Any, Path],
) -> None:
    refusal, fallback = _loads(crossed[1], NEW, OLD, "savedmodel-keras")
    assert refusal["status"] == "incompatible"
    assert refusal["load_api"] == "keras.models.load_model" and not refusal["fallback"]
    assert refusal["exception"] == "ValueError"
    assert (
        "legacy SavedModel format is not supported by `load_model()` in Keras 3"
        in (refusal["reason"])
    )
    assert fallback["load_api"] == "keras.layers.TFSMLayer" and fallback["fallback"]
    assert fallback["status"] == "ok" and fallback["parity_status"] == "pass"


def test_keras_2_cannot_read_the_keras_3_zip_and_the_record_says_why(
    crossed: tuple[Any, Path],
) -> None:
    (refusal,) = _loads(crossed[1], OLD, NEW, "keras")
    assert refusal["status"] == "incompatible" and refusal["exception"] == "TypeError"
    assert "Unrecognized keyword arguments" in refusal["reason"]
    assert "batch_shape" in refusal["reason"]  # Keras 3's InputLayer config
    assert refusal["saved_by"]["keras_impl"] == "keras3"


def test_the_grid_shows_what_was_recorded(crossed: tuple[Any, Path]) -> None:
    shown = {g.format: g for g in grids(load_runs([crossed[1]]))}
    assert set(shown) == {"h5", "keras", "savedmodel-keras"}
    assert grid_cell(shown["h5"], OLD, NEW)[0].startswith("✓ ")
    assert grid_cell(shown["keras"], NEW, OLD)[0].startswith("✗ TypeError: Unrecognized keyword")
    text, _, hover = grid_cell(shown["savedmodel-keras"], OLD, NEW)
    assert text.endswith("via TFSMLayer (load_model ✗)") and "File format not supported" in hover
    for grid in shown.values():  # the diagonal: each environment's own result
        assert grid_cell(grid, OLD, OLD)[0].startswith("✓ ")
        assert grid_cell(grid, NEW, NEW)[0].startswith("✓ ")


def test_the_diagonal_is_loaded_in_the_same_rounds_as_the_column(crossed: tuple[Any, Path]) -> None:
    """Each loader also loads its own artifacts in its cross-load rounds, so a column's times
    were measured alike; Keras 3 refuses `load_model` of its own SavedModel export too."""
    (own,) = _loads(crossed[1], NEW, NEW, "h5")
    assert own["status"] == "ok" and own["saved_by"]["env_id"] == NEW
    refusal, fallback = _loads(crossed[1], NEW, NEW, "savedmodel-keras")
    assert refusal["status"] == "incompatible" and fallback["status"] == "ok"
