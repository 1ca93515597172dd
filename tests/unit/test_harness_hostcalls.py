"""The handshake between a harness that may not do something and the orchestrator that may.

Both sides run for real here: the harness side in this thread, the host side in another,
through a real folder, exactly as a container and `matrix` do through the records mount.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from harness import cache, hostcalls


@pytest.fixture
def calls_dir(tmp_path, monkeypatch) -> str:
    """The environment a container gets when the host answers `drop` and `echo` calls."""
    folder = str(tmp_path / "calls")
    monkeypatch.setenv(hostcalls.CALLS_DIR_ENV, folder)
    monkeypatch.setenv(hostcalls.SERVES_ENV, "drop,echo")
    return folder


@contextmanager
def host(folder: str, handlers: dict[str, hostcalls.Handler]) -> Iterator[list[int]]:
    """The orchestrator's poll loop in a thread; yields the running count of calls answered."""
    answered: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            answered.extend([1] * hostcalls.serve_host_calls(folder, handlers))
            time.sleep(0.01)

    server = threading.Thread(target=serve)
    server.start()
    try:
        yield answered
    finally:
        stop.set()
        server.join()


def _drop(_call: dict) -> dict:
    cache.drop_all_caches()
    return {}


def test_only_offered_calls_are_asked_for(calls_dir, monkeypatch) -> None:
    assert hostcalls.offered("drop") and not hostcalls.offered("trial")
    monkeypatch.delenv(hostcalls.CALLS_DIR_ENV)
    assert not hostcalls.offered("drop")


def test_the_host_drops_the_cache_when_a_container_asks(calls_dir, tmp_path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(4 << 20))
    cache.read_all([str(blob)])
    with host(calls_dir, {"drop": _drop}) as answered:
        assert hostcalls.call_host("drop", 30) == {}
    assert answered == [1]
    assert os.listdir(calls_dir) == []  # request and answer are cleaned up
    if cache.drop_caches_allowed():  # root, as here and in CI
        assert cache.residency([str(blob)]) <= cache.COLD_MAX_RESIDENT


def test_the_request_reaches_the_handler_and_the_answer_comes_back(calls_dir) -> None:
    def echo(call: dict) -> dict:
        return {"got": {k: v for k, v in call.items() if k != "id"}}

    with host(calls_dir, {"echo": echo}):
        answer = hostcalls.call_host("echo", 30, argv=["python", "-c", "pass"], timeout_s=9)
    assert answer == {"got": {"kind": "echo", "argv": ["python", "-c", "pass"], "timeout_s": 9}}


@pytest.mark.parametrize(
    ("handlers", "expected"),
    [
        ({"echo": lambda call: 1 / 0}, "the host could not echo: division by zero"),
        ({}, "this host does not serve 'echo' calls"),
    ],
)
def test_a_failing_host_is_an_error_for_the_asker_not_the_host(
    calls_dir, handlers: dict[str, Callable[[dict], dict]], expected: str
) -> None:
    with (
        host(calls_dir, handlers) as answered,
        pytest.raises(hostcalls.HostCallError, match=expected),
    ):
        hostcalls.call_host("echo", 30)
    assert answered == [1]


def test_an_unanswered_call_times_out_and_is_withdrawn(calls_dir) -> None:
    began = time.monotonic()
    with pytest.raises(hostcalls.HostCallError, match=r"did not answer the echo call within 0\.3"):
        hostcalls.call_host("echo", 0.3)
    assert time.monotonic() - began < 5
    assert os.listdir(calls_dir) == []  # a host coming late finds nothing to do
    assert hostcalls.serve_host_calls(calls_dir, {}) == 0


def test_the_start_gate_holds_the_harness_until_the_host_creates_it(tmp_path) -> None:
    gate = tmp_path / ".start-env"
    opener = threading.Timer(0.3, gate.touch)
    began = time.monotonic()
    opener.start()
    hostcalls.wait_for_start(str(gate), timeout_s=10)
    assert time.monotonic() - began >= 0.3
    assert gate.exists()


def test_a_start_gate_never_opened_is_an_error_not_a_hang(tmp_path) -> None:
    with pytest.raises(hostcalls.HostCallError, match="did not open the start gate"):
        hostcalls.wait_for_start(str(tmp_path / ".start-env"), timeout_s=0.1)
