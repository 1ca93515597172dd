"""The `matrix` command line: config → plan → run → records → summary → exit code.

Each step is a module of its own; this file only wires them together and turns expected errors
into one line on stderr and an exit code. No `from __future__ import annotations` here: typer
reads the annotations at runtime, and they must work on Python 3.9.
"""

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.catalog import CACHE_MODES, FORMATS
from matrix import workflow
from matrix.environments import Environment, Skipped, expand
from matrix.errors import MatrixError

EXIT_CODES = "\n".join(
    [
        "Exit codes:",
        "0  every cell measured or explained (unsupported, invalid)",
        "1  some cell has status error (all records are still written)",
        "2  configuration error: bad matrix file or flag, nothing ran",
        "3  the backend could not run the harness (e.g. TensorFlow not installed)",
        "130  interrupted (the records written so far are kept)",
    ]
)

PLAN_EXIT_CODES = "\n".join(
    [
        "Exit codes:",
        "0  the plan was printed (skipped cells are listed, not an error)",
        "2  configuration error: bad matrix file or flag",
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
SkipOption = Annotated[
    Optional[str],
    typer.Option("--skip", help="Comma-separated globs over environment ids, e.g. 'tf2.2-*-gpu'."),
]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main() -> None:
    """Measure how fast TensorFlow models load, per file format and cache state."""


@app.command(epilog=PLAN_EXIT_CODES)
def plan(
    config: ConfigOption = None,
    tf: TfOption = None,
    py: PyOption = None,
    cpu: CpuOption = False,
    gpu: GpuOption = False,
    both: BothOption = False,
    keras: KerasOption = None,
    only: OnlyOption = None,
    skip: SkipOption = None,
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
    overrides = _axis_overrides(tf, py, cpu, gpu, both, keras, only, skip)
    try:
        environments, skipped = expand(workflow.load(config, overrides)[0])
    except MatrixError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(_plan_json(environments, skipped), indent=2))
    else:
        _print_plan(environments, skipped, _console())


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
def run(
    config: ConfigOption = None,
    backend: Annotated[
        Optional[str],
        typer.Option(
            help="local (this interpreter's TensorFlow), docker (one image per environment) or "
            "auto (docker when a daemon answers, else local). Default: the matrix file's.",
            show_default=False,
        ),
    ] = None,
    allow_cache_drop: Annotated[
        bool,
        typer.Option(
            help="Docker: give containers exactly CAP_SYS_ADMIN and unconfined /proc/sys so "
            "`cold` trials can drop the page cache; without it they are recorded unsupported."
        ),
    ] = False,
    resume: Annotated[
        Optional[str],
        typer.Option(help="Docker: continue run RUN_ID, skipping environments already complete."),
    ] = None,
    build_dir: BuildDirOption = Path("build"),
    models: Annotated[
        Optional[str],
        typer.Option(
            help="Comma-separated keras.applications names (MobileNetV2,DenseNet201,…), size rungs "
            "(dense-1m, dense-10m) or paths to .keras / .h5 / SavedModel."
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
    tf: TfOption = None,
    py: PyOption = None,
    cpu: CpuOption = False,
    gpu: GpuOption = False,
    both: BothOption = False,
    keras: KerasOption = None,
    only: OnlyOption = None,
    skip: SkipOption = None,
) -> None:
    """Run a matrix of load-time trials and print a summary table.

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
        }.items()
        if value is not None
    }
    overrides |= _axis_overrides(tf, py, cpu, gpu, both, keras, only, skip)
    if backend is not None:
        overrides["backend"] = backend
    console = _console()
    try:
        matrix, source = workflow.load(config, overrides)
        if workflow.choose_backend(matrix, console) == "docker":
            code = workflow.run_docker(matrix, source, console, build_dir, allow_cache_drop,
                                       resume)
        else:
            code = workflow.run_local(matrix, source, console)
    except MatrixError as exc:
        raise _fail(exc) from None
    raise typer.Exit(int(code))


@app.command(epilog=PLAN_EXIT_CODES)
def render(
    config: ConfigOption = None,
    tf: TfOption = None,
    py: PyOption = None,
    cpu: CpuOption = False,
    gpu: GpuOption = False,
    both: BothOption = False,
    keras: KerasOption = None,
    only: OnlyOption = None,
    skip: SkipOption = None,
    build_dir: BuildDirOption = Path("build"),
) -> None:
    """Write each environment's Dockerfile and build context under BUILD_DIR/<env-id>/."""
    overrides = _axis_overrides(tf, py, cpu, gpu, both, keras, only, skip)
    try:
        matrix, _source = workflow.load(config, overrides)
        code = workflow.render_all(matrix, build_dir, _console())
    except MatrixError as exc:
        raise _fail(exc) from None
    raise typer.Exit(int(code))


@app.command(epilog=EXIT_CODES)
def build(
    config: ConfigOption = None,
    tf: TfOption = None,
    py: PyOption = None,
    cpu: CpuOption = False,
    gpu: GpuOption = False,
    both: BothOption = False,
    keras: KerasOption = None,
    only: OnlyOption = None,
    skip: SkipOption = None,
    build_dir: BuildDirOption = Path("build"),
) -> None:
    """Build every environment's image, reusing any whose content hash is unchanged."""
    overrides = _axis_overrides(tf, py, cpu, gpu, both, keras, only, skip)
    try:
        matrix, _source = workflow.load(config, overrides)
        code = workflow.build_all(matrix, build_dir, _console())
    except MatrixError as exc:
        raise _fail(exc) from None
    raise typer.Exit(int(code))


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

