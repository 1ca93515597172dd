"""Artifacts cached by content, so a rerun in an unchanged environment spends its time on loads.

Saving is deterministic given the environment, the model (its spec, file, code and inputs, by
content), the weights, the save worker's fixed seed and the harness's own code: an entry's key
hashes all of them. The orchestrator gives each environment a cache folder of its own (keyed by
its image or venv), so no environment ever reads another's entries, and every file is checked
against the SHA-256 recorded when it was stored before it is reused: an entry whose files
changed since (a hard link shares its inode with the run that made or reused it) is dropped.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
from importlib import metadata
from typing import Any

from harness.catalog import SCHEMA_VERSION, ModelSpec
from harness.formats import ARTIFACTS
from harness.records import dump_json

_HARNESS = os.path.dirname(os.path.abspath(__file__))
_SHARED = ("parity-inputs.npz", "parity-inputs.json")  # the model's parity batch and layout
_CHUNK = 1 << 20


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _tree_hash(path: str) -> str:
    """A file's SHA-256, or a folder's over its files' relative names and contents."""
    if os.path.isfile(path):
        return _sha256(path)
    digest = hashlib.sha256()
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            digest.update(os.path.relpath(full, path).encode() + b"\0" + _sha256(full).encode())
    return digest.hexdigest()


SAVE_SWITCHES = (
    "TF_USE_LEGACY_KERAS",
    "KERAS_BACKEND",
    "CUDA_VISIBLE_DEVICES",
    "TF_ENABLE_ONEDNN_OPTS",
)


def environment_fingerprint() -> dict[str, Any]:
    """What this interpreter is: its path, version and every installed distribution's version.
    Read from metadata, nothing imported: the parent must not warm what it measures."""
    dists = sorted(
        f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata
    )
    # Variables that change which Keras saves, or on which device the references are computed.
    switches = {name: os.environ.get(name) for name in SAVE_SWITCHES}
    return {
        "python": sys.version,
        "executable": os.path.realpath(sys.executable),
        "dists": dists,
        "switches": switches,
    }


def harness_hash() -> str:
    """The harness's own code: a change to how anything is saved makes every key new."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(_HARNESS)):
        if name.endswith(".py"):
            digest.update(name.encode() + b"\0" + _sha256(os.path.join(_HARNESS, name)).encode())
    return digest.hexdigest()


def model_key(spec: ModelSpec, weights: str, environment: dict[str, Any]) -> dict[str, Any]:
    """What a model's artifacts are keyed by: every input of saving, files by their content.
    An entry keeps it (`key.json`) so a miss can be explained by comparing two."""
    options = spec.options
    return {
        "schema_version": SCHEMA_VERSION,
        "environment": environment,
        "harness": harness_hash(),
        "model": {"name": spec.name, "kind": spec.kind, "params": spec.params},
        "model_file": _tree_hash(spec.path) if spec.kind == "file" else None,
        "code": [[os.path.basename(p), _sha256(p)] for p in options.code],
        "inputs": _sha256(options.inputs) if options.inputs else None,
        "dims": list(options.dims),
        "weights": weights,
    }


def reference_name(artifact: str) -> str:
    """Where an entry keeps the saving model's outputs its artifact's loads are checked against."""
    return f"reference-{artifact}.npz"


def _place(source: str, target: str) -> None:
    """Hard-link `source` at `target` (copy across file systems or where links are refused)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES):
            raise
        shutil.copy2(source, target)


def _remove(path: str) -> None:
    """Remove a file or a folder (an earlier save's), not following a link."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _files(path: str) -> list[str]:
    """Relative names of the regular files of a file or folder artifact."""
    if os.path.isfile(path):
        return [""]
    return sorted(
        os.path.relpath(os.path.join(root, n), path)
        for root, _dirs, names in os.walk(path)
        for n in names
        if os.path.isfile(os.path.join(root, n)) and not os.path.islink(os.path.join(root, n))
    )


class ArtifactCache:
    """The entries of one model in one environment's cache folder."""

    def __init__(self, root: str, key: dict[str, Any]) -> None:
        self.key = key
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        self.folder = os.path.join(root, digest)

    def _entry(self, artifact: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.folder, f"{artifact}.json")) as handle:
                entry: dict[str, Any] = json.load(handle)
                return entry
        except (OSError, ValueError):
            return None

    def _intact(self, entry: dict[str, Any]) -> bool:
        """Every file of the entry (and the model's shared files) has its recorded hash."""
        for relative, digest in entry["sha256"].items():
            path = os.path.join(self.folder, relative)
            if not os.path.isfile(path) or os.path.islink(path) or _sha256(path) != digest:
                return False
        return True

    def reuse(self, artifacts: list[str], folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the model's description, entry by artifact) for the `artifacts` found intact, their
        files placed in the run's `folder` as a save would have written them."""
        found: dict[str, Any] = {}
        model: dict[str, Any] = {}
        for artifact in artifacts:
            entry = self._entry(artifact)
            if entry is None:
                continue
            if not self._intact(entry):  # dropped: this run saves it anew and stores that
                os.remove(os.path.join(self.folder, f"{artifact}.json"))
                _remove(os.path.join(self.folder, ARTIFACTS[artifact].filename))
                continue
            _remove(os.path.join(folder, ARTIFACTS[artifact].filename))
            for relative in entry["sha256"]:
                _remove(os.path.join(folder, relative))
                _place(os.path.join(self.folder, relative), os.path.join(folder, relative))
            model = entry["model"]
            found[artifact] = entry
        return model, found

    def store(
        self, artifact: str, folder: str, saved: dict[str, Any], model: dict[str, Any]
    ) -> None:
        """Keep one artifact of the run's `folder` (its `saved` outcome: status, path,
        reference, save figures) with the model's description. Its description is written
        last, atomically: a reader never sees half an entry."""
        os.makedirs(self.folder, exist_ok=True)
        dump_json(os.path.join(self.folder, "key.json"), self.key)
        sources = {relative: os.path.join(folder, relative) for relative in _SHARED}
        if saved["status"] == "ok":
            name = ARTIFACTS[artifact].filename
            _remove(os.path.join(self.folder, name))  # an earlier entry's, which may differ
            sources[reference_name(artifact)] = saved["reference"]
            for relative in _files(saved["path"]):
                if relative:
                    sources[os.path.join(name, relative)] = os.path.join(saved["path"], relative)
                else:
                    sources[name] = saved["path"]
        digests = {}
        for relative, source in sources.items():
            target = os.path.join(self.folder, relative)
            if relative not in _SHARED or not os.path.exists(target):
                _remove(target)
                _place(source, target)
            digests[relative] = _sha256(target)
        entry = {"model": model, "saved": saved, "sha256": digests}
        dump_json(os.path.join(self.folder, f"{artifact}.json"), entry)
