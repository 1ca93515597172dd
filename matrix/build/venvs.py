"""Build the virtual environment of an environment, once: its folder names the content it holds.

The venv backend's counterpart of `matrix.build.images`: a host without Docker still measures every
TF release its Pythons can run, with the pins the Dockerfile would install, in a folder keyed by
the interpreter and the pins (`venv_path`: an unchanged environment is reused, a changed pin gets
a new folder). uv installs them (`_install`); the harness is linked in, never installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import harness
from matrix.build import TAIL_LINES
from matrix.build.pipsettings import host_pip_options, redact
from matrix.plan.environments import Environment

COMPLETE = ".tf-load-matrix-complete"  # written last: a folder without it is a failed install
HARNESS_PATH = "harness-path"  # <venv>/harness-path/harness -> this checkout's harness package

# pip option -> (uv's variable for it, how it joins several values): uv's --index-url takes one
# URL, --extra-index-url a space-separated list, --find-links a comma-separated one.
_UV_VARIABLES = {
    "index-url": ("UV_INDEX_URL", None),
    "extra-index-url": ("UV_EXTRA_INDEX_URL", " "),
    "find-links": ("UV_FIND_LINKS", ","),
}


@dataclass(frozen=True)
class VenvResult:
    """The virtual environment of one environment, or why there is none."""

    env_id: str
    path: Path
    built: bool  # False when a complete one already existed (or the install failed)
    seconds: float
    status: str  # "ok" | "error"
    reason: str = ""

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def harness_path(self) -> Path:
        """What PYTHONPATH must hold for `python -m harness` to find this checkout's harness."""
        return self.path / HARNESS_PATH


def venv_path(env: Environment, interpreter: Path, build_root: Path) -> Path:
    """`<build_root>/venvs/<env id>-<first 12 hex digits of what it is made of>`."""
    made_of = json.dumps(
        {"python": str(interpreter), "packages": list(env.packages), "bytecode": "compiled"}
    )
    digest = hashlib.sha256(made_of.encode()).hexdigest()[:12]
    return build_root / "venvs" / f"{env.id}-{digest}"


def ensure_venv(
    env: Environment,
    interpreter: Path,
    build_root: Path,
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
) -> VenvResult:
    """The venv of `env` made from `interpreter` under `build_root`, installed unless a complete
    one exists.

    Failures are returned, never raised: one environment whose pins cannot install must not stop
    a sweep over the others. The install log goes to `log_path`, each line also to `on_line`.
    """
    start = time.monotonic()
    path = venv_path(env, interpreter, build_root)
    built = not (path / COMPLETE).exists()
    reason = _install(env, interpreter, path, log_path, on_line) if built else ""
    if not reason:
        _link_harness(path)
    return VenvResult(
        env_id=env.id,
        path=path,
        built=built and not reason,
        seconds=round(time.monotonic() - start, 3),
        status="error" if reason else "ok",
        reason=reason,
    )


def uv_command() -> list[str]:
    """uv next to this interpreter (installed with tf-load-matrix), else the one on PATH."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def uv_environ(options: Mapping[str, str]) -> dict[str, str]:
    """The process environment for uv: the host's pip options as the variables uv reads.

    uv does not read pip's configuration, so the host's pip settings (index, extra index,
    find-links, CA bundle, proxy) are passed explicitly: a mirror pip can use, uv uses too. They
    go in variables, never on uv's command line: an index URL can carry a user and password,
    and any local user can read a process's arguments (`ps`). pip picks the best version across
    all indexes; uv only does so when told (`unsafe-best-match`), so it is told.
    """
    environ = dict(os.environ, UV_INDEX_STRATEGY="unsafe-best-match")
    for key, (variable, separator) in _UV_VARIABLES.items():
        values = options.get(key, "").split()
        if values:
            environ[variable] = separator.join(values) if separator else values[0]
    if options.get("cert"):
        environ["SSL_CERT_FILE"] = options["cert"]
    if options.get("proxy"):
        environ.setdefault("HTTPS_PROXY", options["proxy"])
        environ.setdefault("HTTP_PROXY", options["proxy"])
    return environ


def _install(
    env: Environment,
    interpreter: Path,
    path: Path,
    log_path: Path,
    on_line: Callable[[str], None] | None,
) -> str:
    """Create the venv afresh and install the pins; "" on success, else a one-line reason.

    uv for its speed, and its cache makes a second environment with the same wheels nearly free.
    Bytecode is compiled, as pip does in the Docker images: without .pyc files (and with
    PYTHONDONTWRITEBYTECODE set, as on some hosts) every fresh trial process would compile
    TensorFlow's Python again, and `import_s` would time the compiler. The log, readable by
    others, has every URL's user:password masked.
    """
    shutil.rmtree(path, ignore_errors=True)  # a half-made one from an interrupted install
    options = host_pip_options()
    steps = [
        [*uv_command(), "venv", "--quiet", "--python", str(interpreter), str(path)],
        [
            *uv_command(),
            "pip",
            "install",
            "--python",
            str(path / "bin" / "python"),
            "--compile-bytecode",
            *env.packages,
        ],
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8", buffering=1) as log:
        for argv in steps:
            log.write(redact(f"$ {' '.join(argv)}\n"))
            reason = _follow(argv, uv_environ(options), log, on_line)
            if reason:
                return f"{reason} (log: {log_path})"
    (path / COMPLETE).write_text(json.dumps({"packages": list(env.packages)}) + "\n")
    return ""


def _follow(
    argv: list[str], environ: dict[str, str], log: IO[str], on_line: Callable[[str], None] | None
) -> str:
    """Run one install step, copying its output to `log` and `on_line`; the failure's reason."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        with subprocess.Popen(
            argv,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            for line in map(redact, proc.stdout):
                log.write(line)
                if line.strip():
                    tail.append(line.strip())
                    if on_line:
                        on_line(line.rstrip())
            returncode = proc.wait()
    except (OSError, subprocess.SubprocessError) as exc:
        return redact(f"{Path(argv[0]).name} {argv[1]} failed: {exc}")
    if returncode:
        return f"{Path(argv[0]).name} {argv[1]} exited with {returncode}: {' | '.join(tail)}"
    return ""


def _link_harness(path: Path) -> None:
    """Point `<venv>/harness-path/harness` at this checkout's harness package, put on the path at
    run time: a harness change never forces a reinstall of TensorFlow.

    Only a link to the package, not its parent folder: the parent may be a site-packages whose
    other packages would shadow the venv's own.
    """
    folder = path / HARNESS_PATH
    folder.mkdir(exist_ok=True)
    link = folder / "harness"
    target = Path(harness.__file__).resolve().parent
    if link.is_symlink() and link.resolve() == target:
        return
    temporary = folder / f".harness-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target, target_is_directory=True)
    os.replace(temporary, link)
