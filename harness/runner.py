"""Parent process of a harness run: save every artifact, then time loads in interleaved rounds.

The parent never imports TensorFlow. It owns everything that must happen *between* processes:
putting each artifact into the cache state a trial claims and proving it with mincore, shuffling
trial order per round, and writing one record per event so a killed run keeps what it finished.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any

from harness import __version__, cache, calibrate, envinfo, hostcalls
from harness.catalog import ModelOptions, ModelSpec, parse_model
from harness.formats import FORMATS, artifacts_for
from harness.lifetime import die_with_parent
from harness.records import RecordWriter, append_event, utc_now
from harness.runtime import runtime_packages

SAVE_TIMEOUT_S = 3600
TRIAL_TIMEOUT_S = 900
HOST_DROP_TIMEOUT_S = 120
# A trial in its own container also waits for the host to start it and remove it afterwards.
CONTAINER_MARGIN_S = 120
STDERR_TAIL_LINES = 6
# A cold load must show, from inside the trial process, that it read its artifact from storage
# (`load_read_bytes`), else the trial is `invalid`. Loaders that read their file read all of it
# (MobileNetV2 cold-model: 100 % for h5, SavedModel and TFLite; warm: 0 bytes), so less than
# this fraction means part of it was cached after all. TFLite maps its file and may touch only
# what allocate_tensors needs, so there it need only have read something.
COLD_MIN_READ_FRACTION = 0.5
COLD_REFUSED = (
    "dropping the whole page cache needs root with a writable /proc/sys: run as "
    "root; in a container, run `matrix` on the Docker host as root or with the "
    "sudoers grant `matrix doctor` prints (it drops the cache on request); "
    "otherwise use cache mode cold-model"
)


@dataclass
class Options:
    """What to run; mirrors the `python -m harness run` flags."""

    out: str
    run_id: str
    env_id: str
    models: list[str]
    formats: list[str]
    cache_modes: list[str]
    repeats: int = 3
    warmup: int = 1
    inference_runs: int = 10
    process: str = "fresh"  # fresh | reused | both
    seed: int = 1234
    weights: str = "none"
    work: str = ""
    model_options: dict[str, ModelOptions] = field(default_factory=dict)  # by name in `models`


@dataclass
class Saved:
    """Outcome of saving one artifact of one model."""

    status: str  # ok | unsupported | error
    reason: str = ""
    path: str = ""
    reference: str = ""
    save_s: float | None = None
    files: list[str] = field(default_factory=list)
    converter_options: list[str] | None = None  # TFLite: the route and options that worked
    converter_failed: list[str] | None = None  # TFLite: the attempts before it, with errors


@dataclass
class ModelArtifacts:
    spec: ModelSpec
    params: int | None = None
    input: str = ""
    parity_informative: bool | None = None  # the reference varies across the seeded batch
    saved: dict[str, Saved] = field(default_factory=dict)
    described: dict[str, Any] = field(default_factory=dict)  # inputs, outputs, user code cost
    not_keras: str = ""  # why the Keras formats do not apply (a SavedModel Keras cannot rebuild)

    def saved_for(self, fmt: str) -> Saved:
        """The artifact a format loads; `unsupported` for a Keras format of a non-Keras model
        (`savedmodel-keras` shares the SavedModel artifact with `savedmodel`)."""
        if self.not_keras and FORMATS[fmt].import_target == "tensorflow+keras":
            return Saved("unsupported", reason=self.not_keras)
        return self.saved[FORMATS[fmt].artifact]


def _child_overrides() -> dict[str, str]:
    """Children find this harness even when it is not installed, and log less noise.

    Only these variables, not this process's whole environment, go to a trial container: it
    starts from the same image, and its own HOSTNAME and the like must stay its own.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}


def _child_env() -> dict[str, str]:
    """This process's environment for a child process, with `_child_overrides`."""
    return {**os.environ, **_child_overrides()}


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-STDERR_TAIL_LINES:])


def _death(returncode: int) -> str:
    if returncode < 0:
        import signal

        return f"process killed by {signal.Signals(-returncode).name}"
    return f"process exited with code {returncode}"


class Run:
    """One harness run in one environment."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.work = opts.work or os.path.join(opts.out, "artifacts", opts.env_id)
        self.writer = RecordWriter(
            os.path.join(opts.out, f"{opts.env_id}.jsonl"), opts.run_id, opts.env_id
        )
        self.drop_via = _drop_route()
        # container: the host starts a fresh container for every trial (matrix --isolation).
        self.isolation = "container" if hostcalls.offered("trial") else "process"
        self._import_libs: dict[str, dict[str, list[str]]] = {}

    # ---- plan & environment ------------------------------------------------------------------

    def _fresh_cells(self) -> int:
        o = self.opts
        return len(o.models) * len(o.formats) * len(o.cache_modes)

    def _rounds(self) -> int:
        return self.opts.warmup + self.opts.repeats

    def planned_trials(self) -> int:
        o = self.opts
        fresh = self._fresh_cells() * self._rounds() if o.process in ("fresh", "both") else 0
        reused = len(o.models) * len(o.formats) * self._rounds() if o.process != "fresh" else 0
        return fresh + reused

    def write_plan(self) -> None:
        o = self.opts
        self.writer.write(
            "plan",
            models=o.models,
            formats=o.formats,
            cache_modes=o.cache_modes,
            repeats=o.repeats,
            warmup=o.warmup,
            inference_runs=o.inference_runs,
            process=o.process,
            seed=o.seed,
            weights=o.weights,
            trials_planned=self.planned_trials(),
        )

    def write_environment(self) -> bool:
        """Probe TensorFlow in a child; a broken environment is a failure record, not a crash."""
        proc = subprocess.run(
            [sys.executable, "-m", "harness.probe"],
            capture_output=True,
            text=True,
            env=_child_env(),
            timeout=600,
            preexec_fn=die_with_parent(),
        )
        if proc.returncode != 0:
            self.writer.write(
                "failure",
                scope="environment",
                reason=f"TensorFlow does not import: {_tail(proc.stderr)}",
            )
            return False
        self.writer.write(
            "environment",
            tool_version=__version__,
            started=utc_now(),
            drop_caches_allowed=self.drop_via == "local",
            drop_caches_via=self.drop_via,
            **envinfo.machine(),
            calibration_s=calibrate.calibration_s(),
            **json.loads(proc.stdout),
        )
        return True

    # ---- saving ------------------------------------------------------------------------------

    def save_model(self, spec: ModelSpec) -> ModelArtifacts:
        """Save every needed artifact, restarting the worker past any artifact that kills it."""
        result = ModelArtifacts(spec=spec)
        folder = os.path.join(self.work, spec.slug)
        os.makedirs(folder, exist_ok=True)
        pending = artifacts_for(self.opts.formats)
        generation = 0
        while pending:
            events = self._save_generation(spec, folder, pending, generation)
            for event in events:
                kind = event["event"]
                if kind == "model":
                    result.params, result.input = event["params"], event["input"]
                    result.parity_informative = event.get("parity_informative")
                    result.not_keras = event.get("not_keras", "")
                    result.described = {
                        k: event[k]
                        for k in ("inputs", "input_source", "outputs", "user_code_import_s")
                    }
                elif kind == "model_error":
                    return self._model_failed(result, event["reason"])
                elif kind == "model_unsupported":
                    return self._model_unsupported(result, event["reason"])
                elif kind == "saved":
                    result.saved[event["artifact"]] = Saved(
                        "ok",
                        path=event["path"],
                        reference=event["reference"],
                        save_s=event["save_s"],
                        files=cache.files_of(event["path"]),
                        converter_options=event.get("tflite_converter_options"),
                        converter_failed=event.get("tflite_converter_failed"),
                    )
                elif kind in ("unsupported", "error"):
                    result.saved[event["artifact"]] = Saved(kind, reason=event["reason"])
            if result.params is None:
                return self._model_failed(
                    result,
                    events[-1]["reason"]
                    if events
                    else "the save worker died before building the model",
                )
            pending = [a for a in pending if a not in result.saved]
            generation += 1
        return result

    def _save_generation(
        self, spec: ModelSpec, folder: str, pending: list[str], generation: int
    ) -> list[dict[str, Any]]:
        """Run one save worker; if it dies, blame the artifact it had started."""
        events_path = os.path.join(folder, f"events-{generation}.jsonl")
        spec_path = os.path.join(folder, f"save-{generation}.json")
        with open(spec_path, "w") as handle:
            json.dump(
                {
                    "model": spec.to_json(),
                    "weights": self.opts.weights,
                    "artifacts": pending,
                    "folder": folder,
                    "events": events_path,
                    "generation": generation,
                },
                handle,
            )
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "harness.save_worker", spec_path],
                capture_output=True,
                text=True,
                env=_child_env(),
                timeout=SAVE_TIMEOUT_S,
                preexec_fn=die_with_parent(),
            )
            returncode, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            returncode, stderr = -9, f"timed out after {SAVE_TIMEOUT_S} s {exc.stderr or ''}"
        events = _read_events(events_path)
        done = {e.get("artifact") for e in events if e["event"] != "start"}
        started = [e["artifact"] for e in events if e["event"] == "start"]
        if returncode != 0:
            reason = f"{_death(returncode)}: {_tail(stderr)}"
            culprit = next((a for a in reversed(started) if a not in done), None)
            if culprit:
                append_event(events_path, event="error", artifact=culprit, reason=reason)
            elif not any(e["event"] == "model" for e in events):
                append_event(events_path, event="model_error", reason=reason)
            else:  # died between artifacts: charge the next one so the loop always advances
                nxt = next(a for a in pending if a not in done)
                append_event(events_path, event="error", artifact=nxt, reason=reason)
            events = _read_events(events_path)
        return events

    def _model_failed(self, result: ModelArtifacts, reason: str) -> ModelArtifacts:
        self.writer.write("failure", scope="model", model=result.spec.slug, reason=reason)
        for name in artifacts_for(self.opts.formats):
            result.saved[name] = Saved("error", reason=f"model could not be built: {reason}")
        return result

    def _model_unsupported(self, result: ModelArtifacts, reason: str) -> ModelArtifacts:
        """An input the tool cannot feed: every format of the model is `unsupported`, saying so."""
        for name in artifacts_for(self.opts.formats):
            result.saved[name] = Saved("unsupported", reason=reason)
        return result

    def write_artifact_records(self, arts: ModelArtifacts) -> None:
        for fmt in self.opts.formats:
            saved = arts.saved_for(fmt)
            fields: dict[str, Any] = {
                "cell_id": f"{self.opts.env_id}/{arts.spec.slug}/{fmt}",
                "model": arts.spec.slug,
                "format": fmt,
                "status": saved.status,
                "params": arts.params,
                **arts.described,
            }
            if saved.status != "ok":
                self.writer.write("artifact", reason=saved.reason, **fields)
                continue
            sizes = [os.path.getsize(f) for f in saved.files]
            floor, _ = cache.io_floor(saved.files)
            self.writer.write(
                "artifact",
                path=saved.path,
                bytes=sum(sizes),
                files=len(sizes),
                largest_file_bytes=max(sizes, default=0),
                save_s=saved.save_s,
                io_floor_s=floor,
                storage=envinfo.storage_of(saved.path),
                parity_informative=arts.parity_informative,
                tflite_converter_options=saved.converter_options,
                tflite_converter_failed=saved.converter_failed,
                **fields,
            )

    # ---- trials ------------------------------------------------------------------------------

    def _libs(self, target: str) -> dict[str, list[str]]:
        """Per package, the library files the import of `target` reads (none found: left out)."""
        if target not in self._import_libs:
            found = {name: cache.package_files(name) for name in runtime_packages(target)}
            self._import_libs[target] = {name: files for name, files in found.items() if files}
        return self._import_libs[target]

    @staticmethod
    def _check_libs(mode: str, libs: dict[str, list[str]]) -> tuple[dict[str, float], str]:
        """(resident fraction per package, reason the trial is invalid or "").

        Warm: every package must be resident, each on its own, so a small one (Keras's
        bytecode) is not hidden behind TensorFlow's gigabyte. Cold: the runtime's own package
        (the first: TensorFlow or LiteRT, nearly all of a cold import) must not be; numpy, h5py
        and Keras are recorded but do not decide, since any process of the machine that maps
        numpy (the local orchestrator does) would otherwise make every cold trial invalid.
        """
        per_package = {name: cache.residency(files) for name, files in libs.items()}
        if not libs:
            return per_package, (
                "none of the runtime's library files were found, so the "
                "import's cache state cannot be proven"
            )
        if mode == "cold":
            runtime = next(iter(per_package))
            stayed = {
                n: r for n, r in per_package.items() if n == runtime and r > cache.COLD_MAX_RESIDENT
            }
            what = "the import was not cold: {} stayed cached (another process has them mapped)"
        else:
            stayed = {n: r for n, r in per_package.items() if r < cache.WARM_MIN_RESIDENT}
            what = "the runtime's libraries did not stay cached: {}"
        if not stayed:
            return per_package, ""
        return per_package, what.format(
            ", ".join(f"{n} {r:.1%} resident" for n, r in stayed.items())
        )

    def _prepare_artifact(self, mode: str, files: list[str]) -> tuple[str, float, str]:
        """Put the artifact in the claimed cache state and prove it.

        Returns (eviction method, resident fraction, reason the trial is invalid or "").
        """
        if mode == "cold" and self.drop_via == "host":
            hostcalls.call_host("drop", HOST_DROP_TIMEOUT_S)
            method = "host-drop_caches"
        elif mode == "cold":
            cache.drop_all_caches()
            method = "drop_caches"
        elif mode == "cold-model":
            cache.evict(files)
            method = "fadvise"
        else:
            cache.read_all(files)
            method = "read"
        resident = cache.residency(files)
        if mode != "warm" and resident > cache.COLD_MAX_RESIDENT:
            return method, resident, f"eviction did not take: {resident:.1%} of it resident"
        if mode == "warm" and resident < cache.WARM_MIN_RESIDENT:
            return method, resident, f"warm read did not stay cached: {resident:.1%} resident"
        return method, resident, ""

    @staticmethod
    def _cold_load_unread(mode: str, target: str, files: list[str], read: int | None) -> str:
        """Reason a cold load is invalid because it read (almost) nothing from storage, or "".

        No verdict where /proc/self/io is unreadable (`read` None): mincore's proof stands alone.
        """
        if mode == "warm" or read is None:
            return ""
        size = sum(os.path.getsize(f) for f in files)
        floor = 1 if target == "tflite" else COLD_MIN_READ_FRACTION * size
        if read >= floor:
            return ""
        return (
            f"the cold load read {read} of the artifact's {size} bytes from storage: "
            "it was cached after all"
        )

    def _spawn_trial(
        self, fmt: str, saved: Saved, arts: ModelArtifacts, loads: int
    ) -> dict[str, Any]:
        # In its own container the worker writes its result where the host's mount reaches.
        shared = hostcalls.calls_dir() if self.isolation == "container" else None
        with tempfile.TemporaryDirectory(prefix="trial-", dir=shared) as tmp:
            result_path = os.path.join(tmp, "result.json")
            argv = [
                sys.executable,
                "-m",
                "harness.trial_worker",
                "--format",
                fmt,
                "--artifact",
                saved.path,
                "--input",
                arts.input,
                "--reference",
                saved.reference,
                "--inference-runs",
                str(self.opts.inference_runs),
                "--loads",
                str(loads),
                "--result",
                result_path,
            ]
            for path in arts.spec.options.code:
                argv += ["--code", path]
            try:
                returncode, stderr = self._run_worker(argv)
            except subprocess.TimeoutExpired:
                return {"error": f"trial timed out after {TRIAL_TIMEOUT_S} s"}
            except hostcalls.HostCallError as exc:
                return {"error": f"trial container: {exc}"}
            if os.path.exists(result_path):
                with open(result_path) as handle:
                    return json.load(handle)
            return {"error": f"{_death(returncode)}: {_tail(stderr)}"}

    def _run_worker(self, argv: list[str]) -> tuple[int, str]:
        """(exit code, stderr) of the trial worker: a child process, or a fresh container."""
        if self.isolation == "container":
            answer = hostcalls.call_host(
                "trial",
                TRIAL_TIMEOUT_S + CONTAINER_MARGIN_S,
                argv=argv,
                env=_child_overrides(),
                timeout_s=TRIAL_TIMEOUT_S,
            )
            return int(answer["exit_code"]), str(answer["stderr"])
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=_child_env(),
            timeout=TRIAL_TIMEOUT_S,
            preexec_fn=die_with_parent(),
        )
        return proc.returncode, proc.stderr

    def prepare_cache(self, mode: str, files: list[str], target: str) -> tuple[dict[str, Any], str]:
        """Artifact and runtime libraries in the state `mode` claims, proven just before a trial.

        Returns the proof's record fields and the reason the trial is invalid (or ""). Public
        because bench/harness_overhead.py prepares its bare loads exactly this way.
        """
        libs = self._libs(target)
        if mode != "cold":  # only `cold` times a cold import: no trial inherits the last one's
            for lib_files in libs.values():
                cache.read_all(lib_files)
        method, resident, invalid = self._prepare_artifact(mode, files)
        by_package, libs_invalid = self._check_libs(mode, libs)
        proof = {
            "eviction": method,
            "resident_before": resident,
            "import_libs_resident_before": cache.residency(
                f for lib_files in libs.values() for f in lib_files
            ),
            "import_libs_resident": by_package,
            "import_libs_checked": list(libs),
        }
        return proof, invalid or libs_invalid

    def trial(
        self,
        arts: ModelArtifacts,
        fmt: str,
        mode: str,
        rnd: int,
        order: int,
        process: str = "fresh",
    ) -> None:
        """Prepare the cache, run one trial process, write its record(s)."""
        saved = arts.saved_for(fmt)
        target = FORMATS[fmt].import_target
        suffix = "reused" if process == "reused" else mode
        base = {
            "cell_id": f"{self.opts.env_id}/{arts.spec.slug}/{fmt}/{suffix}",
            "model": arts.spec.slug,
            "format": fmt,
            "cache_mode": mode,
            "process": process,
            "round": rnd,
            "order": order,
            "import_target": target,
            "isolation": self.isolation,
        }
        loads = self._rounds() if process == "reused" else 1
        phase = "warmup" if rnd < self.opts.warmup else "measure"
        proof, invalid = self.prepare_cache(mode, saved.files, target)
        base.update(proof)
        result = self._spawn_trial(fmt, saved, arts, loads)
        common = {
            k: result.get(k)
            for k in (
                "import_s",
                "startup_s",
                "device_init_s",
                "user_code_import_s",
                "peak_rss_mb",
                "tflite_runtime",
                "container_id",
            )
        }
        if "error" in result:
            self.writer.write(
                "trial", status="error", reason=result["error"], phase=phase, **base, **common
            )
            return
        for index, load in enumerate(result["loads"]):
            if process == "reused":
                phase = "warmup" if index < self.opts.warmup else "measure"
            why = invalid or self._cold_load_unread(
                mode, target, saved.files, load["load_read_bytes"]
            )
            status = "invalid" if why else "ok"
            extra = {"reason": why} if why else {}
            self.writer.write(
                "trial",
                status=status,
                phase=phase,
                load_index=index,
                **base,
                **common,
                **load,
                **extra,
            )

    def not_runnable(self, arts: ModelArtifacts, fmt: str, mode: str) -> tuple[str, str] | None:
        """(status, reason) when a cell cannot be timed at all; it then gets one record."""
        saved = arts.saved_for(fmt)
        if saved.status != "ok":
            return saved.status, saved.reason
        if mode == "cold" and not self.drop_via:
            return "unsupported", COLD_REFUSED
        return None

    def run_trials(self, all_arts: list[ModelArtifacts]) -> None:
        """Fresh-process rounds (each a new shuffle of every cell), then reused-process loads.

        A cell that cannot be timed at all gets exactly one record with its reason.
        """
        o = self.opts
        fresh = o.process in ("fresh", "both")
        cells, blocked = [], []
        for arts in all_arts:
            for fmt in o.formats:
                for mode in o.cache_modes if fresh else ():
                    verdict = self.not_runnable(arts, fmt, mode)
                    if verdict:
                        blocked.append((arts, fmt, mode, verdict))
                    else:
                        cells.append((arts, fmt, mode))
        reused = []
        if o.process != "fresh":
            reused = [
                (a, f)
                for a in all_arts
                for f in o.formats
                if self.not_runnable(a, f, "warm") is None
            ]
        scheduled = len(blocked) + (len(cells) + len(reused)) * self._rounds()
        self.writer.write("schedule", trials_scheduled=scheduled)
        for arts, fmt, mode, (status, reason) in blocked:
            self.writer.write(
                "trial",
                cell_id=f"{o.env_id}/{arts.spec.slug}/{fmt}/{mode}",
                model=arts.spec.slug,
                format=fmt,
                cache_mode=mode,
                process="fresh",
                phase="measure",
                status=status,
                reason=reason,
            )
        for rnd in range(self._rounds()) if cells else ():
            order = list(cells)
            random.Random(f"{o.seed}-{rnd}").shuffle(order)
            for position, (arts, fmt, mode) in enumerate(order):
                self.trial(arts, fmt, mode, rnd, position)
        for position, (arts, fmt) in enumerate(reused):
            self.trial(arts, fmt, "warm", 0, position, process="reused")

    # ---- whole run ---------------------------------------------------------------------------

    def execute(self) -> int:
        began = time.perf_counter()
        self.write_plan()
        if not self.write_environment():
            self.writer.close()
            return 1
        all_arts = []
        for name in self.opts.models:
            options = self.opts.model_options.get(name, ModelOptions())
            arts = self.save_model(replace(parse_model(name), options=options))
            self.write_artifact_records(arts)
            all_arts.append(arts)
        self.run_trials(all_arts)
        self.writer.write(
            "done",
            trials_written=self.writer.trials_written,
            elapsed_s=round(time.perf_counter() - began, 3),
            calibration_end_s=calibrate.calibration_s(),
        )
        self.writer.close()
        return 0


def _drop_route() -> str | None:
    """Who drops the page cache for `cold` trials: this process, the host on request, or nobody."""
    if cache.drop_caches_allowed():
        return "local"
    if hostcalls.offered("drop"):
        return "host"
    return None


def _read_events(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    events = []
    with open(path) as handle:
        for line in handle:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by the worker's death
    return events
