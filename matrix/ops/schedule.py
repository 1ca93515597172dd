"""`matrix schedule`: the same sweep every night, from cron, a systemd timer or GitHub Actions.

What is scheduled is a `matrix run` with the flags given after the schedule's own, checked now as
`matrix run` parses them, so a typo fails here and not at 2 a.m. Cron and systemd run it on this
machine; the GitHub workflow fans out one job per environment, merges them and gates on
`matrix compare`, whose power to detect --threshold is checked first (`_powered`).
"""

from __future__ import annotations

import getpass
import math
import os
import re
import shlex
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from harness.precision import MIN_REPEATS
from matrix.errors import ConfigError
from matrix.plan.config import CONFIG_FILE_NAME, MatrixConfig, load_config, repeats_flag
from matrix.plan.inputs import output_folder, refuse_control
from matrix.results.stats import (
    ALPHA,
    MIN_SAMPLES,
    THRESHOLD,
    detectable_at,
    pair_alpha,
    repeats_needed,
)

EMITS = ("cron", "systemd", "github")
UNIT = "tf-load-matrix-nightly"
NIGHTLY_LOG = "nightly.log"
KEEP_NIGHTS = 60  # runs the GitHub workflow keeps in its cache (for compare and history)
WORKFLOW_FILE = "nightly.yml"
WORKFLOW_TEMPLATE = "nightly.yml.j2"
MAX_REPEATS = 30  # a nightly sweep is not raised past this many repeats: it refuses instead
# The spread assumed when no run is at hand: the standard deviation of log load times of the
# default model (MobileNetV2) loaded in fresh processes on this project's 2-core machine, where
# its h5, .keras and SavedModel loads range 0.9-1.2 s. The first real run replaces it.
SPREAD_DEFAULT = 0.10
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SYSTEMD_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
# Flags a schedule sets itself: a nightly run is a new run every night, and the GitHub jobs
# choose the backend, the results folder and where the report is written.
_NEVER = {
    "resume": "a nightly sweep starts a new run every night",
    "run_id": "a nightly sweep starts a new run every night",
}
_SET_BY_WORKFLOW = {
    "backend": "the workflow measures each environment in its own Docker job",
    "results_dir": "the workflow merges the jobs' results/ itself",
    "html": "the workflow writes one report of all the jobs at the end",
}


@dataclass(frozen=True)
class Nightly:
    """A time of day, HH:MM on a 24-hour clock."""

    hour: int
    minute: int

    @property
    def text(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"

    @property
    def cron(self) -> str:
        return f"{self.minute} {self.hour} * * *"


@dataclass(frozen=True)
class Schedule:
    """Everything the three outputs are written from."""

    nightly: Nightly
    workdir: Path  # absolute: where the sweep runs (cron and systemd)
    matrix: list[str]  # the absolute command line of this `matrix`
    run_args: list[str]  # the `matrix run` flags given, as `matrix run` parsed them
    plan_args: list[str]  # those of them `matrix plan` takes too (config and axes)
    fanout_args: list[str]  # all but --only/--skip: a GitHub job runs one planned environment
    results_dir: Path  # where the runs go, from the flags or the matrix file
    generated_by: str  # the `matrix schedule` command line, written into each file
    threshold: float  # the change the nightly `matrix compare` gates on
    raised: str = ""  # why the repeats were raised, for stderr; empty if they were not


def parse_nightly(text: str) -> Nightly:
    """`02:30` → Nightly(2, 30); ConfigError naming --nightly otherwise."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ConfigError(
            f"--nightly {text}: give a time of day as HH:MM on a 24-hour clock, "
            "e.g. --nightly 02:30"
        )
    return Nightly(int(match[1]), int(match[2]))


def make_schedule(
    nightly: str,
    emit: str,
    workdir: Path,
    args: list[str],
    run_command: Any,
    plan_command: Any,
    threshold: float,
) -> Schedule:
    """Check every input of `matrix schedule` and resolve it to what the outputs need.

    `nightly` is the time of day (HH:MM), `emit` the output kind (EMITS), `workdir` the project
    folder the sweep runs in, `args` the `matrix run` flags given after the schedule's own and
    `threshold` the change the nightly compare gates on. `run_command` and `plan_command` are
    the click commands of `matrix run` and `matrix plan` (click as typer ships it: its own copy
    in typer >= 0.29, so they are used by their interface, not type).
    """
    when = parse_nightly(nightly)
    if emit not in EMITS:
        raise ConfigError(f"--emit {emit}: choose from {', '.join(EMITS)}")
    if not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir}: no such folder")
    refuse_control("--workdir", workdir.absolute())  # cron's `cd`, systemd's WorkingDirectory
    if threshold <= 0:
        raise ConfigError(f"--threshold must be > 0 (got {threshold:g})")
    given = _passed_through(run_command, args)
    for name, why in (_NEVER | (_SET_BY_WORKFLOW if emit == "github" else {})).items():
        if name in given:
            raise ConfigError(f"{given[name].tokens[0]}: not for a schedule ({why}); remove it")
    config = _matrix_config(workdir, given)
    raised = _powered(given, config, workdir, threshold)
    plan_names = {p.name for p in plan_command.params}
    matrix = matrix_command()
    for word in matrix:
        refuse_control("the path of this matrix", word)
    return Schedule(
        nightly=when,
        workdir=workdir.absolute(),
        matrix=matrix,
        run_args=[token for flag in given.values() for token in flag.tokens],
        plan_args=[t for name, flag in given.items() if name in plan_names for t in flag.tokens],
        fanout_args=[
            t for name, flag in given.items() if name not in ("only", "skip") for t in flag.tokens
        ],
        results_dir=config.results_dir,
        generated_by=shlex.join(
            [
                "matrix",
                "schedule",
                "--nightly",
                when.text,
                "--emit",
                emit,
                *([] if threshold == THRESHOLD else ["--threshold", f"{threshold:g}"]),
                *args,
            ]
        ),
        threshold=threshold,
        raised=raised,
    )


def observed_spread(results_dir: Path) -> tuple[float, str]:
    """The standard deviation of log load times a nightly sweep can expect, and where it comes
    from: the median over the cells of the latest run under `results_dir`, else SPREAD_DEFAULT."""
    from matrix.results.dataset import CELL, load_runs, load_samples
    from matrix.results.runs import run_dirs

    runs = run_dirs(results_dir)
    if runs:
        samples = load_samples(load_runs(runs[-1:]), CELL)["samples"]
        spreads = [
            statistics.stdev([math.log(x) for x in s])
            for s in samples
            if len(s) >= MIN_SAMPLES and min(s) > 0
        ]
        if spreads:
            return statistics.median(spreads), f"the median over the cells of run {runs[-1].name}"
    return SPREAD_DEFAULT, "no run under the results folder: the project's measured default"


def gate_cells(config: MatrixConfig) -> int:
    """The cells the nightly `matrix compare` judges as one family (see `matrix.results.stats`)."""
    from matrix.plan.environments import expand

    return len(config.models) * len(config.formats) * len(config.cache) * len(expand(config)[0])


def _powered(given: dict[str, Flag], config: MatrixConfig, workdir: Path, threshold: float) -> str:
    """Raise `--repeats` in `given` to the fewest that detect `threshold` at the observed spread;
    the line saying so, or "" if the configured repeats do.

    A gate that cannot fire is worse than none: it reads "same" every night. So at the spread of
    log load times this machine shows (`observed_spread`), the configured repeats must let
    `matrix compare` detect a change of `threshold` (its minimal detectable change, at 80 %
    power); if not they are raised, up to MAX_REPEATS, and past that the schedule is refused.
    """
    if config.repeats is None and threshold >= THRESHOLD:
        return ""  # `auto` keeps every cell until a change of THRESHOLD is detectable
    repeats = config.repeats or MIN_REPEATS  # `auto` may stop a cell at its minimum
    spread, source = observed_spread(workdir / config.results_dir)
    cells = gate_cells(config)
    alpha = pair_alpha(ALPHA, cells)
    detectable = detectable_at(spread, repeats, alpha)
    if detectable <= threshold:
        return ""
    needed = repeats_needed(spread, threshold, alpha, cap=MAX_REPEATS)
    at = (
        f"at {repeats} repeats the nightly `matrix compare` could detect only a "
        f"±{detectable:.0%} change in one of its {cells} cells (SD of log load time "
        f"{spread:.2f}, {source})"
    )
    if needed is None:
        raise ConfigError(
            f"--repeats {repeats}: {at}, and even {MAX_REPEATS} repeats "
            f"could not detect --threshold {threshold:g}: raise --threshold"
        )
    given["repeats"] = Flag(["--repeats", str(needed)], needed)
    return (
        f"note: {at}; repeats raised to {needed}, the fewest that detect --threshold {threshold:g}"
    )


def matrix_command() -> list[str]:
    """The command line of the `matrix` running now, with absolute paths.

    The console script when that is what runs (found on PATH if started by bare name), else
    this interpreter with `-m matrix`. Paths are made absolute but symlinks are not resolved:
    a virtualenv's `bin/python` is a symlink, and its target runs outside the virtualenv.
    """
    script = sys.argv[0]
    if os.sep not in script:
        script = shutil.which(script) or script
    if Path(script).name == "matrix" and os.access(script, os.X_OK):
        return [str(Path(script).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "matrix"]


@dataclass(frozen=True)
class Flag:
    """One `matrix run` flag passed through: as written back out, and its parsed value."""

    tokens: list[str]
    value: Any


def _passed_through(run: Any, args: list[str]) -> dict[str, Flag]:
    """The `matrix run` flags in `args`, parsed by `matrix run` itself, by parameter name."""
    for arg in args:
        if _CONTROL.search(arg):
            raise ConfigError(f"{arg!r}: a control character cannot go into a schedule")
    try:
        ctx = run.make_context("matrix run", list(args))
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not click's usage error: a bug, let it show
            raise
        raise ConfigError(
            f"{exc.format_message()} (flags after the schedule's own go to "
            "`matrix run`; see matrix run --help)"
        ) from None
    return {
        p.name: Flag(_tokens(p, ctx.params[p.name]), ctx.params[p.name])
        for p in run.params
        if p.name and ctx.get_parameter_source(p.name).name == "COMMANDLINE"
    }


def _tokens(option: Any, value: Any) -> list[str]:
    """The flag (and value) that gives `option` the `value` it was parsed to."""
    if option.is_flag:
        return [option.opts[0] if value else option.secondary_opts[0]]
    return [option.opts[0], str(value)]


def _matrix_config(workdir: Path, given: dict[str, Flag]) -> MatrixConfig:
    """The nightly matrix as `matrix run` in `workdir` will load it (flags named as keys)."""
    file = given["config"].value if "config" in given else Path(CONFIG_FILE_NAME)
    file = file if file.is_absolute() else workdir / file
    if "config" in given and not file.is_file():
        raise ConfigError(f"--config: {file}: no such file")
    overrides = {
        name: flag.value for name, flag in given.items() if name in MatrixConfig.model_fields
    }
    if "repeats" in overrides:  # a string from the command line, as `matrix run` gets it
        overrides["repeats"] = repeats_flag(overrides["repeats"])
    return load_config(file if file.is_file() else None, overrides)


# ---- cron ---------------------------------------------------------------------------------------


def cron_line(s: Schedule) -> str:
    """The crontab line: `M H * * * cd DIR && mkdir -p RESULTS && MATRIX run … >> LOG 2>&1`.

    Cron hands the command to /bin/sh after turning every unescaped `%` into a newline, so
    `%` is escaped after shell quoting.
    """
    q = shlex.quote
    command = shlex.join([*s.matrix, "run", *s.run_args])
    log = s.results_dir / NIGHTLY_LOG
    line = (
        f"{s.nightly.cron} cd {q(str(s.workdir))} && mkdir -p {q(str(s.results_dir))} && "
        f"{command} >> {q(str(log))} 2>&1"
    )
    return line.replace("%", r"\%")


def write_cron(s: Schedule, out: Path) -> list[str]:
    path = out / f"{UNIT}.cron"
    path.write_text(
        f"# Written by `{s.generated_by}`\n"
        f"# Every night at {s.nightly.text}, this machine's local time.\n"
        f"{cron_line(s)}\n",
        encoding="utf-8",
    )
    return [
        cron_line(s),
        "",
        f"written to {path}; add it to your crontab with:",
        f"  (crontab -l 2>/dev/null; cat {shlex.quote(str(path))}) | crontab -",
        f"each night's output goes to {s.workdir / s.results_dir / NIGHTLY_LOG}",
    ]


# ---- systemd ------------------------------------------------------------------------------------


def systemd_word(value: str) -> str:
    """`value` as one word of a unit file: `%` and `$` doubled, quoted unless plain."""
    value = value.replace("%", "%%").replace("$", "$$")
    if _SYSTEMD_PLAIN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_JINJA = jinja2.Environment(
    loader=jinja2.PackageLoader("matrix.ops", "templates/schedule"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def systemd_units(s: Schedule) -> dict[str, str]:
    """`tf-load-matrix-nightly.service` and `.timer`: file name → text."""
    user = getpass.getuser()
    refuse_control("the user name ($LOGNAME or $USER)", user)
    values = {
        "generated_by": s.generated_by,
        "user": user,
        "workdir": str(s.workdir).replace("%", "%%"),
        "exec_start": " ".join(systemd_word(a) for a in [*s.matrix, "run", *s.run_args]),
        "time": s.nightly.text,
        "on_calendar": f"*-*-* {s.nightly.text}:00",
    }
    return {
        f"{UNIT}.{kind}": _JINJA.get_template(f"{UNIT}.{kind}.j2").render(values)
        for kind in ("service", "timer")
    }


def write_systemd(s: Schedule, out: Path) -> list[str]:
    paths = []
    for name, text in systemd_units(s).items():
        (out / name).write_text(text, encoding="utf-8")
        paths.append(shlex.quote(str(out / name)))
    return [
        f"written: {', '.join(paths)}",
        "install them with:",
        f"  sudo cp {' '.join(paths)} /etc/systemd/system/",
        f"  sudo systemctl daemon-reload && sudo systemctl enable --now {UNIT}.timer",
        f"next run: systemctl list-timers {UNIT}.timer; output: journalctl -u {UNIT}",
    ]


# ---- GitHub Actions -----------------------------------------------------------------------------

# The workflow template's own values are [[ name ]]: `${{ }}` is GitHub's expression syntax.
_WORKFLOW_JINJA = jinja2.Environment(
    loader=jinja2.PackageLoader("matrix.ops", "templates/schedule"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    autoescape=False,
    variable_start_string="[[",
    variable_end_string="]]",
)


def workflow_text(s: Schedule) -> str:
    """The workflow: plan → one `measure` job per environment → report and compare.

    Expressions reach the scripts only through `env:`, never pasted into them, so no value
    can turn into shell code. All jobs write the same run id (`matrix run --run-id RUN_ID`),
    so their records merge into one run. The values inserted are shell-quoted flags in block
    scalars (`run: |`), where YAML takes every character as it is.
    """
    measure = [
        'matrix run --backend docker --run-id "$RUN_ID" --only "$ENV_ID" --no-report',
        *map(shlex.quote, s.fanout_args),
    ]
    return _WORKFLOW_JINJA.get_template(WORKFLOW_TEMPLATE).render(
        generated_by=s.generated_by,
        time=s.nightly.text,
        cron=s.nightly.cron,
        plan_command=shlex.join(["matrix", "plan", "--json", *s.plan_args]),
        measure_command=" ".join(measure),
        threshold=f"{s.threshold:g}",
        keep_nights=KEEP_NIGHTS,
    )


def write_github(s: Schedule, out: Path) -> list[str]:
    path = out / WORKFLOW_FILE
    path.write_text(workflow_text(s), encoding="utf-8")
    return [
        f"written: {path}",
        "commit it to the repository's .github/workflows/; it runs at "
        f"{s.nightly.text} UTC, or by hand from the Actions tab (workflow_dispatch)",
    ]


WRITERS = {"cron": write_cron, "systemd": write_systemd, "github": write_github}
DEFAULT_OUT = {
    "cron": Path("build/schedule"),
    "systemd": Path("build/schedule"),
    "github": Path(".github/workflows"),
}


def write(s: Schedule, emit: str, out: Path | None) -> list[str]:
    """Write the files of `emit` into `out` (default per kind); the lines to show the user."""
    folder = output_folder("--out", out or s.workdir / DEFAULT_OUT[emit])
    return WRITERS[emit](s, folder)
