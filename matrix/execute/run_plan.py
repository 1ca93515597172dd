"""One run of a matrix: its id, where its records go, and the harness command line for it.

The plan is the only place that turns a validated config into harness arguments, so the
contract with `python -m harness run` (see docs/records.md) is written down once.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.catalog import parse_model
from harness.records import dump_json
from matrix.plan.config import MatrixConfig

MODEL_OPTIONS = "model-options.json"  # in the environment's folder: the harness --model-options


def new_run_id(now: datetime | None = None) -> str:
    """`20261127-183000-ab12`: sorts by UTC start time; the random tail keeps runs apart."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class RunPlan:
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
        return self.run_dir / f".gate-{env_id}"

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

    def harness_args(
        self,
        env_id: str,
        out: str | None = None,
        work: str = "",
        seen: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Arguments after `python -m harness` that run this plan in environment `env_id`.

        `out` and `work` are the records and artifact folders as the harness sees them (inside
        a container they are mount points); by default the run folder on this machine. `seen`
        maps the user's files (models, code, inputs) to where the harness sees them. The model
        options, if any, are written to the environment's folder here, so every backend passes
        the harness the same file.
        """
        c = self.config
        where = ["--work", work] if work else []
        out = out or str(self.run_dir.absolute())
        gate = self.start_gate(env_id)
        options = self.model_options(seen)
        if options:
            self.env_dir(env_id).mkdir(parents=True, exist_ok=True)
            dump_json(str(self.env_dir(env_id) / MODEL_OPTIONS), options)
            where += ["--model-options", f"{out}/{gate.parent.name}/{MODEL_OPTIONS}"]
        return [
            "run",
            *where,
            "--out",
            out,
            "--start-gate",
            f"{out}/{gate.parent.name}/{gate.name}",
            "--run-id",
            self.run_id,
            "--env-id",
            env_id,
            "--models",
            ",".join(harness_name(name, seen or {}) for name in c.model_names),
            "--formats",
            ",".join(c.formats),
            "--cache",
            ",".join(c.cache),
            "--repeats",
            str(c.repeats),
            "--warmup",
            str(c.warmup),
            "--inference-runs",
            str(c.inference_runs),
            "--process",
            c.process,
            "--seed",
            str(c.seed),
            "--weights",
            c.weights,
        ]


def harness_name(name: str, seen: Mapping[str, str]) -> str:
    """A model's name as the harness gets it: a model file's path where the harness sees it."""
    spec = parse_model(name)
    return seen.get(spec.path, name) if spec.kind == "file" else name
