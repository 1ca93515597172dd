"""A zygote: a process that imports one runtime once, then forks one trial process per load.

Each child loads, infers and exits, so it carries no state from earlier loads, and pays no import:
for `warm` and `cold-model` the import is not what is asked (fresh processes and `cold` trials
time it). The zygote creates no TensorFlow device and runs no op before forking: only the import,
whose native threads a child does not need. The runner checks forked loads against fresh ones.

Protocol (JSON lines): the zygote writes `{"import_s", "startup_s"}` once imported; then for each
request `{"argv": [trial_worker args], "stderr": path}` on its stdin it writes `{"pid"}` after the
fork and `{"exit"}` (negative: killed by that signal) once the child is reaped.
Usage: python -m harness.zygote TARGET
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # before any other import of this module

import contextlib  # noqa: E402 - the clock above must start first
import json  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import IO, Any  # noqa: E402

from harness import trial_worker  # noqa: E402 - standard library only, no TensorFlow
from harness.lifetime import die_with_parent, leave  # noqa: E402

ANSWER_TIMEOUT_S = 60  # for the fork itself: the zygote only forks and writes a line


class ForkFailure(RuntimeError):
    """The zygote or its child did not answer in time, or the zygote died."""


def _child(
    request: dict[str, Any],
    imported: trial_worker.Imported,
    channel: IO[str],
    arm: Callable[[], None] | None,
) -> None:
    """In the forked child: run the trial, then leave without the runtime's exit handlers (a
    forked copy of them may wait on threads that exist only in the zygote). `arm` makes it die
    with the zygote (made in the zygote: it compares the parent with the zygote's pid)."""
    code = 1
    try:
        if arm:
            arm()
        channel.close()
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(err, 1)
        os.dup2(err, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        code = trial_worker.main(request["argv"], imported)
    finally:
        leave(code)


def serve(target: str) -> int:
    """Import, then answer requests until stdin closes."""
    channel = os.fdopen(os.dup(1), "w")  # the protocol; anything else printed goes to stderr
    os.dup2(2, 1)
    imported = trial_worker.timed_import(target, _STARTED)
    channel.write(json.dumps({"import_s": imported.import_s, "startup_s": imported.startup_s}))
    channel.write("\n")
    channel.flush()
    arm = die_with_parent()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()  # else each child would write the zygote's buffered output again
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, imported, channel, arm)
        channel.write(json.dumps({"pid": pid}) + "\n")
        channel.flush()
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        channel.write(json.dumps({"exit": code}) + "\n")
        channel.flush()
    return 0


class Zygote:
    """The runner's handle on one zygote process (one per import target)."""

    def __init__(self, target: str, env: dict[str, str], log: str, timeout_s: float) -> None:
        self.target = target
        self._log = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "harness.zygote", target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            preexec_fn=die_with_parent(),
        )
        self._pending = b""  # read from the zygote, not yet a whole line
        ready = self._answer(timeout_s)
        self.import_s: float = ready["import_s"]
        self.startup_s: float = ready["startup_s"]

    def _answer(self, timeout_s: float) -> dict[str, Any]:
        """The zygote's next line, or ForkFailure when it is silent for `timeout_s` or gone.

        Read from the descriptor itself: a buffered reader could hold the next line already,
        where `select` does not see it.
        """
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            ready = left > 0 and select.select([self._proc.stdout], [], [], left)[0]
            chunk = os.read(self._proc.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                why = "died" if ready else f"did not answer within {timeout_s:.0f} s"
                raise ForkFailure(f"the {self.target} zygote {why}")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def run(self, argv: list[str], stderr: str, timeout_s: float) -> int:
        """Fork one trial of `argv` (trial_worker arguments); its exit code (negative: killed by
        that signal). A child still running after `timeout_s` is killed: ForkFailure, after which
        the zygote is not used again (its late answer about the killed child is never read)."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps({"argv": argv, "stderr": stderr}).encode() + b"\n")
            self._proc.stdin.flush()
        except BrokenPipeError as exc:
            raise ForkFailure(f"the {self.target} zygote died") from exc
        pid = self._answer(ANSWER_TIMEOUT_S)["pid"]
        try:
            return int(self._answer(timeout_s)["exit"])
        except ForkFailure:
            # Not yet reaped by the zygote, so the pid is still this child's: no reuse race.
            os.kill(pid, signal.SIGKILL)
            raise

    def close(self) -> None:
        """Stop the zygote: end of input, else killed."""
        if self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        os.close(self._log)


if __name__ == "__main__":
    leave(serve(sys.argv[1]))
