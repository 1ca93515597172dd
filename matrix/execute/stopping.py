"""How a run stops, and what the next run does with what a stopped one left behind.

SIGTERM is what systemd, a cron or CI timeout and a cancelled CI job send. Left to its default,
it ends `matrix` on the spot: the lock is freed while the harness runs on with PPID 1 and the
containers stay, so the next run times its trials beside them. So it is turned into the
KeyboardInterrupt that Ctrl-C raises, and every Ctrl-C path (harness stopped, containers
removed, records kept, lock released last) serves both; only the exit code tells them apart.

A run killed outright (SIGKILL) cleans nothing: its harness dies with it (`harness.lifetime`),
but its containers remain until the next run on that engine removes them. And an environment's
records from an interrupted attempt are set aside, never overwritten, when `--resume` runs it
again.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from matrix.errors import ExitCode
from matrix.execute.lock import holder_gone

_terminated = False  # a SIGTERM arrived: signals are per process, so is this


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """For the block, SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does.

    Only the first one: the stop it starts (harness, then containers, then the lock) must not
    be cut short by a second, as systemd or a CI runner may send; SIGKILL still ends it.
    """
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _terminated
    if not _terminated:
        _terminated = True
        raise KeyboardInterrupt


def interrupted_code() -> ExitCode:
    """The exit code of a stopped run: 143 after SIGTERM, 130 after Ctrl-C (128 + signal)."""
    return ExitCode.TERMINATED if _terminated else ExitCode.INTERRUPTED


def set_aside(records: Path) -> None:
    """Rename the records of an interrupted attempt at an environment out of the run's merge.

    Each attempt gets a name of its own (`<env>.jsonl.partial`, `.partial-2`, …), so a second
    interrupted `--resume` keeps the first one's records too. Only `*.jsonl` files are read as
    the run's records: each trial is counted once, from the attempt that finished.
    """
    if not os.path.lexists(records):
        return
    for attempt in itertools.count(1):
        aside = records.with_name(f"{records.name}.partial" + (f"-{attempt}" * (attempt > 1)))
        with contextlib.suppress(FileExistsError):  # unlike a rename, a link replaces nothing
            os.link(records, aside, follow_symlinks=False)
            records.unlink()
            return


def remove_dead_runs_containers(client: Any) -> list[str]:
    """Remove the containers of runs whose `matrix` has ended (killed, so it could not remove
    them); the run ids they belonged to.

    They would time their trials beside this run's. A container is only removed when its
    holder label names a process of this host that is gone (`matrix.execute.lock.holder_gone`).
    """
    from docker.errors import NotFound

    from matrix.execute.backends.docker import HOLDER_LABEL, RUN_LABEL

    runs = set()
    for container in client.containers.list(all=True, filters={"label": HOLDER_LABEL}):
        if holder_gone(container.labels.get(HOLDER_LABEL, "")):
            with contextlib.suppress(NotFound):  # another results folder's run removed it too
                container.remove(force=True)
            runs.add(container.labels.get(RUN_LABEL, "?"))
    return sorted(runs)
