"""One writer per results folder: `matrix run` (and `matrix prune`) hold `.matrix-run.lock`.

Two runs writing the same results folder at once would time each other's trials, and a prune
could delete the folder a run is writing. The lock is `flock(2)` on a file in the results
folder: the kernel drops it when the holding process ends, however it ends (even SIGKILL), so
a crash never leaves a stale lock behind, and there is no pid file to clean up. Python opens
files non-inheritable, so harness subprocesses and containers never hold it after `matrix`
has gone. The file itself stays (deleting it would let two processes lock two different
inodes); it only carries who holds it, for the message of the one refused.

The kernel frees the lock of a killed run but not the containers it started: those carry the
run's `holder_token`, so the next run can tell they belong to a process that is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from matrix.errors import ResultsBusy

LOCK_FILE = ".matrix-run.lock"


@contextlib.contextmanager
def run_lock(
    results_dir: Path,
    command: str = "run",
    run_id: str | None = None,
    hint: str = "wait for it or use --results-dir",
) -> Iterator[None]:
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
        holder = {"pid": os.getpid(), "started": time.time(), "command": command, "run_id": run_id}
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
    return f"another `matrix {command}` ({', '.join(details)}) is using {results_dir}/; {hint}"


def holder_token() -> str:
    """This process as `<host>/<boot id>/<pid>/<start tick>`: a name no later process takes.

    A pid alone is reused; with the host's boot id and the process's start time (in clock
    ticks since boot) it names one process for good, so `holder_gone` is never fooled by a new
    process that got an old pid.
    """
    pid = os.getpid()
    return f"{socket.gethostname()}/{_boot_id()}/{pid}/{_start_tick(pid)}"


def holder_gone(token: str) -> bool:
    """Whether the process `token` names has ended; False whenever that cannot be told.

    Only a process of this host can be checked (a Docker engine may be shared by several
    hosts, or by `matrix` in several containers, whose host names differ). Every process of an
    earlier boot of this host is gone.
    """
    parts = token.split("/")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[2].isdigit():
        return False
    _, boot, pid, start = parts
    if boot != _boot_id():
        return True
    return _start_tick(int(pid)) != start


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: the host name and pid must do
        return ""


def _start_tick(pid: int) -> str:
    """Field 22 of /proc/PID/stat (after the command name, which may hold spaces); '' once it
    has ended, a zombie included (a container's PID 1 may never reap it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return ""
    return "" if fields[0] == "Z" else fields[19]
