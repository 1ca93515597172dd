"""The `matrix` command line: config → plan → run → records → summary → exit code.

Each command group is a module (run, results, ops) that registers on the one typer `app`;
this file only loads them in the order `matrix --help` lists them.
"""

import sys

# typer lists commands in the order they register: run's, then results', then ops'.
import matrix.cli.run  # isort: skip
import matrix.cli.results  # isort: skip
import matrix.cli.ops  # noqa: F401  # isort: skip
from matrix.cli.common import app
from matrix.cli.run import with_bare_flags

__all__ = ["app", "main"]


def main() -> None:
    """The `matrix` console script."""
    app(prog_name="matrix", args=with_bare_flags(sys.argv[1:]))
