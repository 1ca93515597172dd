"""`python -m harness run …`: the harness's command line, the same in every image.

Bad arguments give one line naming the value and the valid choices, and exit 2 before anything
is written. Exit 0 means the run completed (cells may still have failed: see the records),
1 that the environment itself is broken, 130 that it was interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys

from harness.catalog import (
    CACHE_MODES,
    FORMATS,
    CatalogError,
    check_choices,
    parse_model,
    read_model_options,
)
from harness.envinfo import local_env_id
from harness.hostcalls import HostCallError, wait_for_start
from harness.runner import Options, Run


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="save models in every format and time loading them")
    run.add_argument("--out", required=True, help="folder for <env-id>.jsonl and artifacts")
    run.add_argument("--run-id", required=True)
    run.add_argument("--env-id", default="", help="default: derived from this interpreter")
    run.add_argument("--models", type=_csv, default=["MobileNetV2"])
    run.add_argument("--formats", type=_csv, default=list(FORMATS))
    run.add_argument("--cache", type=_csv, default=["cold", "warm"])
    run.add_argument("--repeats", type=int, default=3)
    run.add_argument("--warmup", type=int, default=1)
    run.add_argument("--inference-runs", type=int, default=10)
    run.add_argument("--process", choices=("fresh", "reused", "both"), default="fresh")
    run.add_argument("--seed", type=int, default=1234)
    run.add_argument("--weights", choices=("none", "imagenet"), default="none")
    run.add_argument("--work", default="", help="artifact folder (default: OUT/artifacts/ENV)")
    run.add_argument(
        "--model-options",
        default="",
        metavar="FILE.json",
        help="per model (by its name in --models): its own code, inputs (.npz) "
        "and dynamic dimension sizes, as docs/records.md 'Inputs' describes",
    )
    run.add_argument(
        "--start-gate",
        default="",
        help="wait until this file exists before starting (the orchestrator "
        "creates it once it is idle, so its own work never overlaps the run)",
    )
    return parser


def _options(args: argparse.Namespace) -> Options:
    for model in args.models:
        parse_model(model)
    check_choices("format", args.formats, FORMATS)
    check_choices("cache mode", args.cache, CACHE_MODES)
    for name, value, low in (
        ("repeats", args.repeats, 1),
        ("warmup", args.warmup, 0),
        ("inference-runs", args.inference_runs, 1),
    ):
        if value < low:
            raise CatalogError(f"--{name} must be >= {low} (got {value})")
    model_options = (
        read_model_options(args.model_options, args.models) if args.model_options else {}
    )
    return Options(
        out=args.out,
        run_id=args.run_id,
        env_id=args.env_id or local_env_id(),
        models=args.models,
        formats=args.formats,
        cache_modes=args.cache,
        repeats=args.repeats,
        warmup=args.warmup,
        inference_runs=args.inference_runs,
        process=args.process,
        seed=args.seed,
        weights=args.weights,
        work=args.work,
        model_options=model_options,
    )


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the run as Ctrl-C does: `docker stop` and systemd send it, and as a
    container's PID 1 the harness would otherwise ignore it until the engine's SIGKILL."""
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    args = _parser().parse_args(argv)
    try:
        opts = _options(args)
    except CatalogError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.start_gate:
            wait_for_start(args.start_gate)
        return Run(opts).execute()
    except HostCallError as exc:  # the host never opened the gate, or stopped answering
        print(f"harness: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harness: interrupted; every record written so far is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
