"""Hostile input, performed for real: crafted files, folders, links and processes (issue 13,
parts 3, 4, 5 and 8).

Every attack here was first seen to work (or to end in a traceback) on the tree before the fix;
each test runs the attack through the real command or the real process and checks the damage is
not done: no line injected into a written file, no credential on a command line or in a log,
no file outside the output folder, and one line on stderr with the documented exit code.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner, Result

from matrix.build.pipsettings import CLIENT_TIMEOUT_S, FETCH_SCRIPT, PipSettings, redact, serve
from matrix.build.venvs import ensure_venv
from matrix.cli import app
from matrix.plan.config import TRIALS_LIMIT, load_config
from matrix.plan.environments import expand
from matrix.plan.pythons import find_pythons
from matrix.results.reader import MAX_LINE_BYTES, read_jsonl

FIXTURES = Path(__file__).parents[1] / "fixtures" / "runs"
LOCAL_RUN = "20261127-201543-761b"  # one environment, no manifest
DOCKER_RUN = "20261127-195717-722a"  # a sweep: two environments and a manifest
CONTROL_ERROR = "holds a control character (a newline, carriage return or the like); remove it"


def cli(*args: str) -> Result:
    """`matrix ARGS` in this process; a traceback (any exception but an exit) fails the test."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "1000"})  # no wrapped lines
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"matrix {' '.join(args)} raised {result.exception!r}")
    return result


def one_line_error(result: Result, code: int = 2) -> str:
    """The single `error: …` line of a failed command, after checking its exit code."""
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def copy_run(
    tmp_path: Path,
    run: str,
    mutate: Callable[[dict[str, Any]], dict[str, Any]],
    name: str | None = None,
) -> Path:
    """A copy of a fixture run under `tmp_path/runs/`, each record passed through `mutate`."""
    folder = tmp_path / "runs" / (name or run)
    shutil.copytree(FIXTURES / run, folder)
    for path in folder.glob("*.jsonl"):
        records = [mutate(json.loads(line)) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def first_trial(change: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A mutation applying `change` to the first trial record only."""
    done = []

    def mutate(record: dict[str, Any]) -> dict[str, Any]:
        if record["kind"] == "trial" and not done:
            done.append(True)
            return {**record, **change}
        return record

    return mutate


# ---- part 3: control characters never reach a written file --------------------------------------


@pytest.mark.parametrize("char", ["\n", "\r", "\x1b", "\x00"])
def test_a_control_character_in_results_dir_never_reaches_the_crontab(in_tmp, char) -> None:
    injected = f"r{char}* * * * * touch /tmp/pwned #"
    (in_tmp / "matrix.yaml").write_text(f"results_dir: {json.dumps(injected)}\n")
    result = cli(
        "schedule", "--nightly", "02:00", "--emit", "cron", "--out", "out", "--threshold", "0.5"
    )
    assert one_line_error(result) == (
        f"error: matrix.yaml: results_dir: {injected!r} {CONTROL_ERROR}"
    )
    assert not (in_tmp / "out").exists()


def test_a_newline_in_workdir_never_becomes_a_systemd_directive(in_tmp) -> None:
    workdir = in_tmp / "w\nExecStartPre=/bin/touch /tmp/pwned"
    workdir.mkdir(parents=True)
    result = cli(
        "schedule",
        "--nightly",
        "02:00",
        "--emit",
        "systemd",
        "--out",
        "out",
        "--workdir",
        str(workdir),
        "--threshold",
        "0.5",
    )
    assert one_line_error(result) == f"error: --workdir: {str(workdir)!r} {CONTROL_ERROR}"
    assert not (in_tmp / "out").exists()


def test_a_newline_in_the_user_name_never_reaches_a_unit(in_tmp, monkeypatch) -> None:
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "me\nExecStartPre=/bin/touch /tmp/pwned")
    result = cli(
        "schedule", "--nightly", "02:00", "--emit", "systemd", "--out", "out", "--threshold", "0.5"
    )
    assert "the user name" in one_line_error(result)
    assert list((in_tmp / "out").glob("*")) == []


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ('"repeats\\nExecStartPre=/bin/sh": 3\n', "matrix.yaml: key"),
        (
            'base_images:\n  "3.11": "python:3.11\\nRUN touch /pwned"\n',
            "matrix.yaml: base_images.3.11",
        ),
        ('base_images:\n  "3.11\\nRUN touch /pwned": python:3.11\n', "matrix.yaml: base_images"),
        ('models: ["x\\ny.keras"]\n', "matrix.yaml: models[0]"),
        ('skip: ["a\\rb"]\n', "matrix.yaml: skip[0]"),
    ],
)
def test_a_control_character_anywhere_in_the_matrix_file_never_reaches_a_dockerfile(
    in_tmp, yaml_text, field
) -> None:
    (in_tmp / "matrix.yaml").write_text(yaml_text)
    result = cli("render", "--build-dir", "build")
    line = one_line_error(result)
    assert line.startswith(f"error: {field}: ") and line.endswith(CONTROL_ERROR)
    assert not (in_tmp / "build").exists()


def test_a_control_character_in_a_flag_never_reaches_the_workflow(in_tmp) -> None:
    result = cli(
        "schedule",
        "--nightly",
        "02:00",
        "--emit",
        "github",
        "--out",
        "out",
        "--threshold",
        "0.5",
        "--only",
        "tf2.21-*\n  evil: true",
    )
    assert "control character" in one_line_error(result)
    assert not (in_tmp / "out").exists()


# ---- part 4: secrets -----------------------------------------------------------------------------


def command_lines() -> Iterator[str]:
    """The command line of every process on this machine, as any local user can read it."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # ended meanwhile


class _Index(BaseHTTPRequestHandler):
    """A package index that records who asked with which credentials, and every command line
    that held the password at that moment; it has no package."""

    seen: ClassVar[list[tuple[str, str, list[str]]]] = []
    password = ""

    def do_GET(self) -> None:
        leaked = [line for line in command_lines() if self.password in line]
        self.seen.append((self.path, self.headers.get("Authorization", ""), leaked))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Silent."""


def test_the_venv_backend_gives_uv_the_index_credentials_by_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "s3cret-tok3n"
    _Index.password, _Index.seen = password, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    monkeypatch.setenv("PIP_INDEX_URL", f"http://robot:{password}@127.0.0.1:{port}/simple/")
    (env,) = expand(load_config(None, {"tf": "2.21", "python": "3.11"}))[0]
    unknown = replace(env, packages=("tflm-no-such-package==1.0",))
    log = tmp_path / "install.log"
    try:
        result = ensure_venv(unknown, find_pythons()["3.11"], tmp_path, log)
    finally:
        server.shutdown()
        server.server_close()
    credentials = "Basic " + base64.b64encode(f"robot:{password}".encode()).decode()
    asked = [(path, auth) for path, auth, _ in _Index.seen]
    assert ("/simple/tflm-no-such-package/", credentials) in asked  # uv did use the index
    assert [leaked for _, _, leaked in _Index.seen if leaked] == []  # no command line held it
    assert result.status == "error"
    assert password not in log.read_text() and password not in result.reason


def test_redact_masks_every_url_credential_and_nothing_else() -> None:
    text = "GET https://u:p@ss@host/a?b@c, https://tok@h2/x, http://plain/y, mail me@host"
    assert redact(text) == (
        "GET https://***@host/a?b@c, https://***@h2/x, http://plain/y, mail me@host"
    )


def test_a_build_log_masks_credentials_double(tmp_path: Path) -> None:
    """Fast double: the image builder's log and reason, fed a crafted event stream."""
    from matrix.build.images import _follow

    url = "https://robot:s3cret@mirror.example/simple/tensorflow/"
    events = [{"stream": f"Looking in indexes: {url}\n"}, {"error": f"pip failed to fetch {url}"}]
    log = tmp_path / "build.log"
    with log.open("w") as handle:
        reason = _follow(events, handle, None)
    assert "s3cret" not in log.read_text() and "s3cret" not in reason
    assert "https://***@mirror.example/simple/tensorflow/" in reason


def _fetch(url: str, folder: Path) -> subprocess.Popen[bytes]:
    """The settings fetch exactly as the Dockerfile runs it: the URL in its environment."""
    return subprocess.Popen(
        [sys.executable, "-c", FETCH_SCRIPT, str(folder)],
        env={**os.environ, "PIP_SETTINGS_URL": url},
    )


def test_pip_settings_are_served_once_to_a_fetch_whose_command_line_holds_no_url(
    tmp_path: Path,
) -> None:
    settings = PipSettings(options=(("index-url", "https://robot:s3cret@mirror.example/s"),))
    with serve(settings) as url:
        token = url.split("/")[3]
        fetch = _fetch(url, tmp_path)
        while b"urllib" not in Path(f"/proc/{fetch.pid}/cmdline").read_bytes():
            time.sleep(0.001)  # until exec: its command line is then the one it runs with
        assert token not in Path(f"/proc/{fetch.pid}/cmdline").read_text(errors="replace")
        assert fetch.wait(timeout=60) == 0
        assert (tmp_path / "pip.conf").read_text() == settings.files()["pip.conf"]
        with pytest.raises(urllib.error.HTTPError, match="404"):  # a replay gets nothing
            urllib.request.urlopen(url, timeout=5)


def test_an_idle_client_neither_blocks_the_fetch_nor_holds_the_server(tmp_path: Path) -> None:
    with serve(PipSettings(options=(("timeout", "60"),))) as url:
        port = int(url.split(":")[2].split("/")[0])
        idle = socket.create_connection(("127.0.0.1", port))  # connects, never asks
        start = time.monotonic()
        assert _fetch(url, tmp_path).wait(timeout=CLIENT_TIMEOUT_S) == 0
        assert time.monotonic() - start < CLIENT_TIMEOUT_S / 2
        idle.settimeout(CLIENT_TIMEOUT_S * 3)
        assert idle.recv(1) == b""  # the server dropped it on its own timeout
    stopped = time.monotonic()
    assert time.monotonic() - stopped < 5


def test_the_fetch_gives_up_on_a_server_that_never_answers() -> None:
    """The build's side of the timeouts: urlopen is called with one (60 s is too long to wait
    for here; the server's side is timed for real above)."""
    calls = [
        node
        for node in ast.walk(ast.parse(FETCH_SCRIPT))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "urlopen"
    ]
    assert [kw.arg for call in calls for kw in call.keywords] == ["timeout"]


def test_a_real_build_fetches_its_pip_settings_with_no_url_on_any_command_line(
    cpu_env, docker_engine, tmp_path: Path
) -> None:
    """A tiny image (its one package, pip, is already there) built by the real daemon while
    every command line on the host is watched: the fetch runs, and never with the URL."""
    from matrix.build.images import ensure_image

    seen: list[str] = []
    building = threading.Event()
    building.set()

    def watch() -> None:
        while building.is_set():
            seen.extend(
                line
                for line in command_lines()
                if "pip-settings" in line or "urllib.request" in line
            )

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    env = replace(cpu_env, packages=("pip",))
    try:
        result = ensure_image(docker_engine, env, tmp_path / "build", tmp_path / "build.log")
    finally:
        building.clear()
        watcher.join()
    try:
        assert result.status == "ok", result.reason
        assert any("urllib.request" in line for line in seen)  # the watcher saw the fetch run
        assert [line for line in seen if "pip-settings.json" in line] == []
    finally:
        docker_engine.images.remove(result.tag, force=True)


# ---- part 5: paths from data ---------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["../../escaped", "/tmp/tflm-escaped-abs", "-x", 7, None])
def test_a_run_id_from_the_records_never_names_the_report_folder(tmp_path, run_id) -> None:
    good = cli("report", str(FIXTURES / LOCAL_RUN), "--out", str(tmp_path / "reports"))
    assert good.exit_code == 0
    run = copy_run(tmp_path, LOCAL_RUN, lambda r: {**r, "run_id": run_id}, name="hostile")
    result = cli("report", str(run), "--out", str(tmp_path / "reports"))
    assert one_line_error(result) == ("error: nothing to report: the runs hold no readable records")
    assert "skipped: not a record: its run_id" in result.stdout
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [LOCAL_RUN, "latest"]
    assert not Path("/tmp/tflm-escaped-abs").exists() and not (tmp_path / "escaped").exists()
    latest = tmp_path / "reports" / "latest"
    assert (latest / "index.html").is_file()  # `latest` never dangles


@pytest.mark.parametrize("resume", ["/etc", "..", "../results", "-x", "a/b", "latest"])
def test_resume_is_validated_like_run_id(in_tmp, resume) -> None:
    result = cli("run", "--backend", "local", f"--resume={resume}")
    assert one_line_error(result) == (
        f"error: --resume: {resume!r} is not a folder name; use "
        "letters, digits, '.', '_' and '-', not starting with '.' "
        "or '-', and not 'latest'"
    )
    assert not (in_tmp / "results").exists()


def test_a_run_id_starting_with_a_dash_is_refused(in_tmp) -> None:
    result = cli("run", "--backend", "local", "--run-id=-x", "--no-report")
    assert "error: --run-id: '-x' is not a folder name" in one_line_error(result)
    assert not (in_tmp / "results").exists()


# ---- part 8: one clear line, never a traceback ---------------------------------------------------


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"run_id": 5}, "its run_id is a number, not text"),
        ({"run_id": None}, "its run_id is null, not text"),
        ({"format": None}, "its format is null, not text"),
        ({"env_id": ["a", "b"]}, "its env_id is a list, not text"),
    ],
)
def test_records_of_the_wrong_type_are_skipped_with_one_line_each(tmp_path, change, why) -> None:
    run = copy_run(tmp_path, LOCAL_RUN, first_trial(change))
    records = run / "local-tf2.21-py3.11-cpu.jsonl"
    line = 1 + [json.loads(r)["kind"] for r in records.read_text().splitlines()].index("trial")
    report = cli("report", str(run), "--out", str(tmp_path / "reports"))
    assert report.exit_code == 0
    assert f"{records}:{line}: skipped: not a record: {why}" in report.stdout
    compare = cli("compare", str(FIXTURES / LOCAL_RUN), str(run))
    assert compare.exit_code in (0, 5) and "skipped: not a record" in compare.stdout
    history = cli("history", "--results-dir", str(tmp_path / "runs"))
    assert history.exit_code == 0


def test_every_record_of_the_wrong_type_is_counted_not_listed(tmp_path) -> None:
    run = copy_run(tmp_path, LOCAL_RUN, lambda r: {**r, "env_id": ["a"]})
    problems = read_jsonl(run / "local-tf2.21-py3.11-cpu.jsonl").problems
    assert len(problems) == 6 and problems[-1].endswith("skipped 61 more bad lines")
    assert one_line_error(cli("report", str(run), "--out", str(tmp_path / "r"))) == (
        "error: nothing to report: the runs hold no readable records"
    )


def test_a_manifest_whose_outcomes_is_not_a_list_is_skipped_with_a_warning(tmp_path) -> None:
    run = copy_run(tmp_path, DOCKER_RUN, lambda r: r)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "outcomes": "x"}))
    result = cli("report", str(run), "--out", str(tmp_path / "reports"))
    assert result.exit_code == 0
    assert "manifest.json: skipped: its outcomes is not a list of environments" in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--backend", "local", "--results-dir", "{file}", "--no-report"],
        ["run", "--backend", "local", "--results-dir", "{file}/sub", "--no-report"],
        ["report", str(FIXTURES / LOCAL_RUN), "--out", "{file}"],
        ["render", "--build-dir", "{file}"],
        ["build", "--build-dir", "{file}"],
        [
            "schedule",
            "--nightly",
            "02:00",
            "--emit",
            "cron",
            "--threshold",
            "0.5",
            "--out",
            "{file}",
        ],
    ],
)
def test_a_folder_flag_naming_a_file_is_one_line(in_tmp, command) -> None:
    (in_tmp / "a-file").write_text("keep me\n")
    args = [arg.replace("{file}", "a-file") for arg in command]
    flag = args[args.index(next(a for a in args if a.startswith("a-file"))) - 1]
    line = one_line_error(cli(*args))
    assert line.endswith("is a file, not a folder; name a folder")
    assert line.startswith(f"error: {'results_dir' if flag == '--results-dir' else flag} a-file")
    assert (in_tmp / "a-file").read_text() == "keep me\n"


@pytest.mark.parametrize("command", ["report", "history", "prune"])
def test_reading_commands_given_a_file_as_results_dir_say_so_in_one_line(in_tmp, command) -> None:
    (in_tmp / "a-file").write_text("")
    extra = ["--keep", "1"] if command == "prune" else []
    assert "a-file" in one_line_error(cli(command, "--results-dir", "a-file", *extra))


@pytest.mark.parametrize("dry_run", [True, False])
def test_prune_leaves_a_run_named_link_to_proc_alone(tmp_path, dry_run) -> None:
    results = tmp_path / "results"
    for run in ("20260101-000000-aaaa", "20260201-000000-bbbb"):
        shutil.copytree(FIXTURES / LOCAL_RUN, results / run)
    (results / "20250101-000000-cccc").symlink_to("/proc")
    (results / "20250102-000000-dddd").symlink_to(results / "20260101-000000-aaaa")
    result = cli(
        "prune",
        "--keep",
        "1",
        "--results-dir",
        str(results),
        "--reports-dir",
        str(tmp_path / "reports"),
        *(["--dry-run"] if dry_run else []),
    )
    assert result.exit_code == 0, result.output
    assert "20250101" not in result.stdout and "20250102" not in result.stdout
    assert (results / "20250101-000000-cccc").is_symlink()
    assert (results / "20260101-000000-aaaa").exists() == dry_run


def test_a_400_mb_record_line_is_skipped_in_bounded_memory(tmp_path) -> None:
    """The real `matrix report`, its peak memory measured by the kernel (wait4)."""
    run = copy_run(tmp_path, LOCAL_RUN, lambda r: r)
    records = run / "local-tf2.21-py3.11-cpu.jsonl"
    good = records.read_bytes().splitlines(keepends=True)
    with records.open("ab") as handle:
        handle.write(b'{"kind": "trial", "reason": "')
        for _ in range(400):
            handle.write(b"A" * (1 << 20))
        handle.write(b'"}\n' + good[-1])
    lines = len(good)
    report = subprocess.Popen(
        [sys.executable, "-m", "matrix", "report", str(run), "--out", str(tmp_path / "reports")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "300"},
    )
    output = report.stdout.read().decode()
    _, status, usage = os.wait4(report.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert f"{records}:{lines + 1}: skipped: longer than {MAX_LINE_BYTES} bytes" in output
    assert usage.ru_maxrss < 400 * 1024  # KiB: less than the line itself (the old reader: 1.6 GB)
    assert len(read_jsonl(records).records) == lines + 1  # the record after it is still read


def test_a_records_name_planted_as_a_device_or_fifo_is_a_problem_not_a_hang(tmp_path) -> None:
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.jsonl")
    for name in ("zero.jsonl", "fifo.jsonl"):
        assert read_jsonl(tmp_path / name).problems == [
            f"{tmp_path / name}: cannot read: not a regular file"
        ]


def test_repeats_and_warmup_have_an_upper_bound(in_tmp) -> None:
    assert load_config(None, {"repeats": TRIALS_LIMIT, "warmup": TRIALS_LIMIT}).repeats == 1000
    for flag in ("--repeats", "--warmup"):
        result = cli("run", "--backend", "local", flag, str(TRIALS_LIMIT + 1))
        assert one_line_error(result) == f"error: {flag}: must be <= 1000 (got 1001)"
    (in_tmp / "matrix.yaml").write_text("repeats: 100000000000\n")
    assert one_line_error(cli("run", "--backend", "local")) == (
        "error: matrix.yaml: repeats: must be <= 1000 (got 100000000000)"
    )
