"""Shared helpers for the orchestrator tests: records as docs/records.md defines them.

Shared by tests/unit and tests/integration.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.catalog import SCHEMA_VERSION

ENV_ID = "local-tf2.21-py3.11-cpu"
RUN_ID = "20261127-183000-ab12"


def make_record(kind: str, **fields: Any) -> dict[str, Any]:
    """A record with the fields every record carries (docs/records.md), plus `fields`."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "run_id": RUN_ID,
        "env_id": ENV_ID,
        "time": "2026-11-27T18:30:00+00:00",
    }
    if kind == "trial":
        record.update(phase="measure", process="fresh", status="ok")
        record["cell_id"] = "/".join(
            [ENV_ID, fields["model"], fields["format"], fields["cache_mode"]]
        )
    record.update(fields)
    return record


def write_jsonl(path: Path, records: list[dict[str, Any]], tail: str = "") -> Path:
    """Write records one per line, then `tail` verbatim (e.g. a truncated line)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")
    return path


@pytest.fixture
def record() -> Callable[..., dict[str, Any]]:
    return make_record


@pytest.fixture
def jsonl() -> Callable[..., Path]:
    return write_jsonl


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so the repository's own matrix.yaml is not picked up."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
