"""The HTML report of a dataset, written where browsers and nightly jobs find it.

`matrix report` and the end of `matrix run` both publish this way: one folder per report id
(the run id, or a digest of a merged set), and `<out>/latest` pointing to the newest.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from matrix.errors import ConfigError
from matrix.plan.inputs import check_run_id

if TYPE_CHECKING:
    from matrix.results.dataset import Dataset

REPORTS = Path("reports")  # where `matrix run` writes its report, as `matrix report` does


def publish(
    ds: Dataset,
    out: Path,
    results_dir: Path,
    console: Console,
    baseline_format: str = "h5",
    baseline_env: str | None = None,
    export_to: Path | None = None,
) -> Path:
    """The HTML report of `ds` as `<out>/<report id>/index.html`, `<out>/latest` pointing to it.

    The history section covers every run under `results_dir`, not only the ones reported: a
    nightly report should show where tonight's numbers sit in the trend.
    """
    from matrix.report.history import history_frame
    from matrix.report.html import write_report
    from matrix.report.order import natural_sorted  # pandas: not at `matrix` start-up
    from matrix.results.dataset import cell_problems, cell_stats, export

    runs = ds.run_ids
    if not runs:
        raise ConfigError("nothing to report: the runs hold no readable records")
    envs = natural_sorted(ds.environments["env_id"].dropna().unique())
    if baseline_env is not None and baseline_env not in envs:
        raise ConfigError(
            f"--baseline-env {baseline_env!r} is not an environment of these runs; "
            f"choose one of: {', '.join(envs)}"
        )
    stats = cell_stats(ds, baseline_format, baseline_env)
    if export_to is not None:
        for path in export(ds, stats, export_to):
            console.print(f"exported: {escape(str(path))}")
    history = history_frame(results_dir)
    title = (
        f"Load times, run {runs[0]}"
        if len(runs) == 1
        else (f"Load times, {len(runs)} runs merged ({runs[0]} … {runs[-1]})")
    )
    path = write_report(
        ds,
        stats,
        cell_problems(ds),
        out / _report_id(runs),
        title,
        history=history if history["run_id"].nunique() > 1 else None,
    )
    _point_latest(out, path.parent)
    console.print(f"report: {escape(str(path))}")
    return path


def _report_id(runs: list[str]) -> str:
    """The run id, or for merged runs the newest id plus a digest of the set (one per set)."""
    for run in runs:  # the readers let only folder names through; a Dataset made otherwise too
        check_run_id("a run id of the records", run)
    if len(runs) == 1:
        return runs[0]
    digest = hashlib.sha1("\n".join(runs).encode()).hexdigest()[:6]
    return f"merged-{runs[-1]}-{digest}"


def _point_latest(out: Path, report_dir: Path) -> None:
    """Replace `<out>/latest` atomically, so a browser tab on it never sees it missing."""
    temporary = out / f".latest-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(report_dir.name, target_is_directory=True)
    os.replace(temporary, out / "latest")
