"""What `matrix run`, `render` and `build` do, step by step: config → plan → images → runs.

The CLI only parses flags; each function here is one user-visible workflow and returns the exit
code, so the steps can be read (and tested) in the order data flows through them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from matrix.backends import get_backend
from matrix.config import BUILTIN_LABEL, MatrixConfig, find_config_file, load_config
from matrix.environments import Environment, Skipped, expand
from matrix.errors import ConfigError, EnvironmentFailure, ExitCode, MatrixError
from matrix.plan import RunPlan, new_run_id
from matrix.records import error_count, is_complete, read_run
from matrix.runner import RunOutcome, execute, log_tail

if TYPE_CHECKING:
    from matrix.dataset import Dataset

NO_GPU_RUNTIME = ("no NVIDIA runtime on this Docker host (`docker info` lists {runtimes}); "
                  "install the NVIDIA Container Toolkit to run GPU cells")


def load(config_file: Path | None, overrides: dict[str, Any]) -> tuple[MatrixConfig, str]:
    """The validated matrix and where it came from, for the run header."""
    source = find_config_file(config_file)
    return load_config(source, overrides), str(source or BUILTIN_LABEL)


def choose_backend(config: MatrixConfig, console: Console) -> str:
    """`auto` means Docker when a daemon answers, else this interpreter; say which and why."""
    if config.backend != "auto":
        return config.backend
    from matrix.images import docker_client

    try:
        docker_client()
    except EnvironmentFailure as exc:
        console.print(f"backend auto: local ({escape(str(exc).split(':')[0])})")
        return "local"
    console.print("backend auto: docker (a Docker daemon answers)")
    return "docker"


# ---- local --------------------------------------------------------------------------------------

def run_local(config: MatrixConfig, source: str, console: Console, html: bool = True) -> int:
    """One environment: this interpreter and its own TensorFlow; `html` writes the report."""
    backend = get_backend("local")
    backend.check()
    env_id = backend.env_id()
    plan = RunPlan(config=config, run_id=new_run_id())
    console.print(_header(plan, f"local ({env_id})", source))
    outcome = execute(plan, backend, env_id, console)
    code = _report(plan, console, html)
    if outcome.interrupted:
        console.print("[yellow]interrupted[/]: the records above are the ones completed")
        return ExitCode.INTERRUPTED
    if outcome.returncode != 0:
        raise _harness_failure(outcome, console)
    return code


def _harness_failure(outcome: RunOutcome, console: Console) -> MatrixError:
    """Show the end of the harness log, and the error matching the harness's exit code."""
    tail = log_tail(outcome.log_file)
    for line in tail:
        console.print(f"  | {escape(line)}", highlight=False, stderr=True)
    if outcome.returncode == 2:  # the harness rejected an argument this orchestrator let through
        return ConfigError(f"the harness rejected its arguments: {tail[-1] if tail else '?'}")
    return EnvironmentFailure(
        f"the harness exited with code {outcome.returncode}; full log: {outcome.log_file}"
    )


# ---- docker -------------------------------------------------------------------------------------

def plan_docker(config: MatrixConfig, client: Any) -> tuple[list[Environment], list[Skipped]]:
    """The environments to build and run on this engine; GPU cells need its NVIDIA runtime."""
    environments, skipped = expand(config)
    if any(env.device == "gpu" for env in environments):
        runtimes = sorted(client.info().get("Runtimes", {}))
        if "nvidia" not in runtimes:
            reason = NO_GPU_RUNTIME.format(runtimes=", ".join(runtimes) or "none")
            skipped += [Skipped(env.id, reason) for env in environments if env.device == "gpu"]
            environments = [env for env in environments if env.device != "gpu"]
    return environments, skipped


def run_docker(config: MatrixConfig, source: str, console: Console, build_root: Path,
               allow_cache_drop: bool, resume: str | None, html: bool = True) -> int:
    """Every planned environment in its own image and fresh container, one after another."""
    from matrix.images import docker_client
    from matrix.sweep import Sweep, summary_line

    client = docker_client()
    environments, skipped = plan_docker(config, client)
    for cell in skipped:
        console.print(f"[yellow]skipped[/] {escape(cell.id)}: {escape(cell.reason)}")
    if not environments:
        raise ConfigError("no environment left to run: every cell was skipped (reasons above)")
    plan = RunPlan(config=config, run_id=resume or new_run_id())
    if resume and not plan.run_dir.is_dir():
        raise ConfigError(f"--resume: no run {resume!r} under {config.results_dir}/")
    console.print(_header(plan, f"docker ({len(environments)} environments)", source))
    try:
        outcomes = Sweep(plan, client, environments, skipped, build_root, allow_cache_drop,
                         console).run()
    except KeyboardInterrupt:
        _report(plan, console)
        console.print(f"resume with: matrix run --resume {plan.run_id}")
        return ExitCode.INTERRUPTED
    code = _report(plan, console, html)
    console.print(summary_line(outcomes))
    failed = any(o.status in ("build-failed", "run-failed") for o in outcomes)
    return ExitCode.CELLS_FAILED if failed else code


def render_all(config: MatrixConfig, build_root: Path, console: Console) -> int:
    """Write each environment's Dockerfile and build context, to read exactly what will run."""
    from matrix.render import write_build_context

    environments, skipped = expand(config)
    for cell in skipped:
        console.print(f"[yellow]skipped[/] {escape(cell.id)}: {escape(cell.reason)}")
    for env in environments:
        context = write_build_context(env, build_root)
        console.print(f"{escape(env.id)}: {escape(str(context / 'Dockerfile'))}")
    return ExitCode.OK


def build_all(config: MatrixConfig, build_root: Path, console: Console) -> int:
    """Build (or find, by content hash) every environment's image; failures do not stop it."""
    from matrix.images import docker_client, ensure_image

    client = docker_client()
    environments, skipped = plan_docker(config, client)
    for cell in skipped:
        console.print(f"[yellow]skipped[/] {escape(cell.id)}: {escape(cell.reason)}")
    table = Table("environment", "image", "built", "seconds", "status")
    logs = build_root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = []
    for env in environments:
        console.print(f"[bold]{escape(env.id)}[/]: image")
        result = ensure_image(client, env, build_root, logs / f"{env.id}.log")
        results.append(result)
        status = "ok" if result.status == "ok" else f"error: {result.reason}"
        table.add_row(env.id, result.tag, "yes" if result.built else "no (cached)",
                      f"{result.seconds:.1f}", escape(status))
    console.print(table)
    built = sum(r.built for r in results)
    console.print(f"{built} image(s) built, {len(results) - built} found by content hash")
    return ExitCode.CELLS_FAILED if any(r.status != "ok" for r in results) else ExitCode.OK


# ---- shared -------------------------------------------------------------------------------------

def _header(plan: RunPlan, where: str, source: str) -> str:
    c = plan.config
    return escape(
        f"run {plan.run_id} on {where}, matrix from {source}: "
        f"{','.join(c.models)} × {len(c.formats)} formats × cache {','.join(c.cache)}, "
        f"{c.repeats} repeats + {c.warmup} warm-up, process {c.process}"
    )


def _report(plan: RunPlan, console: Console, html: bool = False) -> int:
    """Summary table of everything the run wrote (and with `html` the HTML report); exit code 1
    when a cell has status error."""
    from matrix.summary import render, summarize

    found = read_run(plan.run_dir)
    for problem in found.problems:
        console.print(f"[yellow]warning[/] {escape(problem)}")
    measured = any(r.get("kind") in ("trial", "artifact", "failure") for r in found.records)
    if measured:
        console.print(render(summarize(found.records)))
    console.print(f"results: {escape(str(plan.run_dir))}/")
    if measured and html:
        from matrix.dataset import load_runs

        report(load_runs([plan.run_dir]), REPORTS, plan.config.results_dir, console)
    by_env: dict[str, list] = {}
    for record in found.records:
        by_env.setdefault(str(record.get("env_id")), []).append(record)
    cut = [env for env, records in by_env.items() if not is_complete(records)
           and not any(r.get("kind") == "failure" for r in records)]
    if cut:
        names = escape(", ".join(cut))
        console.print(f"[yellow]warning[/] ended without its 'done' record: {names}")
    return ExitCode.CELLS_FAILED if error_count(found.records) else ExitCode.OK


# ---- report -------------------------------------------------------------------------------------

REPORTS = Path("reports")  # where `matrix run` writes its report, as `matrix report` does


def report(ds: Dataset, out: Path, results_dir: Path, console: Console,
           baseline_format: str = "h5", baseline_env: str | None = None,
           export_to: Path | None = None) -> Path:
    """The HTML report of `ds` as `<out>/<report id>/index.html`, `<out>/latest` pointing to it.

    The history section covers every run under `results_dir`, not only the ones reported: a
    nightly report should show where tonight's numbers sit in the trend.
    """
    from matrix.dataset import cell_problems, cell_stats, export
    from matrix.history import history_frame
    from matrix.report import write_report

    runs = ds.run_ids
    if not runs:
        raise ConfigError("nothing to report: the runs hold no readable records")
    envs = sorted(ds.environments["env_id"].dropna().unique())
    if baseline_env is not None and baseline_env not in envs:
        raise ConfigError(f"--baseline-env {baseline_env!r} is not an environment of these runs; "
                          f"choose one of: {', '.join(envs)}")
    stats = cell_stats(ds, baseline_format, baseline_env)
    if export_to is not None:
        for path in export(ds, stats, export_to):
            console.print(f"exported: {escape(str(path))}")
    history = history_frame(results_dir)
    title = f"Load times, run {runs[0]}" if len(runs) == 1 else (
        f"Load times, {len(runs)} runs merged ({runs[0]} … {runs[-1]})")
    path = write_report(ds, stats, cell_problems(ds), out / _report_id(runs), title,
                        history=history if history["run_id"].nunique() > 1 else None)
    _point_latest(out, path.parent)
    console.print(f"report: {escape(str(path))}")
    return path


def _report_id(runs: list[str]) -> str:
    """The run id, or for merged runs the newest id plus a digest of the set (one per set)."""
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
