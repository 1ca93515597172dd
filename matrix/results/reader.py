"""Read the harness's JSON Lines records (docs/records.md) without ever failing on them.

A run killed mid-write leaves a truncated last line, and the records around a bad line are still
good measurements: a bad line is skipped and reported as `file:line: why`, never fatal. Records
come from the measured environment, where a hostile model may have written them, so "bad"
includes lines no harness writes (`_parse`, `_lines`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from harness.catalog import SCHEMA_VERSION
from matrix.plan.inputs import RUN_ID

Record = dict[str, Any]
# A Docker sweep's account of its environments, next to their records files.
MANIFEST = "manifest.json"
# The cross-load step's folder in a run (docs/cross-load.md): its own `<loader env>.jsonl` and
# manifest, apart from the environments' own records.
CROSSLOAD_DIR = "crossload"
# A run folder's folder per environment, `.gate-<env_id>`: what the host gave its harness to
# read, such as a cross-load loader's SAVERS_FILE (the harness's `--saved-by`).
ENV_DIR_PREFIX = ".gate-"
SAVERS_FILE = "saved-by.json"
# The longest line read as a record. The harness writes well under 64 KiB (a failure's reason
# keeps only the tail of stderr); a longer line is skipped, and read in chunks of this size.
MAX_LINE_BYTES = 1 << 20
# The fields records are grouped, joined and named by: text in every record the harness writes.
TEXT_FIELDS = (
    "kind",
    "run_id",
    "env_id",
    "cell_id",
    "model",
    "format",
    "cache_mode",
    "process",
    "phase",
    "status",
    "scope",
)
LISTED_PROBLEMS = 5  # bad lines named one by one per file; the rest are counted
_JSON_TYPES = {
    type(None): "null",
    bool: "true/false",
    int: "a number",
    float: "a number",
    list: "a list",
    dict: "an object",
}


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
    """One record from one line, or ValueError saying why the line is not a record: not JSON, not
    an object with a `kind`, an identifying field that is not text, or a `run_id` that is not one
    folder name (it names the report's folder).

    orjson, as parsing is most of the time of reading a big run; a line it rejects goes to
    `json`, which reads the few documents orjson refuses (NaN, huge integers) and words the
    reason a bad line is skipped.
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
    for name in TEXT_FIELDS:
        if name in value and not isinstance(value[name], str):
            raise ValueError(
                f"not a record: its {name} is {_JSON_TYPES.get(type(value[name]))}, not text"
            )
    if "run_id" in value and not RUN_ID.fullmatch(value["run_id"]):
        raise ValueError(f"not a record: its run_id {value['run_id']!r} is not one folder name")
    return value


def _lines(handle: BinaryIO) -> Iterator[bytes | None]:
    """The lines of a file, newline kept; None for a line over MAX_LINE_BYTES, never held (a
    hostile 400 MB line costs no memory)."""
    while line := handle.readline(MAX_LINE_BYTES + 1):
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = handle.readline(MAX_LINE_BYTES)
        yield None


def _open_records(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file. A name planted by a container as a
    FIFO or a device (/dev/zero) would block the open or never end; OSError says so instead."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return open(fd, "rb")


def read_jsonl(path: Path) -> Records:
    """All records of one file; unparseable lines become problems like `x.jsonl:7: ...`."""
    found = Records()
    name = str(path)
    bad = 0  # lines skipped; the first LISTED_PROBLEMS are named

    def skip(why: str) -> None:
        nonlocal bad
        bad += 1
        if bad <= LISTED_PROBLEMS:
            found.problems.append(f"{path}:{number}: skipped: {why}")

    try:
        with _open_records(path) as handle:
            for number, line in enumerate(_lines(handle), start=1):
                if line is None:
                    skip(f"longer than {MAX_LINE_BYTES} bytes")
                    continue
                if not line.strip():
                    continue
                try:
                    record = _parse(line)
                except ValueError as exc:
                    truncated = not line.endswith(b"\n")  # the writer was cut off
                    cut = "truncated last line, " if truncated else ""
                    skip(f"{cut}{exc}")
                    continue
                found.records.append(record)
                found.sources.append(f"{name}:{number}")
    except OSError as exc:
        found.problems.append(f"{path}: cannot read: {exc.strerror}")
        return found
    if bad > LISTED_PROBLEMS:
        found.problems.append(f"{path}: skipped {bad - LISTED_PROBLEMS} more bad lines")
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
    arrives, unless it grows past MAX_LINE_BYTES: then it is dropped up to its newline. Bad lines
    are dropped here: `read_jsonl` reports them once the run is over.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self._skipping = False  # inside a line past MAX_LINE_BYTES, until its newline

    def read_new(self) -> list[Record]:
        new: list[Record] = []
        try:
            with _open_records(self._path) as handle:
                handle.seek(self._offset)
                while chunk := handle.readline(MAX_LINE_BYTES + 1):
                    self._offset += len(chunk)
                    line, self._partial = self._partial + chunk, b""
                    self._skipping |= len(line) > MAX_LINE_BYTES + 1
                    if not line.endswith(b"\n"):
                        self._partial = b"" if self._skipping else line
                    elif self._skipping:
                        self._skipping = False
                    else:
                        with contextlib.suppress(ValueError):
                            new.append(_parse(line))
        except FileNotFoundError:
            return []  # the harness has not written its plan yet
        except OSError:
            return new  # not a regular file: `read_jsonl` says so once the run is over
        return new
