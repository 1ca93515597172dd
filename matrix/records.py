"""Read the harness's JSON Lines records (docs/records.md) without ever failing on them.

A run killed mid-write leaves at most one truncated last line, and a disk can hold worse; the
records around a bad line are still good measurements. So a bad line is skipped and reported as
`file:line: why`, never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from harness.catalog import SCHEMA_VERSION

Record = dict[str, Any]
# A Docker sweep's account of its environments, next to their records files.
MANIFEST = "manifest.json"


@dataclass
class Records:
    """Every good record of a run, and one message per line that had to be skipped.

    `sources[i]` is `file:line` of `records[i]`, so a merged table can point back at the line a
    surprising number came from.
    """

    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def _parse(line: bytes) -> Record:
    """One record from one line, or ValueError saying why the line is not a record.

    orjson parses a line four times faster than `json` (it is half the time of merging 10^5
    records); a line it rejects goes to `json`, which reads the few documents orjson refuses
    (NaN, huge integers) and words the reason a bad line is skipped.
    """
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(line)
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict) or "kind" not in value:
        raise ValueError("not a record (no 'kind' field)")
    return value


def read_jsonl(path: Path) -> Records:
    """All records of one file; unparseable lines become problems like `x.jsonl:7: ...`."""
    found = Records()
    try:
        data = path.read_bytes()
    except OSError as exc:
        found.problems.append(f"{path}: cannot read: {exc.strerror}")
        return found
    lines = data.split(b"\n")
    name = str(path)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = _parse(line)
        except ValueError as exc:
            truncated = number == len(lines)  # no newline after it: the writer was cut off
            found.problems.append(
                f"{path}:{number}: skipped: {'truncated last line, ' if truncated else ''}{exc}"
            )
            continue
        found.records.append(record)
        found.sources.append(f"{name}:{number}")
    newer = [
        version
        for version in (r.get("schema_version") for r in found.records)
        if isinstance(version, int) and version > SCHEMA_VERSION
    ]
    if newer:
        found.problems.append(
            f"{path}: written with schema_version {max(newer)}, newer than this reader's "
            f"{SCHEMA_VERSION}; upgrade tf-load-matrix to read every field"
        )
    return found


def read_run(run_dir: Path) -> Records:
    """All records of a run: every `<env_id>.jsonl` in its folder, in name order."""
    found = Records()
    for path in sorted(run_dir.glob("*.jsonl")):
        one = read_jsonl(path)
        found.records.extend(one.records)
        found.problems.extend(one.problems)
        found.sources.extend(one.sources)
    return found


def error_count(records: list[Record]) -> int:
    """Records that mean a cell failed: status `error`, or a `failure` outside one cell."""
    return sum(1 for r in records if r.get("status") == "error" or r.get("kind") == "failure")


def is_complete(records: list[Record]) -> bool:
    """A run without its `done` record was interrupted."""
    return any(r.get("kind") == "done" for r in records)


def short_reason(reason: Any, width: int = 80) -> str:
    """A record's `reason` cut to its first non-empty line, for a table cell or a message.

    The first line is the exception or the signal; the stderr tail after it stays in the file.
    """
    line = next((part for part in str(reason or "").splitlines() if part.strip()), "").strip()
    return line if len(line) <= width else line[: width - 1] + "…"


class JsonlTail:
    """Follow a records file while the harness appends to it, for the progress view.

    Only whole lines are returned; a line still being written stays buffered until its newline
    arrives. Bad lines are dropped here: `read_jsonl` reports them once the run is over.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[Record]:
        try:
            with self._path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []  # the harness has not written its plan yet
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        new = []
        for line in lines:
            try:
                new.append(_parse(line))
            except ValueError:
                continue
        return new
