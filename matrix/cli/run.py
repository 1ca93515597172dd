"""`matrix plan`, `run`, `render` and `build`: from a matrix file to measured environments.

No `from __future__ import annotations` here: typer reads the annotations at runtime.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from harness.catalog import CACHE_MODES, FORMATS
from matrix.cli.common import (
    AddressOption,
    BackendOption,
    BuildDirOption,
    ConfigOption,
    NodeBackendOption,
    RayNodesOption,
    RunIdOption,
    app,
    console_for_output,
    exit_codes,
    fail,
    print_skipped,
    print_warnings,
    with_axis_flags,
)
from matrix.errors import ConfigError, ExitCode, MatrixError
from matrix.execute.backends import Backend, create_backend
from matrix.execute.crossload import cross_load
from matrix.execute.lock import run_lock
from matrix.execute.matrix_run import MatrixRun, choose_run
from matrix.execute.stopping import interrupted_code, sigterm_as_ctrl_c
from matrix.execute.sweep import FAILED, Sweep, summary_line, unrunnable
from matrix.plan.config import (
    BUILTIN_LABEL,
    MatrixConfig,
    find_config_file,
    load_config,
    repeats_flag,
    with_user_files,
)
from matrix.plan.environments import Environment, Skipped, expand
from matrix.plan.inputs import check_folder
from matrix.report.publish import REPORTS, publish
from matrix.results.reader import CROSSLOAD_DIR, error_count, is_complete, read_run

EXIT_CODES = exit_codes(
    {
        ExitCode.OK: "every cell measured or explained (unsupported, invalid)",
        ExitCode.CELLS_FAILED: "some cell has status error (all records are still written)",
        ExitCode.CONFIG_ERROR: "configuration error: bad matrix file or flag, nothing ran",
        ExitCode.ENVIRONMENT_ERROR: "the backend could not run the harness "
        "(e.g. TensorFlow not installed)",
        ExitCode.RESULTS_BUSY: "another `matrix run` is using the results folder (its lock): "
        "nothing ran",
        ExitCode.INTERRUPTED: "interrupted (the records written so far are kept)",
        ExitCode.TERMINATED: "stopped by SIGTERM, as on Ctrl-C (the records written so far "
        "are kept)",
    }
)

PLAN_EXIT_CODES = exit_codes(
    {
        ExitCode.OK: "the plan was printed (skipped cells are listed, not an error)",
        ExitCode.CONFIG_ERROR: "configuration error: bad matrix file or flag",
    }
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
        environments, skipped = expand(_load(config, axes)[0])
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
            help="Continue run RUN_ID, skipping the environments its manifest lists as finished."
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
    address: AddressOption = None,
    ray_nodes: RayNodesOption = None,
    node_backend: NodeBackendOption = None,
    registry: Annotated[
        Optional[str],
        typer.Option(
            help="Ray with --node-backend docker: the registry (HOST:PORT, or HOST:PORT/prefix) "
            "the driver pushes each image to and the nodes pull it from; credentials: `docker "
            "login`. "
            "Default: the matrix file's (none: each node builds its images).",
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
        Optional[str],
        typer.Option(
            help="Measured trials per model × format × cache mode (>= 1), or auto: each cell "
            "until its median load time is known within --precision (95 % interval, "
            "distribution-free) and a 20 % change would be detectable, at most --max-repeats."
        ),
    ] = None,
    max_repeats: Annotated[
        Optional[int], typer.Option(help="With --repeats auto: the most trials a cell gets.")
    ] = None,
    precision: Annotated[
        Optional[float],
        typer.Option(
            help="With --repeats auto: the relative half-width of the 95 % interval of a "
            "cell's median load time at which it stops (0.1: ±10 %)."
        ),
    ] = None,
    trial_process: Annotated[
        Optional[str],
        typer.Option(
            help="forked (a warm or cold-model trial is forked from a process that imported "
            "the runtime once, checked against fresh-process controls) or fresh (a new "
            "interpreter each); cold trials are always fresh."
        ),
    ] = None,
    fresh_artifacts: Annotated[
        Optional[bool],
        typer.Option(
            "--fresh-artifacts/--reuse-artifacts",
            help="Save every artifact anew, even where an earlier run's identical one is "
            "cached (to track save times); the default reuses it.",
        ),
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
    cross_load: Annotated[
        Optional[str],
        typer.Option(
            "--cross-load",
            metavar="[LOADERS]",
            help="Then every loader environment times loading what every other one saved "
            "(docs/cross-load.md). LOADERS: comma-separated globs over environment ids, "
            "e.g. 'tf2.21-*'; alone, every environment.",
            show_default=False,
        ),
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
            "repeats": repeats_flag(repeats) if repeats is not None else None,
            "max_repeats": max_repeats,
            "precision": precision,
            "trial_process": trial_process,
            "fresh_artifacts": fresh_artifacts,
            "warmup": warmup,
            "inference_runs": inference_runs,
            "process": process,
            "seed": seed,
            "weights": weights,
            "results_dir": results_dir,
            "cross_load": cross_load,
            "isolation": isolation,
            "address": address,
            "ray_nodes": ray_nodes,
            "node_backend": node_backend,
            "registry": registry,
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
            matrix, source = _load(config, overrides)
            matrix_run = choose_run(matrix, run_id, resume)
            # Made before the lock: a backend that cannot run leaves no results folder behind.
            chosen = create_backend(matrix, build_dir, console)
            with run_lock(matrix.results_dir, run_id=matrix_run.run_id):
                exit_code = measure(matrix_run, chosen, source, console, html)
    except MatrixError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:  # stopped outside the run proper, which stops its harness itself
        raise typer.Exit(int(interrupted_code())) from None
    raise typer.Exit(int(exit_code))


# Flags whose value may be left out, and what they mean alone (typer has no optional values).
BARE_FLAGS = {"--cross-load": "*"}


def with_bare_flags(argv: list[str]) -> list[str]:
    """`argv` with the meaning of each bare BARE_FLAGS flag (one followed by another flag or
    by nothing) written out: `--cross-load --tf 2.21` is `--cross-load '*' --tf 2.21`."""
    out: list[str] = []
    for at, arg in enumerate(argv):
        out.append(arg)
        if arg in BARE_FLAGS and (at + 1 == len(argv) or argv[at + 1].startswith("-")):
            out.append(BARE_FLAGS[arg])
    return out


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
            matrix, _source = _load(config, axes)
            code = step(matrix, build_dir, console_for_output())
        except MatrixError as exc:
            raise fail(exc) from None
        raise typer.Exit(int(code))

    command.__doc__ = step.__doc__
    app.command(name=name, epilog=epilog)(command)


def _load(config_file: Optional[Path], overrides: dict[str, Any]) -> tuple[MatrixConfig, str]:
    """The validated matrix and where it came from, for the run header."""
    source = find_config_file(config_file)
    return load_config(source, overrides), str(source or BUILTIN_LABEL)


def measure(
    matrix_run: MatrixRun, backend: Backend, source: str, console: Console, html: bool
) -> int:
    """Every environment the backend plans, made (or found) and measured by the sweep, then
    the summary (and with `html` the report); the exit code.

    Environments the run's manifest lists as finished are skipped: that is what `--resume`
    and jobs sharing one `--run-id` on one host rely on.
    """
    reclaimed = backend.reclaim()
    if reclaimed:
        console.print(escape(reclaimed))
    environments, skipped = backend.environments(matrix_run.config)
    print_skipped(console, skipped)
    if not environments:
        raise ConfigError("no environment left to run: every cell was skipped (reasons above)")
    console.print(_header(matrix_run, backend, environments, source))
    try:
        outcomes = Sweep(matrix_run, backend, environments, skipped, console).run()
        crossed = (  # adds the cross-load's cells, changes none of the above
            cross_load(matrix_run, backend, environments, outcomes, console)
            if matrix_run.config.cross_load
            else []
        )
    except KeyboardInterrupt:
        _end_of_run(matrix_run, console)
        console.print(f"resume with: matrix run --resume {matrix_run.run_id}")
        return interrupted_code()
    code = _end_of_run(matrix_run, console, html)
    console.print(summary_line(outcomes))
    if crossed:
        console.print(f"cross-load: {summary_line(crossed)}")
    failure = unrunnable(outcomes)
    if failure is not None:
        raise failure
    failed = any(o.status in FAILED for o in [*outcomes, *crossed])
    return ExitCode.CELLS_FAILED if failed else code


def _header(
    matrix_run: MatrixRun, backend: Backend, environments: list[Environment], source: str
) -> str:
    config = matrix_run.config
    where = environments[0].id if len(environments) == 1 else f"{len(environments)} environments"
    return escape(
        f"run {matrix_run.run_id} on {backend.name} ({where}), matrix from {source}: "
        f"{','.join(config.model_names)} × {len(config.formats)} formats × cache "
        f"{','.join(config.cache)}, {config.repeats or 'auto'} repeats + {config.warmup} "
        f"warm-up, process {config.process} ({config.trial_process} trials)"
    )


def _end_of_run(matrix_run: MatrixRun, console: Console, html: bool = False) -> int:
    """Summary table of everything the run wrote (and with `html` the HTML report); exit code 1
    when a cell has status error."""
    from matrix.report.compat_grid import rich_tables
    from matrix.report.summary import summarize, summary_table
    from matrix.results.dataset import load_runs

    found = read_run(matrix_run.run_dir)  # orjson, cheap: the raw records, for the checks below
    print_warnings(console, found.problems)
    measured = any(r.get("kind") in ("trial", "artifact", "failure") for r in found.records)
    if measured:
        ds = load_runs([matrix_run.run_dir])  # tabled once, for the terminal and the HTML report
        console.print(summary_table(summarize(ds)))
        for grid in rich_tables(ds):  # the cross-load's, if any
            console.print(grid)
    console.print(f"results: {escape(str(matrix_run.run_dir))}/")
    if measured and html:
        publish(ds, REPORTS, matrix_run.config.results_dir, console)
    by_env: dict[str, list] = {}
    for record in found.records:
        by_env.setdefault(str(record.get("env_id")), []).append(record)
    cut = [
        env
        for env, records in by_env.items()
        if not is_complete(records) and not any(r.get("kind") == "failure" for r in records)
    ]
    if cut:
        names = escape(", ".join(cut))
        console.print(f"[yellow]warning[/] ended without its 'done' record: {names}")
    # The cross-load step's records: a crash there is a cell's error too.
    crossed = read_run(matrix_run.run_dir / CROSSLOAD_DIR).records
    failed = error_count(found.records) + error_count(crossed)
    return ExitCode.CELLS_FAILED if failed else ExitCode.OK


def _render_all(config: MatrixConfig, build_root: Path, console: Console) -> int:
    """Write each environment's Dockerfile and build context, to read exactly what will run."""
    from matrix.build.dockerfile import write_build_context

    environments, skipped = expand(config)
    print_skipped(console, skipped)
    check_folder("--build-dir", build_root)
    for env in environments:
        context = write_build_context(env, build_root)
        console.print(f"{escape(env.id)}: {escape(str(context / 'Dockerfile'))}")
    return ExitCode.OK


def _build_all(config: MatrixConfig, build_root: Path, console: Console) -> int:
    """Build (or find, by content hash) every environment's image; failures do not stop it."""
    from matrix.execute.backends.docker import DockerBackend

    docker = DockerBackend.create(config, build_root)
    environments, skipped = docker.environments(config)
    print_skipped(console, skipped)
    table = Table("environment", "image", "built", "seconds", "status")
    logs = build_root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = []
    for env in environments:
        console.print(f"[bold]{escape(env.id)}[/]: image")
        ready = docker.prepare(env, logs / f"{env.id}.log", lambda line: None)
        results.append(ready)
        table.add_row(
            env.id,
            ready.ref,
            "yes" if ready.built else "no (cached)",
            f"{ready.seconds:.1f}",
            escape(f"error: {ready.reason}" if ready.reason else "ok"),
        )
    console.print(table)
    built = sum(r.built for r in results)
    console.print(f"{built} image(s) built, {len(results) - built} found by content hash")
    return ExitCode.CELLS_FAILED if any(r.reason for r in results) else ExitCode.OK


_build_step("render", _render_all, PLAN_EXIT_CODES)
_build_step("build", _build_all, EXIT_CODES)
