"""How harness processes end: with their parent, and without the runtime's teardown.

Children that die with their parent: no harness outlives `matrix`, no worker its harness.

A parent killed outright (SIGKILL, the OOM killer, a CI runner's cancel) runs no cleanup, and its
children would run on with PPID 1: trials timed for nobody, beside the next run. Linux kills a
child when its parent goes if the child asked to (prctl PR_SET_PDEATHSIG, `die_with_parent`);
other systems get nothing armed, and the stop on Ctrl-C or SIGTERM still applies there.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` making the child receive SIGKILL when this process ends; None off Linux.

    Asked in the child between fork and exec, so it is in force before the child runs any code
    of its own, and exec keeps it. The kernel means the parent *thread*: spawn from a thread
    that lives as long as the child (the main thread, here). Everything is looked up here, in
    the parent: the function the child runs between fork and exec only calls libc and `os`, and
    never imports (a child forked from a threaded parent must not wait for a lock another
    thread held at the fork).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent, kill = os.getpid(), int(signal.SIGKILL)

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, kill)
        if os.getppid() != parent:  # the parent died before the call above could cover it
            os.kill(os.getpid(), kill)

    return arm


def leave(code: int) -> NoReturn:
    """End a worker that imported TensorFlow at once, skipping the interpreter's teardown.

    Finalising TensorFlow's modules and joining its thread pools takes ~1.5 s per process on a
    2-core machine (TF 2.21: 1.4-1.7 s against 0.06 s), paid after every clock has stopped by
    each trial and save process, and waited for by the next trial, which must not overlap it.
    Callers have closed what they wrote (results, events, artifacts); only stdio is flushed.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe or no stream: exit all the same
            stream.flush()
    os._exit(code)
