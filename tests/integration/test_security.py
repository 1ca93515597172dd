"""Attacks performed for real: what a hostile model or package could do from its container.

## Containment (issue 13, parts 1, 2 and 7)

The attacker is the code a measurement runs. The real tests start real containers on the real
engine: a harness stand-in image (the environment's real image, with an attack script as its
entrypoint) driven by the real sweep — host-call service, start gate, logs, manifest — plants
links and forgeries from inside its container; the host's files must come out untouched. The
cold-run container's configuration is started as the run sends it and tries /proc/sys; a user's
model file goes through a real docker run, read-only, and a model carrying code is refused.
Fast tests beside them (named `*_double`) plant the same names on a local folder, to pin each
rule of the host side on its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from harness.hostcalls import CALLS_DIR_ENV, serve_host_calls
from harness.records import dump_json, open_regular
from matrix.build.dockerfile import HARNESS_UID
from matrix.cli import app
from matrix.execute import hostdrop
from matrix.execute.backends import Prepared
from matrix.execute.backends.docker import (
    DockerBackend,
    container_name,
    prepare_host_files,
    run_request,
    start_container,
)
from matrix.execute.matrix_run import MatrixRun
from matrix.execute.sweep import Sweep, finished_before
from matrix.plan.config import load_config
from matrix.results.reader import MANIFEST
from tests.integration.docker_matrix import MATRIX_YAML, matrix, records

VICTIM_TEXT = "a host file no container may change\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the host, outside every folder a container is given."""
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    return path


def untouched(path: Path) -> bool:
    return stat.S_ISREG(path.lstat().st_mode) and path.read_text() == VICTIM_TEXT


# ---- containment: the host side's rules, on a local folder (fast doubles) ----------------------


def test_open_regular_refuses_links_fifos_and_second_names_double(tmp_path, victim) -> None:
    (tmp_path / "link").symlink_to(victim)
    os.mkfifo(tmp_path / "fifo")
    os.link(victim, tmp_path / "hardlink")
    for name in ("link", "fifo", "hardlink"):
        with pytest.raises(OSError):
            open_regular(str(tmp_path / name), os.O_WRONLY | os.O_CREAT, truncate=True)
    assert untouched(victim)
    os.close(open_regular(str(tmp_path / "new"), os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    with pytest.raises(FileExistsError):  # O_EXCL: a name planted first is never reused
        open_regular(str(tmp_path / "new"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)


def test_dump_json_never_writes_through_a_planted_link_double(tmp_path, victim) -> None:
    target = tmp_path / "manifest.json"
    (tmp_path / "manifest.json.tmp").symlink_to(victim)  # the old fixed temporary name
    dump_json(str(target), {"ok": 1})
    assert untouched(victim) and json.loads(target.read_text()) == {"ok": 1}
    target.unlink()
    target.symlink_to(victim)  # a link at the name itself is replaced, not followed
    dump_json(str(target), {"ok": 2})
    assert untouched(victim) and not target.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # readable by a container's user


def test_host_calls_answer_planted_requests_without_following_them_double(tmp_path, victim) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()
    (calls / "a.request").symlink_to(victim)  # would have the host read a file of its own
    os.mkfifo(calls / "b.request")  # would block the host's open
    (calls / "c.request").mkdir()
    (calls / "d.request").write_text(json.dumps({"kind": "echo"}))
    (calls / "d.done").symlink_to(victim)  # the answer's own name, planted as a link
    (calls / "d.done.tmp").symlink_to(victim)
    (calls / "e.request").write_bytes(b"[" * (2 << 20))
    answered = serve_host_calls(str(calls), {"echo": lambda call: {"echoed": call["kind"]}})
    assert answered == 5 and untouched(victim)
    answers = {name: json.loads((calls / f"{name}.done").read_text()) for name in "abcde"}
    assert answers["d"] == {"echoed": "echo"}
    for name in "abce":
        assert answers[name]["error"].startswith("unreadable request"), answers[name]


def test_resume_trusts_the_manifest_not_a_done_record_double(tmp_path) -> None:
    (tmp_path / "forged.jsonl").write_text(json.dumps({"kind": "done"}) + "\n")
    assert finished_before(tmp_path) == set()
    (tmp_path / MANIFEST).write_text(
        json.dumps(
            {
                "outcomes": [
                    {"env_id": "a", "status": "ok"},
                    {"env_id": "b", "status": "resumed"},
                    {"env_id": "forged", "status": "run-failed"},
                    "junk",
                    {"env_id": 3, "status": "ok"},
                ]
            }
        )
    )
    assert finished_before(tmp_path) == {"a", "b"}
    (tmp_path / MANIFEST).write_text('{"outcomes": "x"}')
    assert finished_before(tmp_path) == set()


def test_the_cache_drop_flag_is_gone_and_doctor_prints_the_one_grant() -> None:
    result = CliRunner().invoke(app, ["run", "--allow-cache-drop"])
    assert result.exit_code == 2 and "No such option" in result.output
    line = hostdrop.sudoers_line("alice")
    assert line == f"alice ALL=(root) NOPASSWD: {' '.join(hostdrop.drop_command())}"
    assert hostdrop.drop_command()[1:] == ["-q", "-w", "vm.drop_caches=3"]


# ---- containment: a hostile harness in real containers ------------------------------------------

ATTACK = r'''
"""Harness stand-in: every attack on the host a container's code could try, then a report."""
import errno, json, os, sys, time

args = sys.argv[1:]
out, env_id, gate = (args[args.index(flag) + 1] for flag in ("--out", "--env-id", "--start-gate"))
victim, other = VICTIM, OTHER_ENV
calls = os.environ[CALLS_ENV]
report = {"uid": os.getuid(), "sees": sorted(os.listdir(out))}


def attempt(name, action):
    try:
        action()
        report[name] = "done"
    except OSError as exc:
        report[name] = errno.errorcode.get(exc.errno, str(exc))


def write(path):
    return lambda: open(path, "w").write("1")


with open("/proc/self/status") as status:
    report["cap_eff"] = next(l.split()[1] for l in status if l.startswith("CapEff"))
attempt("core_pattern", write("/proc/sys/kernel/core_pattern"))
attempt("drop_caches", write("/proc/sys/vm/drop_caches"))
for name in ("manifest.json.tmp", "manifest.json", other + ".log", other + ".jsonl",
             other + ".build.log", env_id + ".log", ".start-" + other):
    attempt("plant " + name, lambda: os.symlink(victim, os.path.join(out, name)))
attempt("plant gate", lambda: os.symlink(victim, os.path.join(os.path.dirname(gate), "x")))
os.symlink(victim, "/tmp/link")
attempt("swap own records", lambda: os.rename("/tmp/link", os.path.join(out, env_id + ".jsonl")))
attempt("remove own records", lambda: os.unlink(os.path.join(out, env_id + ".jsonl")))
call = {n: os.path.join(calls, "%s-%d-%s" % (env_id, time.time_ns(), n)) for n in "abc"}
os.symlink(victim, call["a"] + ".request")
os.mkfifo(call["b"] + ".request")
os.symlink(victim, call["c"] + ".done")
os.symlink(victim, call["c"] + ".done.tmp")
with open(call["c"] + ".request", "w") as request:
    json.dump({"kind": "drop", "id": "c"}, request)
while not os.path.exists(gate):
    time.sleep(0.01)
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not all(
        os.path.isfile(base + ".done") for base in call.values()):
    time.sleep(0.05)
report["answers"] = {n: json.load(open(base + ".done")) for n, base in call.items()}
print("ATTACK " + json.dumps(report), flush=True)
with open(os.path.join(out, env_id + ".jsonl"), "a") as mine:  # forged: nothing was measured
    mine.write(json.dumps({"kind": "done", "env_id": env_id, "trials_written": 99}) + "\n")
sys.exit(1)
'''


class HostileImages(DockerBackend):
    """The docker backend with a harness stand-in as every environment's image: its real
    launch (mounts, user, host calls) runs it, so only the harness is swapped."""

    def __init__(self, client, tag: str) -> None:
        super().__init__(client, Path("unused"), hostdrop.route())
        self._tag = tag

    def prepare(self, env, log, on_line) -> Prepared:
        return Prepared(env, self._tag)


def attack_report(log: Path) -> dict:
    """What the stand-in printed about its attempts (to its log, which the host writes)."""
    (line,) = [ln for ln in log.read_text().splitlines() if ln.startswith("ATTACK ")]
    return json.loads(line[len("ATTACK ") :])


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, cpu_env, cpu_image, docker_engine):
    """Two environments whose harness attacks (each planting for the other), swept for real;
    then swept again, as `--resume` does."""
    root = tmp_path_factory.mktemp("hostile")
    victim = root / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    second = dataclasses.replace(cpu_env, python="3.12")
    envs = [cpu_env, second]
    context = root / "image"
    context.mkdir()
    (context / "attack.py").write_text(
        ATTACK.replace("VICTIM", repr(str(victim)))
        .replace("OTHER_ENV", repr(second.id))
        .replace("CALLS_ENV", repr(CALLS_DIR_ENV))
    )
    (context / "Dockerfile").write_text(
        f"FROM {cpu_image.tag}\nCOPY attack.py /opt/attack.py\n"
        'ENTRYPOINT ["python3", "/opt/attack.py"]\n'
    )
    tag = "tf-load-matrix-test/hostile-harness:latest"
    docker_engine.images.build(path=str(context), tag=tag, rm=True)
    config = load_config(
        None,
        {
            "results_dir": str(root / "results"),
            "models": "dense-10k",
            "formats": "h5",
            "cache": "cold",
            "repeats": 1,
            "warmup": 0,
        },
    )
    run = MatrixRun(config=config, run_id="hostile")
    run.run_dir.mkdir(parents=True)
    bystander = run.run_dir / "bystander.jsonl"  # another environment's records, already there
    bystander.write_text(json.dumps({"kind": "done", "env_id": "bystander"}) + "\n")
    images = HostileImages(docker_engine, tag)
    console = Console(record=True, width=200)
    first = Sweep(run, images, envs, [], console).run()
    after_first = {p.name: p.read_bytes() for p in run.run_dir.glob("*.jsonl")}
    reports = [attack_report(run.run_dir / f"{env.id}.log") for env in envs]
    second_sweep = Sweep(run, images, envs, [], console).run()
    reports += [attack_report(run.run_dir / f"{env.id}.log") for env in envs]
    yield {
        "run": run,
        "victim": victim,
        "bystander": bystander,
        "envs": envs,
        "reports": reports,
        "outcomes": (first, second_sweep),
        "after_first": after_first,
        "output": console.export_text(),
    }
    for env in envs:
        docker_engine.volumes.get(container_name(run.run_id, env.id)).remove(force=True)
    docker_engine.images.remove(tag, force=True)


def test_a_hostile_container_changes_no_host_file(hostile) -> None:
    run, victim = hostile["run"], hostile["victim"]
    assert untouched(victim)
    assert json.loads(hostile["bystander"].read_text()) == {"kind": "done", "env_id": "bystander"}
    manifest = json.loads((run.run_dir / MANIFEST).read_text())
    assert {o["status"] for o in manifest["outcomes"]} == {"run-failed"}
    for path in run.run_dir.rglob("*"):  # what a container planted stayed in its call folder
        if path.is_symlink():
            assert path.parent.name.startswith(".host-calls-"), path
    for env in hostile["envs"]:
        for suffix in (".log", ".jsonl"):
            assert stat.S_ISREG((run.run_dir / f"{env.id}{suffix}").lstat().st_mode)


def test_a_container_sees_only_its_own_files_and_cannot_swap_them(hostile) -> None:
    for env, report in zip(hostile["envs"] * 2, hostile["reports"]):  # both sweeps
        assert report["sees"] == sorted(
            [f"{env.id}.jsonl", f".host-calls-{env.id}", f".gate-{env.id}"]
        )
        assert report["uid"] == HARNESS_UID and int(report["cap_eff"], 16) == 0
        assert report["plant gate"] == "EROFS"  # the gate's folder is read-only
        # /results is the engine's folder, not the user's (EACCES); and a bind-mounted file
        # could not be renamed over or removed even were it writable (EBUSY)
        assert report["swap own records"] in ("EACCES", "EBUSY")
        assert report["remove own records"] in ("EACCES", "EBUSY")
        planted = {name: got for name, got in report.items() if name.startswith("plant ")}
        assert len(planted) >= 7 and "done" not in planted.values(), planted


def test_host_call_answers_never_follow_a_planted_name(hostile) -> None:
    """A link as a request, a FIFO as a request, links at an answer's names; and the cache is
    still dropped on a real request from a non-root container."""
    for report in hostile["reports"]:
        assert report["answers"]["a"]["error"].startswith("unreadable request")
        assert report["answers"]["b"]["error"].startswith("unreadable request")
        assert report["answers"]["c"] == {}  # dropped, and answered beside the planted links
    assert untouched(hostile["victim"])


def test_resume_reruns_an_environment_whose_done_record_was_forged(hostile) -> None:
    for outcomes in hostile["outcomes"]:  # the second sweep did not skip: it failed again
        assert [o.status for o in outcomes] == ["run-failed", "run-failed"]
    assert "already complete" not in hostile["output"]
    for env in hostile["envs"]:  # the first attempt's forged records: set aside, not trusted
        forged = hostile["after_first"][f"{env.id}.jsonl"]
        assert b'"trials_written": 99' in forged
        kept = [p for p in hostile["run"].run_dir.glob(f"{env.id}.jsonl.partial*")]
        assert any(p.read_bytes() == forged for p in kept), kept


def test_a_cold_run_container_cannot_write_core_pattern(
    cpu_env, cpu_image, docker_engine, tmp_path: Path
) -> None:
    """The exact request of a cold run with a user's model file, its harness swapped for the
    attempts; then the same as root in it, which the run never is: /proc/sys stays read-only."""
    model = tmp_path / "mine.keras"
    model.write_bytes(b"not really a model")
    config = load_config(
        None, {"results_dir": str(tmp_path / "results"), "cache": "cold", "models": str(model)}
    )
    run = MatrixRun(config=config, run_id="core-pattern")
    prepare_host_files(run, cpu_env.id)
    request = run_request(cpu_env, run, cpu_image.tag, host_calls=["drop"])
    seen_model = next(b["bind"] for p, b in request["host"]["binds"].items() if p == str(model))
    request["command"] = [
        "-c",
        f"""
import errno
for path in ('/proc/sys/kernel/core_pattern', '/proc/sys/vm/drop_caches', {seen_model!r}):
    try:
        open(path, 'a').close()
        print(path, 'WRITABLE')
    except OSError as exc:
        print(path, errno.errorcode[exc.errno])
""",
    ]
    outputs = {}
    for user in (request["user"], "0:0"):
        container = start_container(
            docker_engine, {**request, "user": user}, entrypoint=["python3"]
        )
        try:
            assert container.wait(timeout=120)["StatusCode"] == 0
            outputs[user] = container.logs().decode()
            container.reload()
            host_config = container.attrs["HostConfig"]
        finally:
            container.remove(force=True)
    docker_engine.volumes.get(request["name"]).remove(force=True)
    assert "WRITABLE" not in "".join(outputs.values()), outputs
    assert not host_config["CapAdd"] and host_config["CapDrop"] == ["ALL"]
    assert "/proc/sys" in host_config["ReadonlyPaths"] and host_config["MaskedPaths"]
    assert request["user"] != "0:0" and "no-new-privileges" in host_config["SecurityOpt"]
    assert model.read_bytes() == b"not really a model"


# ---- models from users: read-only in the container, and no code run from the file -----------

MAKE_MODELS = """
import sys
import keras
plain = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
plain.save(sys.argv[1] + "/plain.keras")
# Code in a model file: a Lambda's Python runs wherever the model is loaded, unless refused.
coded = keras.Sequential([keras.Input((8,)),
                          keras.layers.Lambda(lambda x: (open("/tmp/pwned", "w"), x)[1])])
coded.save(sys.argv[1] + "/coded.keras")
"""


def test_a_user_model_file_runs_in_docker_and_code_in_one_is_refused(
    tmp_path: Path, cpu_image, image_build_root: Path
) -> None:
    made = subprocess.run(
        [sys.executable, "-c", MAKE_MODELS, str(tmp_path)], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr[-2000:]
    digest = hashlib.sha256((tmp_path / "plain.keras").read_bytes()).hexdigest()
    (tmp_path / "matrix.yaml").write_text(MATRIX_YAML)
    proc = matrix(
        tmp_path,
        "run",
        "--backend",
        "docker",
        "--build-dir",
        str(image_build_root),
        "--models",
        "./plain.keras,./coded.keras",
        "--formats",
        "h5",
        "--cache",
        "warm",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--inference-runs",
        "2",
        "--no-report",
    )
    (run_dir,) = [
        p for p in (tmp_path / "results").iterdir() if p.is_dir() and not p.name.startswith(".")
    ]
    got = records(run_dir, "tf2.21-py3.11-cpu")
    env = next(r for r in got if r["kind"] == "environment")
    assert env["keras_safe_mode"] is True
    trials = [r for r in got if r["kind"] == "trial"]
    assert [(t["model"], t["status"]) for t in trials if t["model"] == "plain.keras"] == [
        ("plain.keras", "ok")
    ], proc.stdout + proc.stderr
    (refused,) = [r for r in got if r["kind"] == "failure" and r.get("model") == "coded.keras"]
    assert "safe_mode" in refused["reason"]
    assert hashlib.sha256((tmp_path / "plain.keras").read_bytes()).hexdigest() == digest


def test_records_naming_another_environment_are_not_trusted(tmp_path: Path, record) -> None:
    """Environment A's container writes only A's file, but may write lines claiming to be B:
    trusted, they would add trials to B, or make B's real file look like a duplicate and be
    skipped. Only records naming the file's own environment count."""
    from matrix.results.dataset import load_runs
    from tests.conftest import write_jsonl

    run = tmp_path / "20261129-010000-abcd"
    run.mkdir()
    victim, attacker = "tf2.21-py3.11-cpu", "tf2.16-py3.11-cpu"

    def trials(env_id: str, load_s: float) -> list[dict]:
        return [
            record("trial", env_id=env_id, model="m", format="h5", cache_mode="warm", load_s=load_s)
            for _ in range(3)
        ]

    write_jsonl(run / f"{attacker}.jsonl", trials(victim, 99.0) + trials(attacker, 1.0))
    write_jsonl(run / f"{victim}.jsonl", trials(victim, 2.0))
    ds = load_runs([run])
    loads = ds.trials.groupby("env_id")["load_s"].apply(sorted).to_dict()
    assert loads == {victim: [2.0] * 3, attacker: [1.0] * 3}
    assert any(
        f"{attacker}.jsonl: skipped 3 record(s) naming another environment" in p
        for p in ds.problems
    ), ds.problems
