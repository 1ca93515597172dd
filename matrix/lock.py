"""One writer per results folder: `matrix run` (and `matrix prune`) hold `.matrix-run.lock`.

Two runs writing the same results folder at once would time each other's trials, and a prune
could delete the folder a run is writing. The lock is `flock(2)` on a file in the results
folder: the kernel drops it when the holding process ends, however it ends (even SIGKILL), so
a crash never leaves a stale lock behind, and there is no pid file to clean up. Python opens
files non-inheritable, so harness subprocesses and containers never hold it after `matrix`
has gone. The file itself stays (deleting it would let two processes lock two different
inodes); it only carries who holds it, for the message of the one refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from matrix.errors import ResultsBusy

LOCK_FILE = ".matrix-run.lock"


@contextlib.contextmanager
def run_lock(results_dir: Path, command: str = "run", run_id: str | None = None,
             hint: str = "wait for it or use --results-dir") -> Iterator[None]:
    """Hold the lock of `results_dir` for the block; ResultsBusy at once if another has it.

    `command` and `run_id` name this holder in the message another process gets; `hint` is
    what that message tells the refused process's user to do.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(results_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResultsBusy(_busy_message(fd, results_dir, hint)) from None
        holder = {"pid": os.getpid(), "started": time.time(), "command": command,
                  "run_id": run_id}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the only descriptor of the open file releases the flock


def _busy_message(fd: int, results_dir: Path, hint: str) -> str:
    """`another `matrix run` (pid N, started at T, run R) is using results/; <hint>`."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # the holder is between taking the lock and writing its name
        holder = {}
    started = holder.get("started")
    details = [f"pid {holder.get('pid', '?')}"]
    if isinstance(started, (int, float)):
        when = datetime.fromtimestamp(started, timezone.utc)
        details.append(f"started at {when:%Y-%m-%d %H:%M:%S} UTC")
    if holder.get("run_id"):
        details.append(f"run {holder['run_id']}")
    command = holder.get("command", "run")
    return (f"another `matrix {command}` ({', '.join(details)}) is using {results_dir}/; "
            f"{hint}")

