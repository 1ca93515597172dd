"""The artifact cache's key and entries (harness.artifact_cache), on plain files.

A real save and reuse across two runs is in tests/integration/test_forked_trials.py.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from harness import artifact_cache
from harness.artifact_cache import ArtifactCache
from harness.catalog import ModelOptions, parse_model

ENV = {"python": "3.11", "executable": "/venv/bin/python", "dists": ["tensorflow==2.21.0"]}


def _folder(root: Path, key: dict) -> str:
    return ArtifactCache(str(root), key).folder


def test_the_key_follows_every_input_of_saving(tmp_path: Path) -> None:
    code, inputs, model_file = tmp_path / "layers.py", tmp_path / "x.npz", tmp_path / "m.h5"
    code.write_text("A = 1\n")
    inputs.write_bytes(b"inputs")
    model_file.write_bytes(b"weights")
    spec = replace(
        parse_model(str(model_file)),
        options=ModelOptions(code=(str(code),), inputs=str(inputs)),
    )

    def key(environment: dict = ENV, weights: str = "none") -> str:
        return _folder(tmp_path, artifact_cache.model_key(spec, weights, environment))

    first = key()
    assert key() == first
    assert key(weights="imagenet") != first
    assert key({**ENV, "dists": ["tensorflow==2.20.0"]}) != first
    for path, content in ((code, b"A = 2\n"), (inputs, b"other"), (model_file, b"tuned")):
        before = path.read_bytes()
        path.write_bytes(content)
        assert key() != first, path.name
        path.write_bytes(before)
    assert key() == first


def test_the_key_differs_per_model_and_includes_the_harness_code(tmp_path: Path) -> None:
    keys = {
        name: artifact_cache.model_key(parse_model(name), "none", ENV)
        for name in ("dense-10k", "dense-20k", "MobileNetV2")
    }
    assert len({_folder(tmp_path, k) for k in keys.values()}) == 3
    assert keys["dense-10k"]["harness"] == artifact_cache.harness_hash()


def _saved_run(folder: Path) -> dict:
    """What a save worker leaves for an h5 and a SavedModel artifact."""
    folder.mkdir(parents=True)
    (folder / "parity-inputs.npz").write_bytes(b"batch")
    (folder / "parity-inputs.json").write_text("{}")
    (folder / "reference-0.npz").write_bytes(b"ref")
    (folder / "model.h5").write_bytes(b"h5 bytes")
    (folder / "savedmodel" / "variables").mkdir(parents=True)
    (folder / "savedmodel" / "saved_model.pb").write_bytes(b"pb")
    (folder / "savedmodel" / "variables" / "variables.index").write_bytes(b"idx")
    return {"status": "ok", "reference": str(folder / "reference-0.npz"), "save_s": 1.5}


def test_an_entry_is_reused_by_hard_link_and_dropped_when_tampered(tmp_path: Path) -> None:
    key = artifact_cache.model_key(parse_model("dense-10k"), "none", ENV)
    first = tmp_path / "run1" / "dense-10k"
    saved = _saved_run(first)
    store = ArtifactCache(str(tmp_path / "cache"), key)
    store.store("h5", str(first), {**saved, "path": str(first / "model.h5")}, {"params": 3})
    store.store("savedmodel", str(first), {**saved, "path": str(first / "savedmodel")}, {})

    second = tmp_path / "run2" / "dense-10k"
    second.mkdir(parents=True)
    model, found = ArtifactCache(str(tmp_path / "cache"), key).reuse(
        ["h5", "savedmodel", "tflite"], str(second)
    )
    assert set(found) == {"h5", "savedmodel"} and model == {}  # the last entry's description
    assert found["h5"]["saved"]["save_s"] == 1.5
    placed = second / "savedmodel" / "variables" / "variables.index"
    assert placed.read_bytes() == b"idx"
    assert os.stat(second / "model.h5").st_ino == os.stat(first / "model.h5").st_ino
    assert (second / artifact_cache.reference_name("h5")).read_bytes() == b"ref"

    (first / "model.h5").write_bytes(b"poisoned")  # a hard link: the cached inode changed too
    third = tmp_path / "run3" / "dense-10k"
    third.mkdir(parents=True)
    _, found = ArtifactCache(str(tmp_path / "cache"), key).reuse(["h5", "savedmodel"], str(third))
    assert set(found) == {"savedmodel"}
    assert not (third / "model.h5").exists()
    assert not (Path(store.folder) / "h5.json").exists()  # dropped: the next run saves it anew
    assert not (Path(store.folder) / "model.h5").exists()
