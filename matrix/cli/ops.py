"""`matrix doctor`, `prune` and `schedule`: keeping a host and its nightly sweep in order.

No `from __future__ import annotations` here: typer reads the annotations at runtime.
"""

from pathlib import Path
from typing import Annotated, Any, Optional, cast

import typer
from rich.markup import escape
from rich.table import Table

from matrix.cli.common import (
    AddressOption,
    BuildDirOption,
    ConfigOption,
    NodeBackendOption,
    RayNodesOption,
    ResultsDirOption,
    app,
    console_for_output,
    exit_codes,
    fail,
    with_axis_flags,
)
from matrix.errors import ConfigError, ExitCode, MatrixError
from matrix.plan.config import find_config_file, load_config
from matrix.results.stats import THRESHOLD

DOCTOR_EXIT_CODES = exit_codes(
    {
        ExitCode.OK: "no check failed (a warning says what will be skipped or slower, and its fix)",
        ExitCode.ENVIRONMENT_ERROR: "some check failed: its line says what this host cannot "
        "do and how to fix it",
    }
)

PRUNE_EXIT_CODES = exit_codes(
    {
        ExitCode.OK: "the older runs were removed (or, with --dry-run, listed)",
        ExitCode.CONFIG_ERROR: "configuration error: a bad flag or no such results folder",
        ExitCode.RESULTS_BUSY: "a `matrix run` is using the results folder: nothing was removed",
    }
)

SCHEDULE_EXIT_CODES = exit_codes(
    {
        ExitCode.OK: "the schedule was written (and printed); if its repeats were raised so "
        "the nightly gate can detect a change of --threshold, stderr says so",
        ExitCode.CONFIG_ERROR: "configuration error: a bad time, output kind, flag or matrix "
        "file, or repeats that even at 30 could not detect --threshold at the measured "
        "spread; nothing written",
    }
)


@app.command(epilog=DOCTOR_EXIT_CODES)
@with_axis_flags
def doctor(
    axes: dict[str, Any],
    config: ConfigOption = None,
    results_dir: ResultsDirOption = Path("results"),
    reports_dir: Annotated[
        Path, typer.Option(help="Where reports are written (its free space is checked).")
    ] = Path("reports"),
    backend: Annotated[
        Optional[str],
        typer.Option(
            help="ray: check the Ray cluster instead of this host: its nodes, slots, GPUs and "
            "code version, and where each environment of the matrix could run.",
            show_default=False,
        ),
    ] = None,
    address: AddressOption = None,
    ray_nodes: RayNodesOption = None,
    node_backend: NodeBackendOption = None,
    build_dir: BuildDirOption = Path("build"),
) -> None:
    """Check what this host can run and how to fix what it cannot, on one screen.

    Docker and its NVIDIA runtime, how `cold` trials drop the page cache, mincore/fadvise,
    free disk, the Pythons and TF releases for the venv backend, uv, and the package index.
    With --backend ray, the cluster's measurement nodes instead (the matrix flags choose the
    environments placed).
    """
    from matrix.ops.doctor import checks_table, exit_code, run_checks, summary_line

    console = console_for_output()
    tables: list[Table] = []
    if backend == "ray":
        from matrix.ops.ray_doctor import cluster_checks

        given = {"address": address, "ray_nodes": ray_nodes, "node_backend": node_backend}
        overrides = axes | {k: v for k, v in given.items() if v is not None} | {"backend": "ray"}
        try:
            matrix = load_config(find_config_file(config), overrides)
        except MatrixError as exc:
            raise fail(exc) from None
        checks, tables = cluster_checks(matrix, build_dir)
    elif backend is None:
        checks = run_checks(results_dir, reports_dir)
    else:
        raise fail(ConfigError(f"--backend: doctor checks this host, or ray; not {backend!r}"))
    console.print(checks_table(checks))
    for table in tables:
        console.print(table)
    console.print(escape(summary_line(checks)))
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
    group = cast(typer.core.TyperGroup, root.command)
    run_command, plan_command = (group.get_command(root, n) for n in ("run", "plan"))
    try:
        job = make_schedule(nightly, emit, workdir, ctx.args, run_command, plan_command, threshold)
        if job.raised:
            typer.echo(job.raised, err=True)
        typer.echo("\n".join(write(job, emit, out)))
    except MatrixError as exc:
        raise fail(exc) from None
