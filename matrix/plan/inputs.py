"""Checks on names and paths that come from users or from data, before they reach a file.

Three kinds of value are dangerous: a control character in anything written into a file, a run id
used as a folder name, and a folder argument that names a file. Each check raises ConfigError
with one line naming the field, so every command reports them alike (exit 2).
"""

from __future__ import annotations

import re
from pathlib import Path

from matrix.errors import ConfigError

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A folder name and nothing more: no separator, no `..`, no leading `.` or `-` (a hidden folder,
# or a flag to the harness's argument parser).
RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def refuse_control(field: str, value: object) -> None:
    """ConfigError naming `field` if `str(value)` holds a control character (newline, CR, …): a
    newline in a crontab line or a systemd unit starts a new command or directive, whatever the
    quoting."""
    if CONTROL.search(str(value)):
        raise ConfigError(
            f"{field}: {str(value)!r} holds a control character (a newline, "
            "carriage return or the like); remove it"
        )


def check_run_id(field: str, value: str) -> str:
    """`value` if it is a run id (one folder name), else ConfigError naming `field`: `..`,
    `/etc` or `-x` would leave the results folder or read as a flag."""
    if not RUN_ID.fullmatch(value) or value == "latest":  # reports/latest links to the newest
        raise ConfigError(
            f"{field}: {value!r} is not a folder name; use letters, digits, '.', "
            "'_' and '-', not starting with '.' or '-', and not 'latest'"
        )
    return value


def check_folder(field: str, path: Path) -> Path:
    """`path` if it is a folder or could be made one; ConfigError naming `field` if a file is
    in the way (at `path` or at one of its parents), rather than a traceback from the first
    `mkdir`. Nothing is created."""
    for place in (path, *path.parents):
        if place.exists() or place.is_symlink():
            if not place.is_dir():
                which = "it" if place == path else str(place)
                raise ConfigError(f"{field} {path}: {which} is a file, not a folder; name a folder")
            break
    return path


def output_folder(field: str, path: Path) -> Path:
    """`path` as an existing folder, made (with its parents) if missing; ConfigError naming
    `field` if it cannot be one."""
    check_folder(field, path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{field} {path}: cannot create the folder: {exc.strerror}") from None
    return path
