"""`matrix schedule`: a crontab line that runs, systemd units systemd accepts, and a GitHub
workflow whose own scripts are run here on real records (the `uses:` steps, GitHub's own
actions, are played by copying folders where those actions put them)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from croniter import croniter
from typer.testing import CliRunner

from matrix.cli import app
from matrix.ops.schedule import MAX_REPEATS, SPREAD_DEFAULT, gate_cells, observed_spread
from matrix.plan.config import CONFIG_FILE_NAME, load_config
from matrix.results.stats import ALPHA, THRESHOLD, detectable_at, pair_alpha, repeats_needed
from tests.integration.harness_helpers import ROOT

BIN = Path(sys.executable).parent  # the virtualenv's bin/: `matrix` and `python`
CONSOLE_SCRIPT = BIN / "matrix"
FIXTURE_RUNS = ROOT / "tests" / "fixtures" / "runs"
DOCKER_RUN = "20261127-195717-722a"  # two environments, from a real Docker sweep
LOCAL_RUN = "20261127-201543-761b"  # one environment, the local backend
DOCKER_ENVS = ["tf2.21-py3.11-cpu", "tf2.21-py3.11-cpu-tfkeras"]
EARLIER = "20261126-020000-0a0a"  # the run id an earlier night is copied under


def _schedule(cwd: Path, *args: str, command: tuple[str, ...] = (str(CONSOLE_SCRIPT),)):
    """`matrix schedule ARGS` as a user runs it: the real console script, in `cwd`."""
    return subprocess.run(
        [*command, "schedule", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["25:00", "2:3x", "12:60", "0230", ""])
def test_a_bad_time_is_one_line_and_exit_2(in_tmp: Path, when: str) -> None:
    result = CliRunner().invoke(app, ["schedule", "--nightly", when, "--emit", "cron"])
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: --nightly {when}: give a time of day as HH:MM on a 24-hour clock, "
        "e.g. --nightly 02:30\n",
    )
    assert list(in_tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--emit", "k8s"], "error: --emit k8s: choose from cron, systemd, github"),
        (
            ["--emit", "cron", "--resume", "x"],
            "error: --resume: not for a schedule (a nightly sweep "
            "starts a new run every night); remove it",
        ),
        (
            ["--emit", "systemd", "--run-id", "x"],
            "error: --run-id: not for a schedule (a nightly "
            "sweep starts a new run every night); remove it",
        ),
        (
            ["--emit", "github", "--backend", "local"],
            "error: --backend: not for a schedule (the "
            "workflow measures each environment in its own Docker job); remove it",
        ),
        (["--emit", "cron", "--repeats", "0"], "error: --repeats: must be >= 1 (got 0)"),
        (["--emit", "cron", "--config", "nope.yaml"], "error: --config: nope.yaml: no such file"),
        (["--emit", "cron", "--workdir", "nowhere"], "error: --workdir nowhere: no such folder"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(in_tmp: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["schedule", "--nightly", "02:30", *args])
    assert (result.exit_code, result.stderr) == (2, message + "\n")
    assert list(in_tmp.iterdir()) == []


def test_an_unknown_run_flag_is_named(in_tmp: Path) -> None:
    result = CliRunner().invoke(
        app, ["schedule", "--nightly", "02:30", "--emit", "cron", "--frobnicate", "1"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: No such option: --frobnicate")
    assert result.stderr.count("\n") == 1


def test_a_bad_matrix_file_in_the_project_fails_now_not_at_night(in_tmp: Path) -> None:
    (in_tmp / "matrix.yaml").write_text("warmup: -1\n")
    result = CliRunner().invoke(app, ["schedule", "--nightly", "02:30", "--emit", "cron"])
    assert (result.exit_code, result.stderr) == (
        2,
        "error: matrix.yaml: warmup: must be >= 0 (got -1)\n",
    )


# ---- cron ---------------------------------------------------------------------------------------


def test_the_cron_line_is_valid_and_runs_the_sweep_from_the_project(tmp_path: Path) -> None:
    project = tmp_path / "my project"  # a space: the line must quote the folder
    project.mkdir()
    done = _schedule(
        tmp_path,
        "--nightly",
        "2:30",
        "--emit",
        "cron",
        "--workdir",
        str(project),
        "--threshold",
        "0.5",
        "--models",
        "dense-10k",
        "--skip",
        "tf2.2-%-gpu",
        "--results-dir",
        "my runs",
    )
    assert done.returncode == 0, done.stderr
    line = done.stdout.splitlines()[0]
    written = (project / "build" / "schedule" / "tf-load-matrix-nightly.cron").read_text()
    assert written.splitlines()[-1] == line
    assert "(crontab -l 2>/dev/null; cat " in done.stdout

    fields = line.split(" ", 5)
    assert fields[:5] == ["30", "2", "*", "*", "*"] and croniter.is_valid(" ".join(fields[:5]))
    after = croniter(" ".join(fields[:5]), datetime(2026, 11, 27, 12, 0)).get_next(datetime)
    assert after == datetime(2026, 11, 28, 2, 30)
    assert not re.search(r"(?<!\\)%", fields[5])  # cron would cut the command at a bare %

    # Run the command as cron does (sh, from another folder, a bare PATH); a bad matrix file
    # written after scheduling makes the sweep stop at once, and its error shows where it ran.
    (project / "matrix.yaml").write_text("warmup: -1\n")
    command = fields[5].replace(r"\%", "%")
    ran = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd="/",
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=120,
    )
    assert (ran.returncode, ran.stdout, ran.stderr) == (2, "", "")
    log = (project / "my runs" / "nightly.log").read_text()
    assert log == "error: matrix.yaml: warmup: must be >= 0 (got -1)\n"


# ---- systemd ------------------------------------------------------------------------------------


def _unit(text: str) -> dict[str, str]:
    """`Key=value` lines of a unit file (each key is set once in ours)."""
    return dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )


@pytest.mark.parametrize(
    "command",
    [(str(CONSOLE_SCRIPT),), (sys.executable, "-m", "matrix")],
    ids=["console-script", "python-m"],
)
def test_systemd_units_pass_systemd_analyze_verify(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    out = tmp_path / "units"
    done = _schedule(
        tmp_path,
        "--nightly",
        "23:05",
        "--emit",
        "systemd",
        "--out",
        str(out),
        "--threshold",
        "0.5",
        "--models",
        "dense-10k",
        "--only",
        "tf2.21-*",
        "--skip",
        '50%$HOME"x',
        command=command,
    )
    assert done.returncode == 0, done.stderr
    service, timer = (out / "tf-load-matrix-nightly.service", out / "tf-load-matrix-nightly.timer")
    if not shutil.which("systemd-analyze"):
        pytest.fail(
            "this test needs systemd-analyze: `make systemd-analyze-ready` installs it",
            pytrace=False,
        )
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(service), str(timer)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr == "", verify.stderr  # not even a warning

    unit = _unit(service.read_text())
    assert unit["Type"] == "oneshot" and unit["WorkingDirectory"] == str(tmp_path)
    assert shlex.split(unit["ExecStart"])[: len(command)] == list(command)
    assert '"50%%$$HOME\\"x"' in unit["ExecStart"]  # % and $ doubled, as systemd wants them
    assert _unit(timer.read_text()) | {"Description": ""} == {
        "Description": "",
        "OnCalendar": "*-*-* 23:05:00",
        "Persistent": "true",
        "WantedBy": "timers.target",
    }
    calendar = subprocess.run(
        ["systemd-analyze", "calendar", "*-*-* 23:05:00"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Normalized form: *-*-* 23:05:00" in calendar.stdout
    assert f"sudo cp {service} {timer} /etc/systemd/system/" in done.stdout
    assert "sudo systemctl enable --now tf-load-matrix-nightly.timer" in done.stdout


# ---- GitHub Actions -----------------------------------------------------------------------------

AXES = ["--tf", "2.15,2.21", "--cpu", "--skip", "*-tfkeras"]


@pytest.fixture(scope="module")
def workflow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    repo = tmp_path_factory.mktemp("repo")
    done = _schedule(
        repo,
        "--nightly",
        "04:15",
        "--emit",
        "github",
        "--threshold",
        "0.5",
        *AXES,
        "--models",
        "dense-10k",
        "--repeats",
        "2",
    )
    assert done.returncode == 0, done.stderr
    path = repo / ".github" / "workflows" / "nightly.yml"
    return path, yaml.safe_load(path.read_text())


def test_the_workflow_is_valid_for_github(workflow: tuple[Path, dict[str, Any]]) -> None:
    """Checked against the GitHub workflow schema check-jsonschema ships (no network)."""
    path, flow = workflow
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert flow["on"] == {"schedule": [{"cron": "15 4 * * *"}], "workflow_dispatch": {}}
    jobs = flow["jobs"]
    assert jobs["plan"]["outputs"]["envs"] == "${{ steps.plan.outputs.envs }}"
    measure = jobs["measure"]
    assert (measure["needs"], measure["strategy"]) == (
        "plan",
        {"fail-fast": False, "matrix": {"env": "${{ fromJSON(needs.plan.outputs.envs) }}"}},
    )
    assert jobs["report"]["needs"] == ["plan", "measure"]
    assert jobs["report"]["if"].startswith("always()")


def _scripts(flow: dict[str, Any]) -> list[str]:
    return [step["run"] for job in flow["jobs"].values() for step in job["steps"] if "run" in step]


def _matrix_calls(script: str) -> list[tuple[str, list[str]]]:
    """Each `matrix COMMAND` in a shell script, with the --flags given to it."""
    calls = []
    for line in script.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        for i, token in enumerate(tokens[:-1]):
            if token == "matrix":
                rest = []
                for word in tokens[i + 2 :]:
                    if word in ("|", "||", "&&", ";", ">", ">>"):
                        break
                    rest.append(word)
                calls.append((tokens[i + 1], [w for w in rest if w.startswith("--")]))
    return calls


def test_every_matrix_command_and_flag_in_the_workflow_exists(
    workflow: tuple[Path, dict[str, Any]],
) -> None:
    commands = typer.main.get_command(app).commands
    calls = [call for script in _scripts(workflow[1]) for call in _matrix_calls(script)]
    assert {name for name, _ in calls} == {"plan", "run", "report", "compare", "prune"}
    for name, flags in calls:
        known = {opt for p in commands[name].params for opt in (*p.opts, *p.secondary_opts)}
        assert set(flags) <= known, (name, set(flags) - known)


def test_no_expression_is_pasted_into_a_script(workflow: tuple[Path, dict[str, Any]]) -> None:
    """`${{ }}` reaches scripts through `env:` only, so no value can become shell code."""
    assert all("${{" not in script for script in _scripts(workflow[1]))


def _bash(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """A `run:` step as GitHub runs it (`bash --noprofile --norc -eo pipefail`), `matrix` and
    `python` being this virtualenv's, as `pip install .` leaves them on the runner."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "COLUMNS": "200", **env},
    )


def _step(job: dict[str, Any], name: str) -> str:
    return next(s["run"] for s in job["steps"] if s.get("name") == name or s.get("id") == name)


def test_the_plan_job_fans_out_over_what_matrix_plan_selects(
    workflow: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    jobs = workflow[1]["jobs"]
    outputs = tmp_path / "github-output"
    done = _bash(_step(jobs["plan"], "plan"), tmp_path, GITHUB_OUTPUT=str(outputs))
    assert done.returncode == 0, done.stdout + done.stderr
    got = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    planned = subprocess.run(
        [str(CONSOLE_SCRIPT), "plan", "--json", *AXES],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ids = [env["id"] for env in json.loads(planned)["environments"]]
    assert json.loads(got["envs"]) == ids and len(ids) == 2, (got, ids)
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", got["run_id"])
    # Each job measures its one environment of that plan, with the same axes and run flags.
    measure = _step(jobs["measure"], "Measure (every job writes run RUN_ID)")
    assert '--run-id "$RUN_ID" --only "$ENV_ID"' in measure
    assert "--tf 2.15,2.21 --cpu" in measure and "--skip" not in measure
    # The gate judges dense-10k x every format x both cache modes x 2 environments together.
    cells = gate_cells(
        load_config(
            overrides={
                "models": ["dense-10k"],
                "tf": ["2.15", "2.21"],
                "device": ["cpu"],
                "skip": ["*-tfkeras"],
            }
        )
    )
    needed = repeats_needed(SPREAD_DEFAULT, 0.5, pair_alpha(ALPHA, cells), cap=MAX_REPEATS)
    assert needed is not None and needed > 2  # more than the 2 asked
    assert f"--models dense-10k --repeats {needed}" in measure


def _records(path: Path, run_id: str) -> str:
    lines = path.read_text().splitlines()
    return "".join(json.dumps({**json.loads(line), "run_id": run_id}) + "\n" for line in lines)


def _night(fixture: str, results: Path, run_id: str) -> None:
    """A fixture run copied under another run id, as an earlier night in the restored cache."""
    (results / run_id).mkdir(parents=True)
    for path in (FIXTURE_RUNS / fixture).glob("*.jsonl"):
        (results / run_id / path.name).write_text(_records(path, run_id))


def _uploaded(nightly: Path) -> None:
    """What download-artifact makes of the measure jobs' uploads (`results-<env>` artifacts of
    `results/`): `nightly/results-<env>/<run>/`, each with its job's own manifest."""
    manifest = json.loads((FIXTURE_RUNS / DOCKER_RUN / "manifest.json").read_text())
    for env in DOCKER_ENVS:
        run_dir = nightly / f"results-{env}" / DOCKER_RUN
        run_dir.mkdir(parents=True)
        shutil.copy(FIXTURE_RUNS / DOCKER_RUN / f"{env}.jsonl", run_dir)
        own = {
            **manifest,
            "environments": [e for e in manifest["environments"] if e["id"] == env],
            "outcomes": [o for o in manifest["outcomes"] if o["env_id"] == env],
        }
        (run_dir / "manifest.json").write_text(json.dumps(own))


@pytest.mark.parametrize("earlier", ["same-environments", "other-environment", "none"])
def test_the_report_job_merges_reports_and_compares_real_records(
    workflow: tuple[Path, dict[str, Any]], tmp_path: Path, earlier: str
) -> None:
    report_job = workflow[1]["jobs"]["report"]
    uses = [(s["uses"], s.get("with", {}).get("path")) for s in report_job["steps"] if "uses" in s]
    assert uses == [
        ("actions/checkout@v4", None),
        ("actions/setup-python@v5", None),
        ("actions/cache/restore@v4", "results"),
        ("actions/download-artifact@v4", "nightly"),
        ("actions/cache/save@v4", "results"),
        ("actions/upload-artifact@v4", "reports/\n!reports/latest\n"),
    ]
    if earlier == "same-environments":
        _night(DOCKER_RUN, tmp_path / "results", EARLIER)
    elif earlier == "other-environment":
        _night(LOCAL_RUN, tmp_path / "results", EARLIER)
    _uploaded(tmp_path / "nightly")

    env = {"RUN_ID": DOCKER_RUN}
    assert report_job["env"] == {"RUN_ID": "${{ needs.plan.outputs.run_id }}"}
    outputs = {}
    for step in report_job["steps"]:
        if "run" in step and step.get("name") != "Install tf-load-matrix":
            done = _bash(step["run"], tmp_path, **env, **step.get("env", {}))
            assert done.returncode == 0, (step["name"], done.stdout + done.stderr)
            outputs[step["name"]] = done.stdout

    merged = tmp_path / "results" / DOCKER_RUN
    assert sorted(p.name for p in merged.iterdir()) == sorted(f"{e}.jsonl" for e in DOCKER_ENVS)
    page = (tmp_path / "reports" / DOCKER_RUN / "index.html").read_text()
    assert all(env_id in page for env_id in DOCKER_ENVS)
    compared = outputs["Compare with the night before (fails on a slowdown)"]
    if earlier == "same-environments":  # the same records: no change, but 3 loads a cell
        assert re.search(r"^\d+ underpowered \(a change counts when", compared, re.M), compared
        assert "::warning::some cells were too noisy to detect a 0.5 change" in compared
    elif earlier == "other-environment":
        assert "::warning::no cell was measured both in " in compared
    else:
        assert compared == "no earlier night in the cache: nothing to compare with\n"
    assert "0 run(s) pruned" in outputs["Keep the last nights"]


# ---- power: a gate that can fire ----------------------------------------------------------------


def _results_with_a_real_run(project: Path) -> float:
    """results/ holding the local fixture run (real records, 3 loads a cell); its spread."""
    _night(LOCAL_RUN, project / "results", EARLIER)
    spread, source = observed_spread(project / "results")
    assert EARLIER in source
    return spread


def _gate_alpha(project: Path) -> tuple[int, float]:
    """The nightly compare's family of cells for the project's matrix, and its per-cell level."""
    config = project / CONFIG_FILE_NAME
    cells = gate_cells(load_config(config if config.exists() else None))
    return cells, pair_alpha(ALPHA, cells)


def test_repeats_too_few_for_the_threshold_are_raised_and_said(tmp_path: Path) -> None:
    spread = _results_with_a_real_run(tmp_path)
    cells, alpha = _gate_alpha(tmp_path)
    needed = repeats_needed(spread, 0.5, alpha, cap=MAX_REPEATS)
    assert needed is not None and needed > 3
    done = _schedule(
        tmp_path, "--nightly", "02:30", "--emit", "github", "--threshold", "0.5", "--repeats", "3"
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        f"note: at 3 repeats the nightly `matrix compare` could detect only "
        f"a ±{detectable_at(spread, 3, alpha):.0%} change in one of its "
        f"{cells} cells (SD of log load time {spread:.2f}, the median over "
        f"the cells of run {EARLIER}); repeats raised to {needed}, the fewest "
        "that detect --threshold 0.5\n"
    )
    text = (tmp_path / ".github" / "workflows" / "nightly.yml").read_text()
    assert text.startswith(
        "# Written by `matrix schedule --nightly 02:30 --emit github --threshold 0.5 --repeats 3`"
    )
    flow = yaml.safe_load(text)
    measure = _step(flow["jobs"]["measure"], "Measure (every job writes run RUN_ID)")
    assert f"--repeats {needed}" in measure and "--repeats 3" not in measure
    compare = next(
        s
        for s in flow["jobs"]["report"]["steps"]
        if s.get("name") == "Compare with the night before (fails on a slowdown)"
    )
    assert compare["env"] == {"THRESHOLD": "0.5"}


def test_a_gate_that_30_repeats_cannot_power_is_refused(tmp_path: Path) -> None:
    """At the spread of the tiny models' real loads here (~0.25: 15 ms h5 loads, 1.5 ms TFLite
    ones that stall) the default threshold needs more than 30 loads a cell."""
    spread = _results_with_a_real_run(tmp_path)
    _, alpha = _gate_alpha(tmp_path)
    assert repeats_needed(spread, THRESHOLD, alpha, cap=MAX_REPEATS) is None
    done = _schedule(tmp_path, "--nightly", "02:30", "--emit", "cron")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: --repeats ")
    assert (
        f"even 30 repeats could not detect --threshold {THRESHOLD:g}: raise --threshold"
        in done.stderr
    )
    assert not (tmp_path / "build").exists()


def test_without_a_run_the_measured_default_spread_is_assumed(in_tmp: Path) -> None:
    """A new project's nightly gate at the defaults: the repeats are raised to what the
    default model's measured spread needs for the default threshold, and it says so."""
    cells, alpha = _gate_alpha(in_tmp)
    needed = repeats_needed(SPREAD_DEFAULT, THRESHOLD, alpha, cap=MAX_REPEATS)
    assert needed is not None and needed > load_config().repeats
    result = CliRunner().invoke(app, ["schedule", "--nightly", "02:30", "--emit", "cron"])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"note: at 5 repeats the nightly `matrix compare` could detect only a "
        f"±{detectable_at(SPREAD_DEFAULT, 5, alpha):.0%} change in one of its {cells} cells "
        f"(SD of log load time {SPREAD_DEFAULT:.2f}, no run under the results folder: the "
        f"project's measured default); repeats raised to {needed}, the fewest that detect "
        f"--threshold {THRESHOLD:g}\n"
    )
    assert f"--repeats {needed}" in result.stdout


def test_enough_repeats_are_kept(tmp_path: Path) -> None:
    spread = _results_with_a_real_run(tmp_path)
    enough = repeats_needed(spread, 0.5, _gate_alpha(tmp_path)[1], cap=MAX_REPEATS)
    assert enough is not None
    done = _schedule(
        tmp_path,
        "--nightly",
        "02:30",
        "--emit",
        "cron",
        "--threshold",
        "0.5",
        "--repeats",
        str(enough + 1),
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert f"--repeats {enough + 1} " in done.stdout
