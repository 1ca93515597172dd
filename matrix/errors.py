"""Exit codes and the errors that carry them.

A CI job gates on the exit code, so each kind of failure has its own (cibuildwheel's lesson, and
asv's #296/#884: a tool that exits 0 on failure cannot gate anything). The messages are one line
and say how to fix the problem; the CLI prints them without a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What `matrix` commands exit with: each command's --help lists its own codes from here
    (`matrix.cli.common.exit_codes`), and the README's table lists them all (a test checks it)."""

    OK = 0
    CELLS_FAILED = 1  # the run finished, but some cell has status `error` (records are written)
    # `matrix compare`'s and `history`'s name for code 1, deliberately the same number: the only
    # cell failures a comparison has are a cell that got slower and a cross-load pair that broke.
    # An alias (ExitCode(1) is CELLS_FAILED), not a code.
    REGRESSION = CELLS_FAILED
    CONFIG_ERROR = 2  # bad matrix.yaml or flag: nothing was run
    ENVIRONMENT_ERROR = 3  # the backend could not run the harness at all (e.g. no TensorFlow)
    RESULTS_BUSY = 4  # another `matrix run` holds the results folder's lock: nothing was done
    # `matrix compare`: no regression, but some cell's samples could not have shown a change of
    # the threshold's size (its "same" would be an empty claim); --allow-underpowered passes it
    UNDERPOWERED = 5
    INTERRUPTED = 130  # Ctrl-C: records written so far are kept (128 + SIGINT, as shells do)
    TERMINATED = 143  # SIGTERM (systemd, timeouts, CI cancel): as Ctrl-C, 128 + SIGTERM


class MatrixError(Exception):
    """An expected failure with a one-line, user-facing message and an exit code."""

    exit_code: ExitCode = ExitCode.CONFIG_ERROR


class ConfigError(MatrixError):
    """The matrix or a flag is invalid; the message names the file or flag, key and fix."""

    exit_code = ExitCode.CONFIG_ERROR


class EnvironmentFailure(MatrixError):
    """The chosen backend cannot run the harness (missing TensorFlow, harness crashed)."""

    exit_code = ExitCode.ENVIRONMENT_ERROR


class ResultsBusy(MatrixError):
    """Another `matrix run` is writing the results folder; a nightly job can retry on code 4."""

    exit_code = ExitCode.RESULTS_BUSY
