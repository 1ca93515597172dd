"""One run of a matrix: its id, where its records go, and the harness command line for it.

`MatrixRun` is the only place that turns a validated config into harness arguments, through
the run specification the harness defines (`harness.contract.RunSpec`), so the two cannot differ.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.catalog import parse_model
from harness.contract import RunSpec
from harness.records import dump_json
from matrix.errors import ConfigError
from matrix.plan.config import MatrixConfig
from matrix.plan.inputs import check_folder, check_run_id
from matrix.results.reader import ENV_DIR_PREFIX

MODEL_OPTIONS = "model-options.json"  # in the environment's folder: the harness --model-options
ARTIFACT_CACHE = ".artifact-cache"  # in the results folder: one subfolder per environment
ARTIFACTS_DIR = "artifacts"  # in a run folder: a harness's artifacts when given no `--work`


def new_run_id(now: datetime | None = None) -> str:
    """`20261127-183000-ab12`: sorts by UTC start time; the random tail keeps runs apart."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def choose_run(config: MatrixConfig, run_id: str | None, resume: str | None) -> MatrixRun:
    """The run's id, chosen before anything runs (the run lock names it): `--resume`'s, which
    must exist; `--run-id`, a folder name; or a new one."""
    if run_id and resume:
        raise ConfigError("--run-id and --resume: give one (--resume continues an existing run)")
    for flag, value in (("--run-id", run_id), ("--resume", resume)):
        if value is not None:
            check_run_id(flag, value)  # a folder name: never `..`, a path or a flag
    check_folder("results_dir", config.results_dir)
    run = MatrixRun(config=config, run_id=resume or run_id or new_run_id())
    if resume and not run.run_dir.is_dir():
        raise ConfigError(f"--resume: no run {resume!r} under {config.results_dir}/")
    return run


@dataclass(frozen=True)
class MatrixRun:
    """What to run and where its output lands: `<results_dir>/<run_id>/`."""

    config: MatrixConfig
    run_id: str

    @property
    def run_dir(self) -> Path:
        return self.config.results_dir / self.run_id

    def env_dir(self, env_id: str) -> Path:
        """The folder of `env_id` in the run folder: what the host gives its harness to read
        (the start gate, the model options). A container sees it read-only, so the host writes
        there where no container can have put a name first. Named after the gate, which came
        first; the model options stay in it after the run, a record of what the harness got."""
        return self.run_dir / f"{ENV_DIR_PREFIX}{env_id}"

    def artifact_cache(self, identity: str) -> Path:
        """The artifact cache folder of the environment made of `identity` (an image's tag, a
        venv's folder, this interpreter's fingerprint), created: one per environment, so none
        reads another's entries (harness.artifact_cache). Under the results folder, on the
        file system of the runs, so a reused file is a hard link, not a copy."""
        folder = (
            self.config.results_dir
            / ARTIFACT_CACHE
            / hashlib.sha256(identity.encode()).hexdigest()[:16]
        )
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def artifacts_dir(self, env_id: str) -> Path:
        """`<run>/artifacts/<env_id>`: where the harness of `env_id` saves its artifacts on this
        machine when given no `--work` (harness.runner), and where a loader reads them."""
        return self.config.results_dir / self.run_id / ARTIFACTS_DIR / env_id

    def reads_artifacts_of(self, env_id: str) -> tuple[str, ...]:
        """The environments whose artifacts the harness of `env_id` reads instead of saving its
        own: none for a run; every other saver for a cross-load (matrix.execute.crossload)."""
        return ()

    def start_gate(self, env_id: str) -> Path:
        """The file whose creation lets the harness of `env_id` begin (harness `--start-gate`)."""
        return self.env_dir(env_id) / "open"

    def model_options(self, seen: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """The harness's `--model-options`: for each model entry with user files, its code,
        inputs and dims, keyed by the model's name as the harness gets it. `seen` maps a host
        path to where the harness sees it (a container's mount); a path not in it is unchanged.
        """
        seen = seen or {}
        options: dict[str, dict[str, Any]] = {}
        for entry in self.config.models:
            if isinstance(entry, str):
                continue
            option: dict[str, Any] = {}
            if entry.code:
                option["code"] = [seen.get(str(path), str(path)) for path in entry.code]
            if entry.inputs is not None:
                option["inputs"] = seen.get(str(entry.inputs), str(entry.inputs))
            if entry.dims:
                option["dims"] = dict(entry.dims)
            if option:
                options[harness_name(entry.model, seen)] = option
        return options

    def records_file(self, env_id: str) -> Path:
        """`<run_dir>/<env_id>.jsonl`: where the records of `env_id` land on this machine,
        whichever backend ran its harness."""
        return self.run_dir / f"{env_id}.jsonl"

    def harness_args(
        self,
        env_id: str,
        out: str | None = None,
        work: str = "",
        seen: Mapping[str, str] | None = None,
        artifact_cache: str = "",
    ) -> list[str]:
        """Arguments after `python -m harness` for this run in environment `env_id`.

        `out` and `work` are the records and artifact folders as the harness sees them (inside
        a container they are mount points); by default the run folder on this machine. `seen`
        maps the user's files (models, code, inputs) to where the harness sees them. The model
        options, if any, are written to the environment's folder here, so every backend passes
        the harness the same file.
        """
        seen = seen or {}
        out = out or str(self.run_dir.absolute())
        folder = f"{out}/{self.env_dir(env_id).name}"  # the environment's folder, as seen
        options = self.model_options(seen)
        if options:
            self.env_dir(env_id).mkdir(parents=True, exist_ok=True)
            dump_json(str(self.env_dir(env_id) / MODEL_OPTIONS), options)
        spec = RunSpec.from_config(
            self.config,
            out=out,
            run_id=self.run_id,
            env_id=env_id,
            models=[harness_name(name, seen) for name in self.config.model_names],
            work=work,
            model_options=f"{folder}/{MODEL_OPTIONS}" if options else "",
            start_gate=f"{folder}/{self.start_gate(env_id).name}",
            artifact_cache=artifact_cache,
        )
        return ["run", *spec.to_argv()]


def harness_name(name: str, seen: Mapping[str, str]) -> str:
    """A model's name as the harness gets it: a model file's path where the harness sees it."""
    spec = parse_model(name)
    return seen.get(spec.path, name) if spec.kind == "file" else name
