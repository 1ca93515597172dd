"""`matrix plan`, `run`, `render` and `build`: from a matrix file to measured environments.

No `from __future__ import annotations` here: typer reads the annotations at runtime.
"""

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.catalog import CACHE_MODES, FORMATS
from matrix.cli.common import (
    BackendOption,
    BuildDirOption,
    ConfigOption,
    RunIdOption,
    app,
    console_for_output,
    fail,
    with_axis_flags,
)
from matrix.errors import MatrixError
from matrix.execute import workflow
from matrix.execute.lock import run_lock
from matrix.execute.stopping import interrupted_code, sigterm_as_ctrl_c
from matrix.plan.config import with_user_files
from matrix.plan.environments import Environment, Skipped, expand

EXIT_CODES = "\n".join(
    [
        "Exit codes:",
        "0  every cell measured or explained (unsupported, invalid)",
        "1  some cell has status error (all records are still written)",
        "2  configuration error: bad matrix file or flag, nothing ran",
        "3  the backend could not run the harness (e.g. TensorFlow not installed)",
        "4  another `matrix run` is using the results folder (its lock): nothing ran",
        "130  interrupted (the records written so far are kept)",
        "143  stopped by SIGTERM, as on Ctrl-C (the records written so far are kept)",
    ]
)

PLAN_EXIT_CODES = "\n".join(
    [
        "Exit codes:",
        "0  the plan was printed (skipped cells are listed, not an error)",
        "2  configuration error: bad matrix file or flag",
    ]
)


@app.command(epilog=PLAN_EXIT_CODES)
@with_axis_flags
def plan(
    axes: dict[str, Any],
    config: ConfigOption = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print {environments, skipped} as JSON on stdout (for CI fan-out)."
        ),
    ] = False,
) -> None:
    """List the environments a matrix selects, and each skipped cell with its reason.

    Nothing is built or run; the flags override the matrix file exactly as for `matrix run`.
    """
    try:
        environments, skipped = expand(workflow.load(config, axes)[0])
    except MatrixError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(_plan_json(environments, skipped), indent=2))
    else:
        _print_plan(environments, skipped, console_for_output())


def _plan_json(environments: list[Environment], skipped: list[Skipped]) -> dict[str, Any]:
    fields = ("tf", "python", "device", "keras", "base_image", "packages")
    return {
        "environments": [
            {"id": env.id, **{name: getattr(env, name) for name in fields}} for env in environments
        ],
        "skipped": [{"id": cell.id, "reason": cell.reason} for cell in skipped],
    }


def _print_plan(environments: list[Environment], skipped: list[Skipped], console: Console) -> None:
    selected = Table("id", "TF", "Python", "device", "keras", "base image")
    for env in environments:
        selected.add_row(env.id, env.tf, env.python, env.device, env.keras, env.base_image)
    console.print(f"{len(environments)} environment(s) selected")
    if environments:
        console.print(selected)
    if skipped:
        table = Table("id", "reason")
        for cell in skipped:
            table.add_row(cell.id, Text(cell.reason))  # Text: `[and-cuda]` is not markup
        console.print(f"{len(skipped)} cell(s) skipped")
        console.print(table)


@app.command(epilog=EXIT_CODES)
@with_axis_flags
def run(
    axes: dict[str, Any],
    config: ConfigOption = None,
    backend: BackendOption = None,
    resume: Annotated[
        Optional[str],
        typer.Option(
            help="Docker, venv: continue run RUN_ID, skipping environments already complete."
        ),
    ] = None,
    run_id: RunIdOption = None,
    isolation: Annotated[
        Optional[str],
        typer.Option(
            help="Docker: process (a fresh process per trial in the environment's container) or "
            "container (a fresh container per trial). Default: the matrix file's.",
            show_default=False,
        ),
    ] = None,
    build_dir: BuildDirOption = Path("build"),
    models: Annotated[
        Optional[str],
        typer.Option(
            help="Comma-separated keras.applications names (MobileNetV2,DenseNet201,…), size rungs "
            "(dense-1m, dense-10m) or paths to .keras / .h5 / SavedModel."
        ),
    ] = None,
    code: Annotated[
        Optional[list[str]],
        typer.Option(
            metavar="FILE.py",
            help="Python module defining custom layers or objects of the model files "
            "in --models, imported before each save and load (repeat the flag, or "
            "comma-separate). Never installed into the environment.",
        ),
    ] = None,
    inputs: Annotated[
        Optional[str],
        typer.Option(
            metavar="FILE.npz",
            help="An .npz of inputs (by input name, or arr_0, arr_1, … in order) for "
            "the model files in --models: used for inference and parity instead of "
            "synthetic inputs.",
        ),
    ] = None,
    formats: Annotated[
        Optional[str], typer.Option(help=f"Comma-separated, or all: {', '.join(FORMATS)}.")
    ] = None,
    cache: Annotated[
        Optional[str],
        typer.Option(help=f"Comma-separated cache modes, or all: {', '.join(CACHE_MODES)}."),
    ] = None,
    repeats: Annotated[
        Optional[int], typer.Option(help="Measured trials per model × format × cache mode (>= 1).")
    ] = None,
    warmup: Annotated[
        Optional[int],
        typer.Option(help="Warm-up trials per cell, run and excluded from statistics (>= 0)."),
    ] = None,
    inference_runs: Annotated[
        Optional[int], typer.Option(help="Steady inference calls timed after each load (>= 1).")
    ] = None,
    process: Annotated[
        Optional[str],
        typer.Option(
            help="fresh (a new process per trial), reused (repeated loads in one warm process, "
            "as the original article measured) or both."
        ),
    ] = None,
    seed: Annotated[
        Optional[int],
        typer.Option(
            help="Seed of the per-round shuffle of trial order (recorded, to replay a run)."
        ),
    ] = None,
    weights: Annotated[
        Optional[str],
        typer.Option(help="none (no download; same tensors and load cost) or imagenet."),
    ] = None,
    results_dir: Annotated[
        Optional[Path], typer.Option(help="Records go to <results-dir>/<run-id>/.")
    ] = None,
    html: Annotated[
        bool,
        typer.Option(
            "--report/--no-report",
            help="Write the HTML report (reports/<run-id>/index.html) at the end.",
        ),
    ] = True,
) -> None:
    """Run a matrix of load-time trials, print a summary table and write the HTML report.

    Every flag overrides the key of the same name in the matrix file.
    """
    overrides = {
        key: value
        for key, value in {
            "models": models,
            "formats": formats,
            "cache": cache,
            "repeats": repeats,
            "warmup": warmup,
            "inference_runs": inference_runs,
            "process": process,
            "seed": seed,
            "weights": weights,
            "results_dir": results_dir,
            "isolation": isolation,
        }.items()
        if value is not None
    }
    overrides |= axes
    if backend is not None:
        overrides["backend"] = backend
    console = console_for_output()
    try:
        with sigterm_as_ctrl_c():
            if code or inputs is not None:
                overrides["models"] = with_user_files(models, code or [], inputs)
            matrix, source = workflow.load(config, overrides)
            plan = workflow.plan_run(matrix, run_id, resume)
            chosen = workflow.choose_backend(matrix, console)
            # Checked before the lock: a backend that cannot run leaves no results folder behind.
            if chosen == "local":
                local = workflow.local_backend()
                job = functools.partial(workflow.run_local, plan, local, source, console, html)
            else:
                provisioner = workflow.provisioner_for(chosen, build_dir)
                job = functools.partial(
                    workflow.run_sweep, plan, source, console, provisioner, html
                )
            with run_lock(matrix.results_dir, run_id=plan.run_id):
                if chosen == "docker":
                    workflow.remove_dead_runs(console)
                code = job()
    except MatrixError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:  # stopped outside the run proper, which stops its harness itself
        raise typer.Exit(int(interrupted_code())) from None
    raise typer.Exit(int(code))


def _build_step(name: str, step: Callable[..., int], epilog: str) -> None:
    """Register `matrix NAME`: a step over the planned environments that writes to BUILD_DIR.

    `render` and `build` take the same flags and differ only in the step, so one definition
    serves both (typer reads the flags from this signature).
    """

    @with_axis_flags
    def command(
        axes: dict[str, Any],
        config: ConfigOption = None,
        build_dir: BuildDirOption = Path("build"),
    ) -> None:
        try:
            matrix, _source = workflow.load(config, axes)
            code = step(matrix, build_dir, console_for_output())
        except MatrixError as exc:
            raise fail(exc) from None
        raise typer.Exit(int(code))

    command.__doc__ = step.__doc__
    app.command(name=name, epilog=epilog)(command)


_build_step("render", workflow.render_all, PLAN_EXIT_CODES)
_build_step("build", workflow.build_all, EXIT_CODES)
