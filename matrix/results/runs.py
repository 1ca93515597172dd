"""Finding runs on disk: `results/<run-id>/` folders, named by a run id or given as a path.

Run ids start with their UTC start time (`20261127-183000-ab12`), so name order is time order
and "the newest run" needs no clock. A run from another machine is just a folder copied here
or anywhere: any path to a folder of records files works.
"""

from __future__ import annotations

from pathlib import Path

from matrix.errors import ConfigError


def run_dirs(results_dir: Path) -> list[Path]:
    """Every run under `results_dir` (a folder holding records files), oldest first."""
    if not results_dir.is_dir():
        return []
    return sorted(d for d in results_dir.iterdir() if d.is_dir() and any(d.glob("*.jsonl")))


def resolve(run: str, results_dir: Path) -> Path:
    """A run id under `results_dir`, or a path to a run folder; ConfigError if neither."""
    for candidate in (Path(run), results_dir / run):
        if candidate.is_dir() and any(candidate.glob("*.jsonl")):
            return candidate
    raise ConfigError(
        f"no run {run!r}: neither a folder of records files nor a run under {results_dir}/"
    )


def newest(results_dir: Path) -> Path:
    """The latest run under `results_dir`; ConfigError if there is none."""
    found = run_dirs(results_dir)
    if not found:
        raise ConfigError(f"no runs under {results_dir}/: run `matrix run` first, or name a run")
    return found[-1]
