"""The `matrix` command line: config → plan → run → records → summary → exit code.

Each step is a module of its own; this file only wires them together and turns expected errors
into one line on stderr and an exit code. No `from __future__ import annotations` here: typer
reads the annotations at runtime, and they must work on Python 3.9.
"""

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from harness.catalog import CACHE_MODES, FORMATS
from matrix import workflow
from matrix.config import with_user_files
from matrix.environments import Environment, Skipped, expand
from matrix.errors import ConfigError, ExitCode, MatrixError
from matrix.lock import run_lock
from matrix.stats import ALPHA, THRESHOLD
from matrix.stopping import interrupted_code, sigterm_as_ctrl_c

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

COMPARE_EXIT_CODES = "\n".join(
    [
        "Exit codes:",
        "0  no cell got slower (beyond the threshold and significantly), and every cell could",
        "   have shown a change of the threshold's size (or --allow-underpowered)",
        "1  regression found: some cell is slower beyond the threshold, significantly",
        "2  configuration error: a run not found, a bad flag, or no cell measured in both runs",
        "5  no regression, but some cell is underpowered: its trials are too few or too noisy",
        "   to detect a change of the threshold's size (the summary says how many repeats",
        "   would); --allow-underpowered exits 0 instead",
    ]
)

REPORT_EXIT_CODES = "\n".join(
    [
        "Exit codes:",
        "0  the report was written (unreadable record lines are warned about and skipped)",
        "2  configuration error: a run not found or a bad flag",
    ]
)

MOST_SAME = 100  # `matrix compare` lists more unchanged cells than this only with --all

PLAN_EXIT_CODES = "\n".join(
    [
        "Exit codes:",
        "0  the plan was printed (skipped cells are listed, not an error)",
        "2  configuration error: bad matrix file or flag",
    ]
)

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

# Options shared by `plan` and `run`, declared once so both commands read a matrix the same way.
ConfigOption = Annotated[
    Optional[Path],
    typer.Option(
        help="Matrix file (default: ./matrix.yaml if present, else the built-in matrix).",
        show_default=False,
    ),
]
TfOption = Annotated[
    Optional[str],
    typer.Option(
        "--tf",
        help="Comma-separated TensorFlow minors (2.15 = its latest release) or releases (2.15.0).",
    ),
]
PyOption = Annotated[
    Optional[str],
    typer.Option(
        "--py", help="Comma-separated Python versions (3.11), or auto: the newest the TF supports."
    ),
]
CpuOption = Annotated[bool, typer.Option("--cpu", help="CPU environments.")]
GpuOption = Annotated[bool, typer.Option("--gpu", help="GPU environments.")]
BothOption = Annotated[bool, typer.Option("--both", help="CPU and GPU environments.")]
KerasOption = Annotated[
    Optional[str],
    typer.Option(
        "--keras", help="default and/or legacy (tf-keras with TF_USE_LEGACY_KERAS=1, TF >= 2.16)."
    ),
]
OnlyOption = Annotated[
    Optional[str],
    typer.Option(
        "--only", help="Comma-separated globs over environment ids: keep the matching ones."
    ),
]
BuildDirOption = Annotated[
    Path, typer.Option(help="Where rendered Dockerfiles and build contexts are written.")
]
ResultsDirOption = Annotated[
    Path, typer.Option(help="Where runs are kept: <results-dir>/<run-id>/<env-id>.jsonl.")
]
ThresholdOption = Annotated[
    float,
    typer.Option(help="Smallest relative change of the median load time that counts (0.20 = 20%)."),
]
AlphaOption = Annotated[
    float,
    typer.Option(
        help="A change counts only if Welch's t-test on log load times gives p below this."
    ),
]
SkipOption = Annotated[
    Optional[str],
    typer.Option("--skip", help="Comma-separated globs over environment ids, e.g. 'tf2.2-*-gpu'."),
]

BackendOption = Annotated[
    Optional[str],
    typer.Option(
        help="local (this interpreter's TensorFlow), docker (one image per environment), "
        "venv (one virtual environment per environment, from this host's Pythons) or "
        "auto (docker when a daemon answers, else venv). Default: the matrix file's.",
        show_default=False,
    ),
]
# Jobs of a fanned-out sweep (`matrix schedule --emit github`) share one run id.
RunIdOption = Annotated[
    Optional[str],
    typer.Option(
        help="Name this run (default: its UTC start time and a random suffix). Jobs "
        "of a fanned-out sweep pass the same id, so their records form one run."
    ),
]

_AXIS_FLAGS = [
    inspect.Parameter(
        name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=option
    )
    for name, option, default in (
        ("tf", TfOption, None),
        ("py", PyOption, None),
        ("cpu", CpuOption, False),
        ("gpu", GpuOption, False),
        ("both", BothOption, False),
        ("keras", KerasOption, None),
        ("only", OnlyOption, None),
        ("skip", SkipOption, None),
    )
]


def with_axis_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the environment-axis flags, declared once: --tf, --py, --cpu, --gpu,
    --both, --keras, --only, --skip. The command gets them as `axes`, the config overrides
    they make, so every command reads a matrix the same way.

    typer reads a command's flags from its signature, so the signature is what is extended:
    the flags go after `--config`, in place of the `axes` parameter typer must not see.
    """
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "axes"]
    at = next(i for i, p in enumerate(own) if p.name == "config") + 1

    @functools.wraps(command)
    def with_axes(**given: Any) -> None:
        command(axes=_axis_overrides(**{p.name: given.pop(p.name) for p in _AXIS_FLAGS}), **given)

    with_axes.__signature__ = inspect.Signature([*own[:at], *_AXIS_FLAGS, *own[at:]])
    return with_axes


def _axis_overrides(
    tf: Optional[str],
    py: Optional[str],
    cpu: bool,
    gpu: bool,
    both: bool,
    keras: Optional[str],
    only: Optional[str],
    skip: Optional[str],
) -> dict[str, Any]:
    """The environment-axis flags as config overrides; --cpu --gpu together mean --both."""
    device = [d for d, wanted in (("cpu", cpu or both), ("gpu", gpu or both)) if wanted]
    given = {"tf": tf, "python": py, "device": device or None, "keras": keras}
    given |= {"only": only, "skip": skip}
    return {key: value for key, value in given.items() if value is not None}


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def matrix_group() -> None:
    """Measure how fast TensorFlow models load, per file format and cache state."""


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
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(_plan_json(environments, skipped), indent=2))
    else:
        _print_plan(environments, skipped, _console())


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
    console = _console()
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
        raise _fail(exc) from None
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
            code = step(matrix, build_dir, _console())
        except MatrixError as exc:
            raise _fail(exc) from None
        raise typer.Exit(int(code))

    command.__doc__ = step.__doc__
    app.command(name=name, epilog=epilog)(command)


_build_step("render", workflow.render_all, PLAN_EXIT_CODES)
_build_step("build", workflow.build_all, EXIT_CODES)


@app.command(epilog=REPORT_EXIT_CODES)
def report(
    runs: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Run ids under --results-dir, or paths to run folders (from any "
            "machine); several are merged. Default: the newest run.",
            show_default=False,
        ),
    ] = None,
    results_dir: ResultsDirOption = Path("results"),
    out: Annotated[
        Path,
        typer.Option(
            help="Reports go to <out>/<run-id>/index.html; <out>/latest links to the newest."
        ),
    ] = Path("reports"),
    export: Annotated[
        Optional[Path],
        typer.Option(
            help="Also write the tidy trials to FILE.csv or FILE.parquet, and the "
            "per-cell statistics to FILE-stats.csv / FILE-stats.parquet.",
            show_default=False,
        ),
    ] = None,
    baseline_format: Annotated[
        str, typer.Option(help="Speed-ups are against this format's median load time.")
    ] = "h5",
    baseline_env: Annotated[
        Optional[str],
        typer.Option(
            help="Speed-ups against this environment's median load (default: none).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write the HTML report of one or more runs (merged), and optionally export their data."""
    from matrix.dataset import load_runs
    from matrix.inputs import check_folder
    from matrix.runs import newest, resolve

    console = _console()
    try:
        check_folder("--out", out)
        if export is not None and export.suffix not in (".csv", ".parquet"):
            raise ConfigError(f"--export {export}: name a .csv or .parquet file")
        if baseline_format not in FORMATS:
            raise ConfigError(
                f"--baseline-format {baseline_format!r}: choose from {', '.join(FORMATS)}"
            )
        dirs = [resolve(run, results_dir) for run in runs] if runs else [newest(results_dir)]
        ds = load_runs(dirs)
        for problem in ds.problems:
            console.print(f"[yellow]warning[/] {escape(problem)}")
        workflow.report(ds, out, results_dir, console, baseline_format, baseline_env, export)
    except MatrixError as exc:
        raise _fail(exc) from None


@app.command(epilog=COMPARE_EXIT_CODES)
def compare(
    run_a: Annotated[str, typer.Argument(help="The reference run: id or path.")],
    run_b: Annotated[str, typer.Argument(help="The run under test: id or path.")],
    results_dir: ResultsDirOption = Path("results"),
    threshold: ThresholdOption = THRESHOLD,
    alpha: AlphaOption = ALPHA,
    show_all: Annotated[
        bool,
        typer.Option(
            "--all",
            help=f"List unchanged cells even when there are more than "
            f"{MOST_SAME} (by default only the changes are listed then).",
        ),
    ] = False,
    allow_underpowered: Annotated[
        bool,
        typer.Option(
            "--allow-underpowered",
            help="Exit 0, not 5, when no cell got slower but "
            "some could not have shown a change of the threshold's size.",
        ),
    ] = False,
    normalise: Annotated[
        bool,
        typer.Option(
            "--normalise",
            help="Rescale run B's load times to run A's machine speed "
            "(× calibration_s of A / of B, per environment) before judging.",
        ),
    ] = False,
) -> None:
    """Compare every cell measured in both runs; exit 1 if one got slower (for CI gating).

    A cell is flagged only when its median load time changed by more than the threshold AND
    the change is significant (Welch's t-test on log load times; Benjamini-Hochberg at alpha
    over all the cells compared, so nothing is flagged when nothing changed). A cell that is
    not flagged is "same" only if its trials could have detected a change of the threshold's
    size (the "detectable" column, at 80 % power); else it is "underpowered" (exit 5).
    """
    from matrix.compare import compare_runs, render, summary_line
    from matrix.dataset import load_runs
    from matrix.runs import resolve

    console = _console()
    try:
        if threshold <= 0 or not 0 < alpha < 1:
            raise ConfigError(
                "--threshold must be > 0 and --alpha between 0 and 1 "
                f"(got {threshold:g}, {alpha:g})"
            )
        loaded = [load_runs([resolve(run, results_dir)]) for run in (run_a, run_b)]
        for problem in [*loaded[0].problems, *loaded[1].problems]:
            console.print(f"[yellow]warning[/] {escape(problem)}")
        comparison = compare_runs(*loaded, threshold=threshold, alpha=alpha, normalise=normalise)
        if comparison.cells.empty:
            raise ConfigError(
                f"nothing to compare: no cell was measured in both {run_a} and {run_b}"
            )
    except MatrixError as exc:
        raise _fail(exc) from None
    console.print(render(comparison, run_a, run_b, None if show_all else MOST_SAME))
    console.print(escape(summary_line(comparison, threshold, alpha)))
    if len(comparison.slower):
        raise typer.Exit(int(ExitCode.REGRESSION))
    underpowered = len(comparison.underpowered) and not allow_underpowered
    raise typer.Exit(int(ExitCode.UNDERPOWERED if underpowered else ExitCode.OK))


@app.command()
def history(
    results_dir: ResultsDirOption = Path("results"),
    env: Annotated[
        Optional[str], typer.Option(help="Only environments matching this glob.")
    ] = None,
    model: Annotated[Optional[str], typer.Option(help="Only this model.")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="Only this format.")] = None,
    last: Annotated[int, typer.Option(min=1, help="Show the medians of the last N runs.")] = 8,
) -> None:
    """Median load time of every cell over the runs in --results-dir, oldest first.

    Each (environment, model, format, cache mode) series ends with its latest change against
    the run before and a step flag, judged as `matrix compare` judges (slower, faster, same,
    or underpowered when the trials could not have shown a change of the threshold's size).
    """
    from matrix.dataset import load_runs
    from matrix.history import latest_changes, render, select, series_frame
    from matrix.runs import run_dirs

    dirs = run_dirs(results_dir)
    if not dirs:
        raise _fail(ConfigError(f"no runs under {results_dir}/"))
    ds = load_runs(dirs)
    frame = select(series_frame(ds), env, model, fmt)
    if frame.empty:
        raise _fail(ConfigError(f"no measured cell under {results_dir}/ matches the filters"))
    console = _console()
    console.print(render(frame, latest_changes(frame), last))


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
    from matrix.doctor import exit_code, render, run_checks, summary

    checks = run_checks(results_dir, reports_dir)
    console = _console()
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
    from matrix.prune import prune as prune_runs

    try:
        prune_runs(results_dir, reports_dir, keep, dry_run, _console())
    except MatrixError as exc:
        raise _fail(exc) from None


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
    from matrix.schedule import make_schedule, write

    root = ctx.find_root()
    run_command, plan_command = (root.command.get_command(root, n) for n in ("run", "plan"))
    try:
        plan = make_schedule(nightly, emit, workdir, ctx.args, run_command, plan_command, threshold)
        if plan.raised:
            typer.echo(plan.raised, err=True)
        typer.echo("\n".join(write(plan, emit, out)))
    except MatrixError as exc:
        raise _fail(exc) from None


def _fail(exc: MatrixError) -> typer.Exit:
    """An expected error: its one line on stderr, and the exit code of its kind."""
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(int(exc.exit_code))


def _console() -> Console:
    """Rich output; a log file or CI gets 120 columns, so the summary table is not cut at 80."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    return console


def main() -> None:
    """The `matrix` console script: the CLI, then an exit without the interpreter's teardown.

    Tearing down pandas', pyarrow's and numpy's objects one by one costs ~0.4 s at the end of
    every command that loaded them, for nothing: every file we write is closed by its `with`
    and no thread is left working by then (a container's watcher threads end with it). So
    the exit code goes straight to the OS once stdout and stderr are flushed. An exception
    other than SystemExit is left to the interpreter, traceback and teardown included.
    """
    try:
        app(prog_name="matrix")
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # sys.exit("message"): Python prints it and exits 1
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
