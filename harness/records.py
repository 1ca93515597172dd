"""Append-only JSON Lines writer: every record survives a kill the moment after it is written.

Each record is one `write()` of one line on an O_APPEND descriptor followed by `fsync`, so a
reader sees whole lines only (at worst a truncated last line if the disk itself fails).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from typing import Any

from harness.catalog import SCHEMA_VERSION


def utc_now() -> str:
    """ISO-8601 UTC timestamp, second precision."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


class RecordWriter:
    """Writes the records of one environment of one run (docs/records.md)."""

    def __init__(self, path: str, run_id: str, env_id: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.run_id = run_id
        self.env_id = env_id
        self.trials_written = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        record = {
            "schema_version": SCHEMA_VERSION,
            "kind": kind,
            "run_id": self.run_id,
            "env_id": self.env_id,
            "time": utc_now(),
            **fields,
        }
        line = (json.dumps(record, default=str, allow_nan=False) + "\n").encode()
        os.write(self._fd, line)
        os.fsync(self._fd)
        if kind == "trial":
            self.trials_written += 1
        return record

    def close(self) -> None:
        os.close(self._fd)


def dump_json(path: str, payload: dict[str, Any]) -> None:
    """Write a small JSON file atomically (temp file + rename): readers never see half of it."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(payload, handle, default=str)
    os.replace(tmp, path)


def append_event(events_file: str, /, **fields: Any) -> None:
    """Append one JSON line and flush it to disk, so a parent learns what a child finished
    even when the child is killed the next instant (the same guarantee as RecordWriter)."""
    with open(events_file, "a") as handle:
        handle.write(json.dumps(fields, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
