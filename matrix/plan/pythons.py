"""Python interpreters on this host, by version, for backends that build environments from them.

The venv backend can only make an environment for a Python that exists here (nothing can be
downloaded on an air-gapped host), so the planner asks this module which versions it can have
and skips the other cells with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

CANDIDATES = re.compile(r"^python3(\.\d+)?$")


@cache
def find_pythons() -> dict[str, Path]:
    """{"3.11": /usr/bin/python3.11, …}: every python3.X on PATH (and /usr/bin), by its version.

    Versions come from running each interpreter, not from its file name: a `python3` link
    says nothing of what it is, and two names may be the same interpreter (the first wins).
    """
    found: dict[str, Path] = {}
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        try:
            names = sorted(os.listdir(directory or "."))
        except OSError:
            continue
        for name in names:
            path = Path(directory) / name
            if not CANDIDATES.match(name) or not os.access(path, os.X_OK):
                continue
            version, executable = interpreter_version(str(path))
            if version and version not in found:
                found[version] = Path(executable)
    return dict(sorted(found.items(), key=lambda item: tuple(map(int, item[0].split(".")))))


def interpreter_version(python: str) -> tuple[str | None, str]:
    """(`3.11`, its real executable) for a working interpreter; (None, "") for a broken link,
    a non-Python file or a pyenv shim with no version behind it. The real executable, not the
    shim: a venv made from a shim breaks when the shim's version changes."""
    if shutil.which(python) is None:
        return None, ""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2], sys.executable)"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split(maxsplit=1)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None, ""
    if len(out) != 2 or not re.fullmatch(r"3\.\d+", out[0]):
        return None, ""
    return out[0], out[1].strip()
