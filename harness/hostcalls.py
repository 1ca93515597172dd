"""Ask the host to do what this container may not: one file handshake for every kind of call.

A container shares the host's kernel and page cache but neither its privileges nor its Docker
engine. So the harness writes a request (JSON) into a folder both sides see, the host does the
work and writes the answer beside it (`call_host`, `serve_host_calls`); only the kinds the
container's environment offers are asked for. The start gate goes the other way (`wait_for_start`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Callable  # typing's: the harness still runs on Python 3.8

from harness.records import dump_json, open_regular

# Set by the orchestrator on the harness container: the folder (on the records mount) where
# requests go, and the comma-separated kinds of call it answers.
CALLS_DIR_ENV = "HARNESS_HOST_CALLS_DIR"
SERVES_ENV = "HARNESS_HOST_SERVES"
POLL_S = 0.01  # the harness waits on an answer this finely: its wait is part of a trial's cost
START_GATE_POLL_S = 0.005  # a wait of well under a second, before anything is measured
START_GATE_TIMEOUT_S = 600.0
REQUEST_MAX_BYTES = 1 << 20  # a real request is a few hundred bytes (a trial's argv)

Handler = Callable[[dict], dict]


class HostCallError(OSError):
    """The host did not answer in time, or answered that it could not do what was asked."""


def offered(kind: str) -> bool:
    """Whether the orchestrator on the host answers calls of this kind."""
    return bool(os.environ.get(CALLS_DIR_ENV)) and kind in os.environ.get(SERVES_ENV, "").split(",")


def calls_dir() -> str:
    """The folder both sides see (created if need be); also where a file must go to be seen
    by a container the host starts, such as a trial's result file."""
    folder = os.environ[CALLS_DIR_ENV]
    os.makedirs(folder, exist_ok=True)
    return folder


def wait_for_start(gate: str, timeout_s: float = START_GATE_TIMEOUT_S) -> None:
    """Wait until the host creates `gate`: its signal that it has nothing left to do meanwhile.

    The orchestrator starts the harness first and finishes its own start-up work (importing
    what its end-of-run summary needs: ~0.5 s of CPU) while the engine starts the container,
    which saves that wall time; holding the harness here until then keeps that CPU off every
    figure the harness records, the save times included. Its clock starts after the gate.
    """
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise HostCallError(
                f"the orchestrator did not open the start gate {gate} within {timeout_s:g} s"
            )
        time.sleep(START_GATE_POLL_S)


def call_host(kind: str, wait_s: float, **payload: Any) -> dict:
    """Ask the host for `kind` with `payload`; wait up to `wait_s` for its answer's fields.

    Kinds: `drop` (drop the page cache; answer `{}`) and `trial` (run the trial worker in a
    fresh container: request `argv`, `env`, `timeout_s`; answer `exit_code`, `stderr`,
    `container_id`). Every file appears whole (written to a temporary name, then renamed), so
    neither side ever reads half of one.
    """
    call_id = f"{os.getpid()}-{time.monotonic_ns()}"
    base = os.path.join(calls_dir(), call_id)
    dump_json(f"{base}.request", {"kind": kind, "id": call_id, **payload})
    deadline = time.monotonic() + wait_s
    while not os.path.exists(f"{base}.done"):
        if time.monotonic() > deadline:
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{base}.request")  # withdrawn: a late host finds nothing to do
            raise HostCallError(f"the host did not answer the {kind} call within {wait_s:g} s")
        time.sleep(POLL_S)
    with open(f"{base}.done") as handle:
        answer = json.load(handle)
    os.remove(f"{base}.done")
    if "error" in answer:
        raise HostCallError(f"the host could not {kind}: {answer['error']}")
    return answer


def serve_host_calls(folder: str, handlers: dict[str, Handler]) -> int:
    """Host side: answer every pending request in `folder`; returns how many were answered.

    A handler gets the request and returns the answer's fields; whatever it raises (short of a
    Ctrl-C) becomes the answer's `error`, so a failure lands in the record of the trial that
    asked instead of ending the whole run.
    """
    try:
        pending = sorted(n for n in os.listdir(folder) if n.endswith(".request"))
    except FileNotFoundError:
        return 0
    for name in pending:
        base = os.path.join(folder, name[: -len(".request")])
        try:
            answer = _answer(_read_request(f"{base}.request"), handlers)
        except FileNotFoundError:
            continue  # withdrawn by a harness that stopped waiting
        except (OSError, ValueError) as exc:  # not a request a harness wrote: never obeyed
            answer = {"error": f"unreadable request: {exc}"}
        with contextlib.suppress(OSError):  # a directory planted at either name: left there
            os.remove(f"{base}.request")
        with contextlib.suppress(OSError):
            dump_json(f"{base}.done", answer)
    return len(pending)


def _answer(call: dict, handlers: dict[str, Handler]) -> dict:
    """The handler's answer to `call`, or its failure (short of a Ctrl-C) as `error`."""
    handler = handlers.get(str(call.get("kind")))
    try:
        if handler is None:
            raise HostCallError(f"this host does not serve {call.get('kind')!r} calls")
        return handler(call)
    except Exception as exc:  # every failure is the asker's to record
        return {"error": str(exc) or type(exc).__name__}


def _read_request(path: str) -> dict:
    """One request as JSON, read from a regular file of at most REQUEST_MAX_BYTES.

    The folder is the container's to write, so what the host finds there may be hostile: only a
    regular file under its own name (no link, FIFO or device) is read, and answers are written
    without following any name (`dump_json`).
    """
    fd = open_regular(path, os.O_RDONLY)
    with open(fd, "rb") as handle:
        data = handle.read(REQUEST_MAX_BYTES + 1)
    if len(data) > REQUEST_MAX_BYTES:
        raise ValueError(f"longer than {REQUEST_MAX_BYTES} bytes")
    call = json.loads(data)
    if not isinstance(call, dict):
        raise ValueError("not a JSON object")
    return call
