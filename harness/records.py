"""Append-only JSON Lines writer: every record survives a kill the moment after it is written.

Each record is one `write()` of one line on an O_APPEND descriptor followed by `fsync`, so a
reader sees whole lines only (at worst a truncated last line if the disk itself fails).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import stat
import tempfile
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
        self._fd = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

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


def open_regular(path: str, flags: int, mode: int = 0o644, truncate: bool = False) -> int:
    """A descriptor of the regular file at `path` itself, never of what a planted name leads to.

    For every file written where a container could have put a name first: O_NOFOLLOW refuses a
    symbolic link, O_NONBLOCK keeps a planted FIFO from blocking the open, and the check refuses
    a FIFO, a device or a hard link to a file elsewhere (a second name). `truncate` empties the
    file only after that check (O_TRUNC would act before it).
    """
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise OSError(errno.EPERM, "not a regular file with a single name; refusing it", path)
    if truncate:
        os.ftruncate(fd, 0)
    return fd


def dump_json(path: str, payload: dict[str, Any]) -> None:
    """Write a small JSON file atomically (temp file + rename): readers never see half of it.

    The temporary file gets a fresh random name, created exclusively (mkstemp: O_EXCL, which
    never follows a link), and the rename replaces whatever name is at `path` without following
    it: a link planted at either name is never written through.
    """
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide an answer from the container's user
        with open(fd, "w") as handle:
            json.dump(payload, handle, default=str)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def append_event(events_file: str, /, **fields: Any) -> None:
    """Append one JSON line and flush it to disk, so a parent learns what a child finished
    even when the child is killed the next instant (the same guarantee as RecordWriter)."""
    with open(events_file, "a") as handle:
        handle.write(json.dumps(fields, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
