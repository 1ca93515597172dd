"""What every `matrix` command shares: the typer app, flags declared once, errors as exit codes.

No `from __future__ import annotations` in the cli package: typer reads the annotations at runtime.
"""

import functools
import inspect
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from matrix.errors import ExitCode, MatrixError
from matrix.plan.environments import Skipped

EPILOG_WIDTH = 86  # typer prints epilog lines as they are: wrapped here to fit 100 columns

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
        "venv (one virtual environment per environment, from this host's Pythons), ray "
        "(each environment a task on a Ray cluster's node: docs/ray.md) or "
        "auto (docker when a daemon answers, else venv). Default: the matrix file's.",
        show_default=False,
    ),
]
# The ray backend's (docs/ray.md), for `run` and `doctor --backend ray`.
AddressOption = Annotated[
    Optional[str],
    typer.Option(
        help="Ray: the cluster (auto: the one this machine belongs to, or RAY_ADDRESS; "
        "else HOST:PORT of its head). Default: the matrix file's.",
        show_default=False,
    ),
]
RayNodesOption = Annotated[
    Optional[str],
    typer.Option(
        help="Ray: measure only on the nodes with this label (KEY=VALUE, ray start --labels) "
        "or custom resource: one hardware class. Default: every node with a slot.",
        show_default=False,
    ),
]
NodeBackendOption = Annotated[
    Optional[str],
    typer.Option(
        help="Ray: how each node makes an environment: docker, venv or auto (docker where "
        "its daemon answers). Default: the matrix file's.",
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

    signature = inspect.Signature([*own[:at], *_AXIS_FLAGS, *own[at:]])
    with_axes.__signature__ = signature  # type: ignore[attr-defined]  # read by inspect
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


def exit_codes(meanings: dict[ExitCode, str]) -> str:
    """A command's --help epilog: the codes it exits with (numbers from `ExitCode`, so they are
    written once) and what each means for this command, in the order given."""
    lines = ["Exit codes:"]
    for code, meaning in meanings.items():
        number = str(int(code))
        indent = " " * (len(number) + 2)
        lines += textwrap.wrap(f"{number}  {meaning}", EPILOG_WIDTH, subsequent_indent=indent)
    return "\n".join(lines)


def fail(exc: MatrixError) -> typer.Exit:
    """An expected error: its one line on stderr, and the exit code of its kind."""
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(int(exc.exit_code))


def print_skipped(console: Console, skipped: Iterable[Skipped]) -> None:
    """Each environment the matrix asked for that will not run, with its reason."""
    for env in skipped:
        console.print(f"[yellow]skipped[/] {escape(env.id)}: {escape(env.reason)}")


def print_warnings(console: Console, problems: Iterable[str]) -> None:
    """What did not stop the command but needs a look (a bad record line, a run read twice)."""
    for problem in problems:
        console.print(f"[yellow]warning[/] {escape(problem)}")


def console_for_output() -> Console:
    """Rich output; a log file or CI gets 120 columns, so the summary table is not cut at 80."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    return console
