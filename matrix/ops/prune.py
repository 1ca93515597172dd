"""`matrix prune --keep N`: delete every run older than the newest N, with its reports and volumes.

A nightly sweep adds a run folder, a report and a Docker volume of saved models every night, and
nothing else removes them. Run ids start with their UTC start time, so name order is age order;
only folders named like a run id are touched (`kept_and_pruned`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from matrix.errors import ConfigError, EnvironmentFailure
from matrix.execute.lock import run_lock
from matrix.report.text import size
from matrix.results.runs import run_dirs

RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")  # the shape of matrix.execute.matrix_run.new_run_id


@dataclass(frozen=True)
class Removal:
    """One thing to delete (a folder or a Docker volume), the bytes it holds, and how."""

    label: str
    size: int
    delete: Callable[[], object]


@dataclass
class PruneSelection:
    """The run ids kept and pruned, what goes with the pruned ones, and what could not be seen."""

    kept: list[str]
    pruned: list[str]
    removals: list[Removal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def prune(results_dir: Path, reports_dir: Path, keep: int, dry_run: bool, console: Console) -> None:
    """Remove (or with `dry_run` list) everything older than the newest `keep` runs: their folders
    in `results_dir`, their reports in `reports_dir` and their Docker volumes; what is removed
    is shown on `console`."""
    if keep < 1:
        raise ConfigError(f"--keep {keep}: keep at least 1 run (the newest), e.g. --keep 30")
    if not results_dir.is_dir():
        raise ConfigError(f"--results-dir {results_dir}: no such folder")
    if dry_run:
        _show(select_pruned(results_dir, reports_dir, keep), console, dry_run=True)
        return
    with run_lock(results_dir, command="prune", hint="wait for it, then prune"):
        selection = select_pruned(results_dir, reports_dir, keep)
        removed = [r for r in selection.removals if _remove(r, console)]
        _show(
            PruneSelection(selection.kept, selection.pruned, removed, selection.notes),
            console,
            dry_run=False,
        )


def select_pruned(results_dir: Path, reports_dir: Path, keep: int) -> PruneSelection:
    """What `prune` would remove; nothing is touched."""
    kept, pruned = kept_and_pruned(results_dir, keep)
    selection = PruneSelection(kept, pruned)
    folders = [results_dir / run for run in pruned] + report_dirs(reports_dir, pruned)
    selection.removals = [
        Removal(str(p), disk_usage(p), partial(shutil.rmtree, p)) for p in folders
    ]
    if pruned:
        try:
            selection.removals += artifact_volumes(pruned)
        except EnvironmentFailure:
            selection.notes.append(
                "Docker daemon not reachable: the runs' artifact volumes "
                "(named after their run ids) were not looked for"
            )
    return selection


def kept_and_pruned(results_dir: Path, keep: int) -> tuple[list[str], list[str]]:
    """(the newest `keep` runs with records, every run-id folder older than the oldest of them).

    Only folders named like a run id: one copied in from another machine under another name is
    left alone, its age unknown. The newest are counted among runs that hold records, so a run
    stopped before its first record never pushes a real one out. A symbolic link named like a
    run is neither: it is not a run folder of this results folder, and what it points to
    (`/proc`, another disk) is not prune's to measure or delete.
    """
    with_records = [
        d.name for d in run_dirs(results_dir) if RUN_ID.fullmatch(d.name) and not d.is_symlink()
    ]
    kept = with_records[-keep:]
    if len(with_records) <= keep:
        return kept, []
    named = sorted(
        d.name
        for d in results_dir.iterdir()
        if d.is_dir() and not d.is_symlink() and RUN_ID.fullmatch(d.name)
    )
    return kept, [run for run in named if run < kept[0]]


def report_dirs(reports_dir: Path, runs: list[str]) -> list[Path]:
    """The reports of `runs`: `<run-id>/`, and merged ones whose newest run is one of them (all
    their runs are then older than every kept run). Never the one `latest` points to."""
    if not reports_dir.is_dir():
        return []
    latest = (reports_dir / "latest").resolve()
    wanted = set(runs)
    return sorted(
        d
        for d in reports_dir.iterdir()
        if d.is_dir()
        and not d.is_symlink()
        and d.resolve() != latest
        and (d.name in wanted or _merged_newest(d.name) in wanted)
    )


def _merged_newest(name: str) -> str | None:
    """`merged-<newest run id>-<digest>` (report.publish._report_id) → the newest run id."""
    if not name.startswith("merged-"):
        return None
    return name[len("merged-") :].rpartition("-")[0]


def artifact_volumes(runs: list[str]) -> list[Removal]:
    """The Docker volumes holding the pruned runs' saved models, with their sizes."""
    from matrix.build.images import docker_client
    from matrix.execute.backends.docker import container_name

    client = docker_client()
    # A run's volume is named as its container is: `tflm-<run id>-<env id>`.
    prefixes = tuple(container_name(run, "") for run in runs)
    volumes = sorted(
        (v for v in client.volumes.list() if v.name.startswith(prefixes)), key=lambda v: v.name
    )
    if not volumes:
        return []
    sizes = {
        v["Name"]: (v.get("UsageData") or {}).get("Size", 0)  # -1: not computed
        for v in client.df().get("Volumes") or []
    }
    return [
        Removal(f"Docker volume {v.name}", max(sizes.get(v.name, 0), 0), v.remove) for v in volumes
    ]


def disk_usage(path: Path) -> int:
    """Bytes `path` takes on disk (as `du -s -B1`): blocks, each inode counted once. Links are
    not followed, and a file that vanishes while counted (a run still writing) counts 0."""
    paths = [str(path)]
    for folder, dirs, files in os.walk(path):
        paths += [os.path.join(folder, name) for name in (*dirs, *files)]
    inodes: dict[tuple[int, int], int] = {}
    for name in paths:
        with contextlib.suppress(OSError):
            st = os.lstat(name)
            inodes[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(inodes.values())


def _remove(removal: Removal, console: Console) -> bool:
    """Delete one thing; a failure (a volume still in use) is said, and the rest goes on."""
    try:
        removal.delete()
    except Exception as exc:  # docker.errors.APIError or OSError: report it, keep going
        console.print(
            f"[yellow]warning[/] could not remove {escape(removal.label)}: {escape(str(exc))}"
        )
        return False
    return True


def _show(selection: PruneSelection, console: Console, dry_run: bool) -> None:
    verb = "would remove" if dry_run else "removed"
    for removal in selection.removals:
        console.print(f"{verb} {escape(removal.label)} ({size(removal.size)})")
    for note in selection.notes:
        console.print(f"[yellow]note[/] {escape(note)}")
    freed = size(sum(r.size for r in selection.removals))
    kept = f"kept the newest {len(selection.kept)}" + (
        f" ({selection.kept[0]} … {selection.kept[-1]})" if selection.kept else ""
    )
    if dry_run:
        console.print(f"{len(selection.pruned)} run(s) to prune, {freed} would be freed; {kept}")
    else:
        console.print(f"{len(selection.pruned)} run(s) pruned, {freed} freed; {kept}")
