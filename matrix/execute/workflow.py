"""What `matrix run`, `render` and `build` do, step by step: config → plan → images → runs.

The CLI only parses flags; each function here is one user-visible workflow and returns the exit
code, so the steps can be read (and tested) in the order data flows through them.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from matrix.errors import ConfigError, EnvironmentFailure, ExitCode, MatrixError
from matrix.execute.backends import Backend, get_backend
from matrix.execute.harness_run import RunOutcome, execute, log_tail
from matrix.execute.provisioners import DockerProvisioner, Provisioner, VenvProvisioner
from matrix.execute.run_plan import RunPlan, new_run_id
from matrix.execute.stopping import interrupted_code, remove_dead_runs_containers, set_aside
from matrix.plan.config import BUILTIN_LABEL, MatrixConfig, find_config_file, load_config
from matrix.plan.environments import expand
from matrix.plan.inputs import check_folder, check_run_id
from matrix.plan.pythons import find_pythons
from matrix.results.reader import error_count, is_complete, read_jsonl, read_run

if TYPE_CHECKING:
    from matrix.results.dataset import Dataset


def load(config_file: Path | None, overrides: dict[str, Any]) -> tuple[MatrixConfig, str]:
    """The validated matrix and where it came from, for the run header."""
    source = find_config_file(config_file)
    return load_config(source, overrides), str(source or BUILTIN_LABEL)


def choose_backend(config: MatrixConfig, console: Console) -> str:
    """`auto` means Docker when a daemon answers, else a venv per environment; say which, why."""
    if config.backend != "auto":
        return config.backend
    from matrix.build.images import docker_client

    try:
        docker_client()
    except EnvironmentFailure as exc:
        if config.isolation == "container":
            raise EnvironmentFailure(
                "--isolation container needs a Docker daemon and none "
                "answers: start it, or use --isolation process"
            ) from None
        console.print(f"backend auto: venv ({escape(str(exc).split(':')[0])})")
        return "venv"
    console.print("backend auto: docker (a Docker daemon answers)")
    return "docker"


# ---- local --------------------------------------------------------------------------------------


def plan_run(config: MatrixConfig, run_id: str | None, resume: str | None) -> RunPlan:
    """The run's id, chosen before anything runs (the run lock names it): `--resume`'s, which
    must exist; `--run-id`, a folder name; or a new one."""
    if run_id and resume:
        raise ConfigError("--run-id and --resume: give one (--resume continues an existing run)")
    for flag, value in (("--run-id", run_id), ("--resume", resume)):
        if value is not None:
            check_run_id(flag, value)  # a folder name: never `..`, a path or a flag
    check_folder("results_dir", config.results_dir)
    plan = RunPlan(config=config, run_id=resume or run_id or new_run_id())
    if resume and not plan.run_dir.is_dir():
        raise ConfigError(f"--resume: no run {resume!r} under {config.results_dir}/")
    return plan


def local_backend() -> Backend:
    """This interpreter as a backend, checked: EnvironmentFailure if it cannot run the harness."""
    backend = get_backend("local")
    backend.check()
    return backend


def run_local(
    plan: RunPlan, backend: Backend, source: str, console: Console, html: bool = True
) -> int:
    """One environment: this interpreter and its own TensorFlow; `html` writes the report.

    With `--resume` (or a `--run-id` used before) the environment is run again unless its
    records are complete; those of the interrupted attempt are set aside, not appended to.
    """
    env_id = backend.env_id()
    console.print(_header(plan, f"local ({env_id})", source))
    records = plan.run_dir / f"{env_id}.jsonl"
    if records.exists() and is_complete(read_jsonl(records).records):
        console.print(f"{env_id}: already complete in this run, not run again")
        return _report(plan, console, html)
    set_aside(records)
    outcome = execute(plan, backend, env_id, console, meanwhile=_import_summary)
    code = _report(plan, console, html)
    if outcome.interrupted:
        console.print("[yellow]interrupted[/]: the records above are the ones completed")
        return interrupted_code()
    if outcome.returncode != 0:
        raise harness_failure(outcome)
    return code


def harness_failure(outcome: RunOutcome) -> MatrixError:
    """Show the end of the harness log on stderr, and the error matching its exit code."""
    tail = log_tail(outcome.log_file)
    errors = Console(stderr=True)
    for line in tail:
        errors.print(f"  | {escape(line)}", highlight=False)
    if outcome.returncode == 2:  # the harness rejected an argument this orchestrator let through
        return ConfigError(f"the harness rejected its arguments: {tail[-1] if tail else '?'}")
    causes = [
        r.get("reason")
        for r in read_jsonl(outcome.records_file).records
        if r.get("kind") == "failure" and r.get("scope") == "environment"
    ]
    # The cause is the last line of the stderr tail the harness kept (`a | b | ImportError: …`).
    cause = f": {str(causes[-1]).split(' | ')[-1].strip()}" if causes else ""
    return EnvironmentFailure(
        f"the harness exited with code {outcome.returncode}{cause}; full log: {outcome.log_file}"
    )


# ---- docker and venv: a sweep over environments -----------------------------------------------


def provisioner_for(backend: str, build_root: Path) -> Provisioner:
    """How `backend` makes environments: images on the Docker engine, or venvs on this host."""
    check_folder("--build-dir", build_root)
    if backend == "docker":
        from matrix.build.images import docker_client

        return DockerProvisioner(docker_client(), build_root)
    return VenvProvisioner(build_root, find_pythons())


def run_sweep(
    plan: RunPlan, source: str, console: Console, provisioner: Provisioner, html: bool = True
) -> int:
    """Every planned environment made (or found) and measured in turn, one after another.

    Environments the run's manifest lists as finished are skipped: that is what `--resume`
    and jobs sharing one `--run-id` on one host rely on."""
    from matrix.execute.sweep import Sweep, summary_line

    environments, skipped = provisioner.plan(plan.config)
    for cell in skipped:
        console.print(f"[yellow]skipped[/] {escape(cell.id)}: {escape(cell.reason)}")
    if not environments:
        raise ConfigError("no environment left to run: every cell was skipped (reasons above)")
    where = f"{provisioner.name} ({len(environments)} environments)"
    console.print(_header(plan, where, source))
    try:
        outcomes = Sweep(
            plan, provisioner, environments, skipped, console, meanwhile=_import_summary
        ).run()
    except KeyboardInterrupt:
        _report(plan, console)
        console.print(f"resume with: matrix run --resume {plan.run_id}")
        return interrupted_code()
    code = _report(plan, console, html)
    console.print(summary_line(outcomes))
    failed = any(o.status in ("build-failed", "run-failed") for o in outcomes)
    return ExitCode.CELLS_FAILED if failed else code


def remove_dead_runs(console: Console) -> None:
    """Remove the containers of runs killed outright (their `matrix` could not): still running,
    they would time their trials beside this run's, on the same CPUs."""
    from matrix.build.images import docker_client

    runs = remove_dead_runs_containers(docker_client())
    if runs:
        console.print(f"removed the containers left by ended run(s) {escape(', '.join(runs))}")


def render_all(config: MatrixConfig, build_root: Path, console: Console) -> int:
    """Write each environment's Dockerfile and build context, to read exactly what will run."""
    from matrix.build.dockerfile import write_build_context

    environments, skipped = expand(config)
    for cell in skipped:
        console.print(f"[yellow]skipped[/] {escape(cell.id)}: {escape(cell.reason)}")
    check_folder("--build-dir", build_root)
    for env in environments:
        context = write_build_context(env, build_root)
        console.print(f"{escape(env.id)}: {escape(str(context / 'Dockerfile'))}")
    return ExitCode.OK


def build_all(config: MatrixConfig, build_root: Path, console: Console) -> int:
    """Build (or find, by content hash) every environment's image; failures do not stop it."""
    from matrix.build.images import docker_client, ensure_image

    check_folder("--build-dir", build_root)
    client = docker_client()
    environments, skipped = DockerProvisioner(client, build_root).plan(config)
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
        table.add_row(
            env.id,
            result.tag,
            "yes" if result.built else "no (cached)",
            f"{result.seconds:.1f}",
            escape(status),
        )
    console.print(table)
    built = sum(r.built for r in results)
    console.print(f"{built} image(s) built, {len(results) - built} found by content hash")
    return ExitCode.CELLS_FAILED if any(r.status != "ok" for r in results) else ExitCode.OK


# ---- shared -------------------------------------------------------------------------------------


def _import_summary() -> None:
    """Import what the end-of-run summary needs (pandas: ~0.5 s of CPU).

    Passed to `execute` as its `meanwhile`: done while the engine starts the first harness,
    which waits at its start gate until this is over. So the import costs no wall time at the
    end, and never runs beside anything the harness measures, its save times included.
    """
    importlib.import_module("matrix.report.summary")


def _header(plan: RunPlan, where: str, source: str) -> str:
    c = plan.config
    return escape(
        f"run {plan.run_id} on {where}, matrix from {source}: "
        f"{','.join(c.model_names)} × {len(c.formats)} formats × cache {','.join(c.cache)}, "
        f"{c.repeats} repeats + {c.warmup} warm-up, process {c.process}"
    )


def _report(plan: RunPlan, console: Console, html: bool = False) -> int:
    """Summary table of everything the run wrote (and with `html` the HTML report); exit code 1
    when a cell has status error."""
    from matrix.report.summary import render, summarize
    from matrix.results.dataset import load_runs

    found = read_run(plan.run_dir)  # orjson, cheap: the raw records, for the checks below
    for problem in found.problems:
        console.print(f"[yellow]warning[/] {escape(problem)}")
    measured = any(r.get("kind") in ("trial", "artifact", "failure") for r in found.records)
    if measured:
        ds = load_runs([plan.run_dir])  # tabled once, for the terminal and the HTML report
        console.print(render(summarize(ds)))
    console.print(f"results: {escape(str(plan.run_dir))}/")
    if measured and html:
        report(ds, REPORTS, plan.config.results_dir, console)
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
    return ExitCode.CELLS_FAILED if error_count(found.records) else ExitCode.OK


# ---- report -------------------------------------------------------------------------------------

REPORTS = Path("reports")  # where `matrix run` writes its report, as `matrix report` does


def report(
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
    from matrix.results.dataset import cell_problems, cell_stats, export

    runs = ds.run_ids
    if not runs:
        raise ConfigError("nothing to report: the runs hold no readable records")
    envs = sorted(ds.environments["env_id"].dropna().unique())
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
