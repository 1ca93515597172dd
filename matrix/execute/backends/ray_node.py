"""The node side of `--backend ray`: one environment measured on this machine, as `matrix run`.

A Ray task (`matrix.execute.backends.ray`) starts this module as a child process per environment
and streams back what it writes. A process of its own rather than code in the Ray worker: it
holds its results lock, turns SIGTERM into the Ctrl-C stop (signal handlers need the main thread,
which a Ray task does not own), and dies with the worker when Ray kills that (PR_SET_PDEATHSIG).
Nothing here imports Ray: the node's own `docker` or `venv` backend does the work.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

import harness
import matrix
from harness.lifetime import die_with_parent
from matrix.errors import ExitCode, MatrixError
from matrix.execute.backends import Backend, create_backend
from matrix.execute.crossload import CrossLoadStep
from matrix.execute.matrix_run import MatrixRun
from matrix.plan.config import MatrixConfig
from matrix.plan.environments import Environment
from matrix.plan.pythons import find_pythons
from matrix.results.reader import MANIFEST

POLL_S = 0.1  # how often the child's files are read for new lines: as the driver's own sweep
STOP_GRACE_S = 50.0  # the child's own stop: the harness gets 15 s per step, three steps
CONSOLE_LINES = 20  # of the child's output, quoted when it failed before measuring
SOURCE_SUFFIXES = (".py", ".yaml", ".j2", ".css", ".js")
RUNS_FOLDER = "ray-runs"  # under the build folder: each attempt's results folder on a node


@dataclass(frozen=True)
class NodeSpec:
    """What the driver sends a node for one environment: plain data, the same on every node."""

    run_id: str
    env: dict[str, Any]  # dataclasses.asdict(Environment)
    config: dict[str, Any]  # MatrixConfig.model_dump(mode="json")
    build_root: str  # absolute: the same folder on every node (venvs, images' contexts)
    attempt: int  # 1, or 2 for the one retry after the first attempt's node died
    driver_run_dir: str  # where the driver writes what is streamed: the logs a reason names
    image: str = ""  # the reference the driver pushed to `--registry`: pulled, never built here
    savers: tuple[dict[str, Any], ...] = ()  # a cross-load's loader: `CrossLoadStep.savers`

    def environment(self) -> Environment:
        fields = dict(self.env)
        fields["packages"] = tuple(fields["packages"])
        fields["env_vars"] = tuple(tuple(pair) for pair in fields["env_vars"])
        return Environment(**fields)

    def workdir(self) -> Path:
        """This attempt's results folder on the node, under the build folder (a real disk:
        artifacts measured cold must not sit on a tmpfs), removed when the task ends."""
        step = "-crossload" if self.savers else ""
        folder = f"{self.environment().id}{step}-{self.attempt}"
        return Path(self.build_root) / RUNS_FOLDER / self.run_id / folder

    def matrix_run(self, config: MatrixConfig) -> MatrixRun:
        """The run as the node's `matrix` measures it: the environment's own, or a loader's
        step of the cross-load (records under `crossload/`)."""
        if self.savers:  # every saver's artifacts are brought here (`stream`)
            savers = tuple(self.savers)
            return CrossLoadStep(config=config, run_id=self.run_id, savers=savers, received=True)
        return MatrixRun(config=config, run_id=self.run_id)


def node_matrix(config: dict[str, Any], results_dir: Path | None = None) -> MatrixConfig:
    """The driver's matrix as this node measures it: with its node backend, into its folder."""
    fields = {**config, "backend": config["node_backend"]}
    if results_dir is not None:
        fields["results_dir"] = str(results_dir)
    return MatrixConfig.model_validate(fields)


def node_backend(config: MatrixConfig, build_root: Path) -> Backend:
    """This node's own backend for the matrix (`auto`: docker if its daemon answers)."""
    return create_backend(config, build_root, Console(file=io.StringIO()))


def survey(config: dict[str, Any], build_root: str) -> dict[str, Any]:
    """What the driver plans with: this node's code version, its Pythons, its backend and the
    environments that backend can make here (with the reasons for the others)."""
    answer: dict[str, Any] = {
        "tool": tool_version(),
        "hostname": socket.gethostname(),
        "pythons": sorted(find_pythons()),
        "niceness": unnice(),
    }
    node_config = node_matrix(config)
    try:
        backend = node_backend(node_config, Path(build_root))
        environments, skipped = backend.environments(node_config)
    except MatrixError as exc:
        return answer | {"error": str(exc)}
    return answer | {
        "backend": backend.name,
        "environments": [asdict(env) | {"id": env.id} for env in environments],
        "skipped": [asdict(cell) for cell in skipped],
    }


def cleanup(config: dict[str, Any], build_root: str, run_id: str) -> str:
    """After Ctrl-C, what the run's tasks killed outright left on this node: containers (the
    backend's own cleanup) and the run's folders. Says what it removed."""
    said = node_backend(node_matrix(config), Path(build_root)).cleanup(run_id)
    _remove(Path(build_root) / RUNS_FOLDER / run_id)
    return f"{socket.gethostname()}: {said}" if said else ""


def unnice() -> int:
    """Undo the niceness Ray gives its workers (15), which the harness would inherit: a
    measurement must not run at a lower priority than the node's own processes. Only a
    privileged worker can; otherwise the niceness stays, and is returned for the survey
    (`ray start` with RAY_worker_niceness=0 avoids it: docs/ray.md)."""
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    return os.getpriority(os.PRIO_PROCESS, 0)


def tool_version() -> str:
    """`tf-load-matrix 0.1.0 (source 3f2a9c1b7d4e)`: the installed release and a digest of the
    code that runs, so a node with other code (an edited checkout) is told apart too."""
    try:
        release = importlib.metadata.version("tf-load-matrix")
    except importlib.metadata.PackageNotFoundError:
        release = "not installed"
    digest = hashlib.sha256()
    for package in (harness, matrix):
        root = Path(package.__path__[0]).resolve()
        for path in sorted(root.rglob("*")):
            if path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts:
                digest.update(f"{package.__name__}/{path.relative_to(root)}\0".encode())
                digest.update(path.read_bytes())
    return f"tf-load-matrix {release} (source {digest.hexdigest()[:12]})"


def stream(
    spec: NodeSpec, stamp: dict[str, Any], packs: tuple[dict[str, Any], ...] = ()
) -> Iterator[dict[str, Any]]:
    """Measure `spec`'s environment in a child `matrix` and yield what it writes, as written.

    Items: `{"records": bytes, "log": bytes, "build_log": bytes}` (new whole record lines,
    `stamp` added to the `environment` record; new log bytes), then, in a run that
    cross-loads, `{"artifacts": pack}` (`pack_artifacts`), then one `{"end": {...}}`: the
    child's exit code and its manifest outcome. A loader of the cross-load is given the
    savers' `packs`, unpacked where its harness reads them before it starts. Leaving early (Ray
    closes the generator when the driver cancels the task) stops the child as Ctrl-C would,
    then removes the folder.
    """
    unnice()
    workdir = spec.workdir()
    _remove(workdir)  # a killed attempt's: its manifest would "resume"
    workdir.mkdir(parents=True)
    env_id = spec.environment().id
    run = spec.matrix_run(node_matrix(spec.config, workdir))
    # where this node's backend keeps artifacts: a saver's to send, a loader's copies
    keeper = node_backend(run.config, Path(spec.build_root)) if run.config.cross_load else None
    try:
        for pack in packs:
            assert keeper is not None  # only a cross-load has packs
            unpack_artifacts(pack, keeper.artifacts_copy(run, env_id, pack["env_id"]))
    except BaseException:
        _drop(keeper, run, env_id, workdir)
        raise
    run_dir = run.run_dir
    records = _Tail(run_dir / f"{env_id}.jsonl", whole_lines=True)
    rewrite = _Rewrite(stamp, str(run_dir), spec.driver_run_dir)
    logs = {
        "log": _Tail(run_dir / f"{env_id}.log"),
        "build_log": _Tail(run_dir / f"{env_id}.build.log"),
    }
    console = workdir / "node-console.log"
    with console.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", __name__, str(workdir)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the stop is ours to send, once (see _stop)
            preexec_fn=die_with_parent(),
        )
    try:
        assert child.stdin is not None
        child.stdin.write(json.dumps(asdict(spec)).encode())
        child.stdin.close()
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=POLL_S)
            code = child.poll()  # read before the files: whatever it wrote by its exit is seen
            item = {"records": rewrite.lines(records.read())}
            item |= {name: tail.read() for name, tail in logs.items()}
            if any(item.values()):
                yield item
            if code is not None:
                break
        saved = keeper.saved_artifacts(run, env_id) if keeper and not spec.savers else None
        if saved is not None:
            yield {"artifacts": pack_artifacts(saved, env_id)}
        yield {"end": _end(code, run_dir, env_id, console, rewrite)}
    finally:
        _stop(child)
        _drop(keeper, run, env_id, workdir)
        with contextlib.suppress(OSError):  # the run's folder, once its last attempt is gone
            workdir.parent.rmdir()


def pack_artifacts(folder: Path, env_id: str) -> dict[str, Any]:
    """`env_id`'s artifacts folder as one tar, for the driver to keep in Ray's object store
    until the cross-load's loaders, on whichever node, unpack it: the folder itself goes when
    the task ends. Its sha256 is checked where it is unpacked."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=".")
    data = buffer.getvalue()
    return {"env_id": env_id, "tar": data, "sha256": hashlib.sha256(data).hexdigest()}


def unpack_artifacts(pack: dict[str, Any], folder: Path) -> None:
    """A saver's `pack` into `folder`, read-only, once its digest matches. The `data` filter
    refuses what a measured environment could have planted in its folder to reach outside it
    (absolute paths, links out, devices)."""
    digest = hashlib.sha256(pack["tar"]).hexdigest()
    if digest != pack["sha256"]:
        raise ValueError(
            f"the artifacts of {pack['env_id']} arrived with sha256 {digest}, not the "
            f"{pack['sha256']} they were packed with"
        )
    folder.mkdir(parents=True, exist_ok=True)  # a docker volume's folder is there, empty
    with tarfile.open(fileobj=io.BytesIO(pack["tar"])) as tar:
        tar.extractall(folder, filter="data")
    for path in [*folder.rglob("*"), folder]:
        if not path.is_symlink():  # a link inside the folder: its target is in the list
            path.chmod(0o555 if path.is_dir() else 0o444)


def _drop(keeper: Backend | None, run: MatrixRun, env_id: str, workdir: Path) -> None:
    """Remove the attempt's folder and the artifact copies its backend made elsewhere (a
    saver's run reads no one's artifacts: none)."""
    if keeper is not None:
        keeper.drop_artifacts_copies(run, env_id)
    _remove(workdir)


def _remove(folder: Path) -> None:
    """Remove `folder`, its read-only unpacked artifacts included (a folder without write
    permission keeps its files from anyone but root)."""
    for path in folder.rglob("*") if folder.is_dir() else ():
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


def _end(code: int, run_dir: Path, env_id: str, console: Path, rewrite: _Rewrite) -> dict[str, Any]:
    """The child's exit code and its manifest's outcome for the environment (none when it
    failed before its sweep began: then the last lines it printed say why)."""
    end: dict[str, Any] = {"returncode": code, "outcome": None, "backend": "", "console": ""}
    with contextlib.suppress(OSError, ValueError, KeyError, StopIteration):
        manifest = json.loads((run_dir / MANIFEST).read_text())
        end["backend"] = manifest["backend"]
        outcome = next(o for o in manifest["outcomes"] if o.get("env_id") == env_id)
        end["outcome"] = outcome | {"reason": rewrite.reason(str(outcome.get("reason", "")))}
    if end["outcome"] is None:
        with console.open(encoding="utf-8", errors="replace") as handle:
            end["console"] = "".join(deque(handle, maxlen=CONSOLE_LINES)).strip()
    return end


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Ctrl-C's stop for the child (SIGTERM: harness stopped, containers removed), then kill."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
    child.wait()


@dataclass(frozen=True)
class _Rewrite:
    """What changes in a record on its way to the driver: the node's `stamp` on the
    `environment` record (where the records come from), and in a failure's reason the node's
    run folder, which is removed, for the driver's, which holds the same logs."""

    stamp: dict[str, Any]
    node_dir: str
    driver_dir: str

    def reason(self, text: str) -> str:
        return text.replace(self.node_dir, self.driver_dir)

    def lines(self, data: bytes) -> bytes:
        if b'"environment"' not in data and b'"failure"' not in data:
            return data
        out = []
        for line in data.splitlines(keepends=True):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                kind = record.get("kind") if isinstance(record, dict) else None
                if kind == "environment":
                    line = _line(record | self.stamp)
                elif kind == "failure" and isinstance(record.get("reason"), str):
                    line = _line(record | {"reason": self.reason(record["reason"])})
            out.append(line)
        return b"".join(out)


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, allow_nan=False) + "\n").encode()


class _Tail:
    """The bytes appended to a file since the last read (only whole lines, if asked)."""

    def __init__(self, path: Path, whole_lines: bool = False) -> None:
        self._path, self._whole_lines, self._offset = path, whole_lines, 0

    def read(self) -> bytes:
        try:
            with self._path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return b""
        if self._whole_lines:
            data = data[: data.rfind(b"\n") + 1]
        self._offset += len(data)
        return data


def main() -> int:
    """The child: the spec on stdin, its results folder as the argument; `matrix run`'s steps
    for one environment, and its exit codes (0 ok, 1 failed and recorded, 130/143 stopped)."""
    from matrix.execute.lock import run_lock
    from matrix.execute.stopping import interrupted_code, sigterm_as_ctrl_c
    from matrix.execute.sweep import Sweep

    spec = NodeSpec(**json.loads(sys.stdin.read()))
    results_dir = Path(sys.argv[1])
    console = Console(file=sys.stdout, width=120)
    try:
        with sigterm_as_ctrl_c():
            config = node_matrix(spec.config, results_dir)
            backend = _backend(spec, config, console)
            with run_lock(results_dir, run_id=spec.run_id):
                reclaimed = backend.reclaim()
                if reclaimed:
                    console.print(reclaimed)
                run = spec.matrix_run(config)
                (outcome,) = Sweep(run, backend, [spec.environment()], [], console).run()
    except MatrixError as exc:
        console.print(f"error: {exc}")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(interrupted_code())
    return int(ExitCode.OK) if outcome.status == "ok" else int(ExitCode.CELLS_FAILED)


def _backend(spec: NodeSpec, config: MatrixConfig, console: Console) -> Backend:
    """This node's backend for the spec: with an image the driver pushed to `--registry`, the
    docker backend pulling it (`--registry` needs `--node-backend docker`)."""
    if not spec.image:
        return create_backend(config, Path(spec.build_root), console)
    from matrix.execute.backends.docker import DockerBackend

    pulls = {spec.environment().id: spec.image}
    return DockerBackend.create(config, Path(spec.build_root), pulls=pulls)


if __name__ == "__main__":
    sys.exit(main())
