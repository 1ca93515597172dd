"""`matrix report`, `compare` and `history`: what the runs in results/ say.

No `from __future__ import annotations` here: typer reads the annotations at runtime.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from harness.catalog import FORMATS
from matrix.cli.common import (
    AlphaOption,
    ResultsDirOption,
    ThresholdOption,
    app,
    console_for_output,
    exit_codes,
    fail,
    print_warnings,
)
from matrix.errors import ConfigError, ExitCode, MatrixError
from matrix.report.publish import publish
from matrix.results.stats import ALPHA, THRESHOLD

REPORT_EXIT_CODES = exit_codes(
    {
        ExitCode.OK: "the report was written (unreadable record lines are warned about and "
        "skipped)",
        ExitCode.CONFIG_ERROR: "configuration error: a run not found or a bad flag",
    }
)

COMPARE_EXIT_CODES = exit_codes(
    {
        ExitCode.OK: "no cell got slower (beyond the threshold and significantly), no "
        "cross-load pair broke, and every cell could have shown a change of the threshold's "
        "size (or --allow-underpowered)",
        ExitCode.REGRESSION: "regression found: some cell is slower beyond the threshold, "
        "significantly, or a cross-load pair broke (it loaded in A; in B it fails, or the API "
        "that loaded it refuses it)",
        ExitCode.CONFIG_ERROR: "configuration error: a run not found, a bad flag, or no cell "
        "measured in both runs",
        ExitCode.UNDERPOWERED: "no regression, but some cell is underpowered: its trials are "
        "too few or too noisy to detect a change of the threshold's size (the summary says "
        "how many repeats would); --allow-underpowered exits 0 instead",
    }
)

MOST_SAME = 100  # `matrix compare` lists more unchanged cells than this only with --all


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
    from matrix.plan.inputs import check_folder
    from matrix.results.dataset import load_runs
    from matrix.results.runs import newest, resolve

    console = console_for_output()
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
        print_warnings(console, ds.problems)
        publish(ds, out, results_dir, console, baseline_format, baseline_env, export)
    except MatrixError as exc:
        raise fail(exc) from None


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
    """Compare every cell of two runs; exit 1 if one got slower or a cross-load pair broke.

    A cell is flagged only when its median load time changed by more than the threshold AND
    the change is significant (Welch's t-test on log load times; Benjamini-Hochberg at alpha
    over all the cells compared, so nothing is flagged when nothing changed). A cell that is
    not flagged is "same" only if its trials could have detected a change of the threshold's
    size (the "detectable" column, at 80 % power); else it is "underpowered" (exit 5).
    """
    from matrix.report.compare import compare_runs, comparison_table, summary_line
    from matrix.report.compat_grid import changes_table, pair_cells, pair_changes
    from matrix.results.dataset import load_runs
    from matrix.results.runs import resolve

    console = console_for_output()
    try:
        if threshold <= 0 or not 0 < alpha < 1:
            raise ConfigError(
                "--threshold must be > 0 and --alpha between 0 and 1 "
                f"(got {threshold:g}, {alpha:g})"
            )
        a, b = (load_runs([resolve(run, results_dir)]) for run in (run_a, run_b))
        print_warnings(console, [*a.problems, *b.problems])
        comparison = compare_runs(a, b, threshold=threshold, alpha=alpha, normalise=normalise)
        crossed = pair_changes(pair_cells(a), pair_cells(b))  # the cross-load's, if both have one
        if comparison.cells.empty and crossed.empty:
            raise ConfigError(
                f"nothing to compare: no cell was measured in both {run_a} and {run_b}"
            )
    except MatrixError as exc:
        raise fail(exc) from None
    if not comparison.cells.empty:
        console.print(comparison_table(comparison, run_a, run_b, None if show_all else MOST_SAME))
        console.print(escape(summary_line(comparison, threshold, alpha)))
    broke = crossed["step"].eq("broke")
    if not crossed.empty:
        shown = crossed if show_all else crossed[crossed["step"].ne("same")]
        title = f"Cross-load verdicts, {run_a} (A) → {run_b} (B)"
        console.print(changes_table(shown, title + ("" if show_all else ", changes only")))
        console.print(
            f"cross-load: {broke.sum()} of {len(crossed)} broke (loaded in A; in B it fails, "
            "or the API that loaded it refuses it)"
        )
    if len(comparison.slower) or broke.any():
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
    Cross-load cells follow, by verdict per run; exit 1 if one broke in the last run.
    """
    from matrix.report.compat_grid import changes_table, pair_cells, pair_history
    from matrix.report.history import history_table, latest_changes, select, series_frame
    from matrix.results.dataset import load_runs
    from matrix.results.runs import run_dirs

    dirs = run_dirs(results_dir)
    if not dirs:
        raise fail(ConfigError(f"no runs under {results_dir}/"))
    ds = load_runs(dirs)
    frame = select(series_frame(ds), env, model, fmt)
    if frame.empty:
        raise fail(ConfigError(f"no measured cell under {results_dir}/ matches the filters"))
    console = console_for_output()
    console.print(history_table(frame, latest_changes(frame), last))
    cells = pair_cells(ds)  # the cross-load's, in the runs that had one
    cells = select(cells, env, model, fmt) if not cells.empty else cells
    if not cells.empty:
        runs = sorted(cells["run_id"].unique())[-last:]
        pairs = pair_history(cells)
        console.print(changes_table(pairs, "Cross-load verdict per run, oldest first", runs))
        if pairs["step"].eq("broke").any():  # loaded in the run before, fails in the last
            raise typer.Exit(int(ExitCode.REGRESSION))
