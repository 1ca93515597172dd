"""The `matrix` command line: config → plan → run → records → summary → exit code.

Each command group is a module (run, results, ops) that registers on the one typer `app`;
this file only loads them in the order `matrix --help` lists them.
"""

import os
import sys

# typer lists commands in the order they register: run's, then results', then ops'.
import matrix.cli.run  # isort: skip
import matrix.cli.results  # isort: skip
import matrix.cli.ops  # noqa: F401  # isort: skip
from matrix.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    """The `matrix` console script: the CLI, then an exit without the interpreter's teardown.

    Tearing down pandas', pyarrow's and numpy's objects one by one costs ~0.4 s at the end of
    every command that loaded them, for nothing: every file we write is closed by its `with`
    and no thread is left working by then (a container's watcher threads end with it). So
    the exit code goes straight to the OS once stdout and stderr are flushed. An exception
    other than SystemExit is left to the interpreter, traceback and teardown included.
    """
    try:
        app(prog_name="matrix")
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # sys.exit("message"): Python prints it and exits 1
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
