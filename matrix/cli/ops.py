"""`matrix doctor`, `prune` and `schedule`: keeping a host and its nightly sweep in order.

No `from __future__ import annotations` here: typer reads the annotations at runtime.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from matrix.cli.common import ResultsDirOption, app, console_for_output, fail
from matrix.errors import MatrixError
from matrix.results.stats import THRESHOLD

DOCTOR_EXIT_CODES = "\n".join(
    [
        "Exit codes:",
        "0  no check failed (a warning says what will be skipped or slower, and its fix)",
        "3  some check failed: its line says what this host cannot do and how to fix it",
    ]
)

PRUNE_EXIT_CODES = "\n".join(
    [
        "Exit codes:",
        "0  the older runs were removed (or, with --dry-run, listed)",
        "2  configuration error: a bad flag or no such results folder",
        "4  a `matrix run` is using the results folder: nothing was removed",
    ]
)

SCHEDULE_EXIT_CODES = "\n".join(
    [
        "Exit codes:",
        "0  the schedule was written (and printed); if its repeats were raised so the nightly",
        "   gate can detect a change of --threshold, stderr says so",
        "2  configuration error: a bad time, output kind, flag or matrix file, or repeats that",
        "   even at 30 could not detect --threshold at the measured spread; nothing written",
    ]
)


@app.command(epilog=DOCTOR_EXIT_CODES)
def doctor(
    results_dir: ResultsDirOption = Path("results"),
    reports_dir: Annotated[
        Path, typer.Option(help="Where reports are written (its free space is checked).")
    ] = Path("reports"),
) -> None:
    """Check what this host can run and how to fix what it cannot, on one screen.

    Docker and its NVIDIA runtime, how `cold` trials drop the page cache, mincore/fadvise,
    free disk, the Pythons and TF releases for the venv backend, uv, and the package index.
    """
    from matrix.ops.doctor import exit_code, render, run_checks, summary

    checks = run_checks(results_dir, reports_dir)
    console = console_for_output()
    console.print(render(checks))
    console.print(escape(summary(checks)))
    raise typer.Exit(int(exit_code(checks)))


@app.command(epilog=PRUNE_EXIT_CODES)
def prune(
    keep: Annotated[
        int, typer.Option(help="How many of the newest runs to keep (>= 1).", show_default=False)
    ],
    results_dir: ResultsDirOption = Path("results"),
    reports_dir: Annotated[
        Path, typer.Option(help="Where `matrix report` wrote the runs' reports (its --out).")
    ] = Path("reports"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be removed.")
    ] = False,
) -> None:
    """Delete every run but the newest N: run folders, their reports and Docker volumes.

    Refused while a `matrix run` holds the results folder; the report `latest` points to stays.
    """
    from matrix.ops.prune import prune as prune_runs

    try:
        prune_runs(results_dir, reports_dir, keep, dry_run, console_for_output())
    except MatrixError as exc:
        raise fail(exc) from None


@app.command(
    epilog=SCHEDULE_EXIT_CODES,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def schedule(
    ctx: typer.Context,
    nightly: Annotated[
        str,
        typer.Option(
            help="Time of day, HH:MM on a 24-hour clock: this machine's local "
            "time for cron and systemd, UTC for github.",
            show_default=False,
        ),
    ],
    emit: Annotated[
        str,
        typer.Option(
            help="cron (a crontab line), systemd (a .service and a .timer) or "
            "github (a GitHub Actions workflow).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="Where to write (default: build/schedule/, for github .github/workflows/).",
            show_default=False,
        ),
    ] = None,
    workdir: Annotated[
        Path, typer.Option(help="The project folder the nightly sweep runs in.")
    ] = Path("."),
    threshold: Annotated[
        float,
        typer.Option(
            help="The change the nightly `matrix compare` gates on (0.20 = 20%); "
            "--repeats is raised until the gate can detect it."
        ),
    ] = THRESHOLD,
) -> None:
    """Run the same sweep every night: a crontab line, systemd units or a GitHub workflow.

    Flags after these go to `matrix run` (e.g. --config, --tf, --only) and are checked now.
    If the repeats are too few for the nightly compare to detect a change of --threshold at
    the spread of the latest run in the results folder, they are raised (up to 30), and
    stderr says so; if even 30 are not enough, nothing is written (exit 2).
    """
    from matrix.ops.schedule import make_schedule, write

    root = ctx.find_root()
    run_command, plan_command = (root.command.get_command(root, n) for n in ("run", "plan"))
    try:
        plan = make_schedule(nightly, emit, workdir, ctx.args, run_command, plan_command, threshold)
        if plan.raised:
            typer.echo(plan.raised, err=True)
        typer.echo("\n".join(write(plan, emit, out)))
    except MatrixError as exc:
        raise fail(exc) from None
