"""One run of a matrix: its id, where its records go, and the harness command line for it.

The plan is the only place that turns a validated config into harness arguments, so the
contract with `python -m harness run` (see docs/records.md) is written down once.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from matrix.config import MatrixConfig

RUN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")  # a folder name, nothing more


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

    def start_gate(self, env_id: str) -> Path:
        """The file whose creation lets the harness of `env_id` begin (harness `--start-gate`).

        It lives in the run folder, which a container sees too (as its records mount)."""
        return self.run_dir / f".start-{env_id}"

    def harness_args(self, env_id: str, out: str | None = None, work: str = "") -> list[str]:
        """Arguments after `python -m harness` that run this plan in environment `env_id`.

        `out` and `work` are the records and artifact folders as the harness sees them (inside
        a container they are mount points); by default the run folder on this machine.
        """
        c = self.config
        where = ["--work", work] if work else []
        out = out or str(self.run_dir.absolute())
        return [
            "run",
            *where,
            "--out",
            out,
            "--start-gate",
            f"{out}/{self.start_gate(env_id).name}",
            "--run-id",
            self.run_id,
            "--env-id",
            env_id,
            "--models",
            ",".join(c.models),
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
