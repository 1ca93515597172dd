"""Test double of `python -m harness`: the real command line and gate, records with no TensorFlow.

It parses the arguments the orchestrator generates (`harness.contract`), waits at the start
gate, and writes every kind of record with every field the contract defines, in milliseconds.
FAKE_HARNESS in its environment says how it behaves: `ok`; `fail` (the environment is broken:
a `failure` record, exit 1); `endless` (trials until interrupted, then exit 130 as the harness
does).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's harness

from harness.contract import RECORDS, add_arguments, common_fields, from_arguments
from harness.hostcalls import wait_for_start
from harness.records import RecordWriter

BROKEN = "TensorFlow does not import: ImportError: planted: tensorflow is broken"
# A made-up value of each JSON type; a field of several types (`float | None`) gets its first.
MADE_UP: dict[Any, Any] = {str: "fake", int: 1, float: 0.001, bool: False, list: [], dict: {}}


def filled(kind: str, **given: Any) -> dict[str, Any]:
    """Every field of `kind` the writer does not add itself, of its type; `given` as given."""
    values = {}
    for name, hint in typing.get_type_hints(RECORDS[kind]).items():
        if name not in common_fields():
            first = typing.get_args(hint)[0] if typing.get_origin(hint) is types.UnionType else hint
            made = MADE_UP.get(typing.get_origin(first) or first, {})
            values[name] = given.get(name, made)
    return values


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(prog="fake harness")
    add_arguments(parser.add_subparsers(dest="command").add_parser("run"))
    spec = from_arguments(parser.parse_args(argv))
    behaviour = os.environ.get("FAKE_HARNESS", "ok")
    if spec.start_gate:
        wait_for_start(spec.start_gate)
    writer = RecordWriter(os.path.join(spec.out, f"{spec.env_id}.jsonl"), spec.run_id, spec.env_id)
    try:
        cells = [(m, f, c) for m in spec.models for f in spec.formats for c in spec.cache_modes]
        rounds = spec.warmup + (spec.repeats or 2)
        planned = len(cells) * rounds
        writer.write("plan", **filled("plan", **vars(spec), trials_planned=planned))
        if behaviour == "fail":
            print(BROKEN, file=sys.stderr)
            writer.write("failure", scope="environment", reason=BROKEN)
            return 1
        writer.write("environment", **filled("environment", hostname="fake"))
        for model in spec.models:
            for fmt in spec.formats:
                writer.write("artifact", **filled("artifact", model=model, format=fmt))
        writer.write("schedule", trials_scheduled=len(cells) * rounds)
        began = time.monotonic()
        for rnd in range(rounds) if behaviour != "endless" else iter(int, 1):
            for order, (model, fmt, mode) in enumerate(cells):
                phase = "warmup" if rnd < spec.warmup else "measure"
                fields = dict(model=model, format=fmt, cache_mode=mode, round=rnd, order=order)
                writer.write("trial", **filled("trial", phase=phase, status="ok", **fields))
                time.sleep(0.01 if behaviour == "endless" else 0)
        writer.write(
            "done",
            **filled(
                "done", trials_written=writer.trials_written, elapsed_s=time.monotonic() - began
            ),
        )
        return 0
    except KeyboardInterrupt:
        print("harness: interrupted; every record written so far is kept", file=sys.stderr)
        return 130
    finally:
        writer.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
