"""`python -m harness run …` (and `crossload …`, harness.crossload): the harness's command
line, the same in every image.

Bad arguments give one line naming the value and the valid choices, and exit 2 before anything
is written. Exit 0 means the run completed (cells may still have failed: see the records),
1 that the environment itself is broken, 130 that it was interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace

from harness.catalog import CatalogError, read_model_options
from harness.contract import add_arguments, from_arguments
from harness.crossload import CrossLoadRun, read_savers
from harness.envinfo import local_env_id
from harness.hostcalls import HostCallError, wait_for_start
from harness.runner import Run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness")
    sub = parser.add_subparsers(dest="command", required=True)
    add_arguments(sub.add_parser("run", help="save models in every format and time loading them"))
    cross = sub.add_parser("crossload", help="time loading what other environments saved")
    add_arguments(cross)
    cross.add_argument(
        "--saved-by",
        required=True,
        metavar="FILE.json",
        help="the savers: their ids, versions and saved formats; each one's artifacts are "
        "read from WORK/<its env id>/",
    )
    return parser


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the run as Ctrl-C does: `docker stop` and systemd send it, and as a
    container's PID 1 the harness would otherwise ignore it until the engine's SIGKILL."""
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    args = _parser().parse_args(argv)
    try:
        spec = from_arguments(args)
        options = read_model_options(spec.model_options, spec.models) if spec.model_options else {}
        savers = read_savers(args.saved_by) if args.command == "crossload" else None
    except CatalogError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    spec = replace(spec, env_id=spec.env_id or local_env_id())
    try:
        if spec.start_gate:
            wait_for_start(spec.start_gate)
        run = Run(spec, options) if savers is None else CrossLoadRun(spec, savers, options)
        return run.execute()
    except HostCallError as exc:  # the host never opened the gate, or stopped answering
        print(f"harness: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harness: interrupted; every record written so far is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
