"""Parent process of a harness run: save every artifact, then time loads in interleaved rounds.

The parent never imports TensorFlow. It owns everything that must happen *between* processes:
putting each artifact into the cache state a trial claims and proving it with mincore, shuffling
trial order per round, and writing one record per event so a killed run keeps what it finished.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any

from harness import __version__, artifact_cache, cache, calibrate, envinfo, hostcalls, precision
from harness.artifact_cache import ArtifactCache
from harness.catalog import ModelOptions, ModelSpec, parse_model
from harness.contract import RunSpec
from harness.formats import ARTIFACTS, FORMATS, artifacts_for
from harness.lifetime import die_with_parent
from harness.records import RecordWriter, append_event, utc_now
from harness.runtime import runtime_packages
from harness.zygote import ForkFailure, Zygote

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
# Fresh-process controls of forked cells per environment: the fewest paired loads whose median
# has a 95 % interval at all (7 and 8 pairs give the same (min, max) interval); each costs a
# fresh process, a forked trial's cost twice over.
CONTROL_PAIRS = precision.MIN_REPEATS
# A forked child still running after FACTOR times the run's slowest trial so far (and at least
# FLOOR seconds) is taken for hung: see Run._fork_worker.
FORK_TIMEOUT_FACTOR = 4
FORK_TIMEOUT_FLOOR_S = 30
# What a trial worker's result says about its process, on each of the trial's records.
RESULT_FIELDS = (
    "import_s",
    "startup_s",
    "device_init_s",
    "user_code_import_s",
    "peak_rss_mb",
    "tflite_runtime",
    "container_id",
)
COLD_REFUSED = (
    "dropping the whole page cache needs root with a writable /proc/sys: run as "
    "root; in a container, run `matrix` on the Docker host as root or with the "
    "sudoers grant `matrix doctor` prints (it drops the cache on request); "
    "otherwise use cache mode cold-model"
)


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
    reused_from: str | None = None  # the run that saved it, when taken from the artifact cache
    api: str = ""  # a cross-load's loading API (harness.crossload); "" for the format's own


@dataclass
class Cell:
    """One (model, format, cache mode) in the trial rotation, and what it has measured."""

    arts: ModelArtifacts
    fmt: str
    mode: str
    process: str  # how its measured trials are made now: fresh | forked
    controls: int = 0  # fresh-process control trials still to make beside forked ones
    rounds: set[int] = field(default_factory=set)  # the measured rounds it took part in
    loads: dict[str, list[float]] = field(default_factory=lambda: {"fresh": [], "forked": []})
    attempts: dict[str, int] = field(default_factory=lambda: {"fresh": 0, "forked": 0})
    paired: dict[int, dict[str, float]] = field(default_factory=dict)  # round → process → load
    done: bool = False

    def cell_id(self, env_id: str) -> str:
        return f"{env_id}/{self.arts.spec.slug}/{self.fmt}/{self.mode}"

    def record(self, process: str, rnd: int, load: float | None) -> None:
        """Count one measured trial of `process` (its load time, None if not ok)."""
        self.rounds.add(rnd)
        self.attempts[process] += 1
        if load is not None:
            self.loads[process].append(load)
            self.paired.setdefault(rnd, {})[process] = load


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

    def __init__(self, opts: RunSpec, model_options: dict[str, ModelOptions] | None = None) -> None:
        self.opts = opts
        self.model_options = model_options or {}  # by name in `models` (opts.model_options)
        self.work = opts.work or os.path.join(opts.out, "artifacts", opts.env_id)
        self.writer = RecordWriter(
            os.path.join(opts.out, f"{opts.env_id}.jsonl"), opts.run_id, opts.env_id
        )
        self.drop_via = _drop_route()
        # container: the host starts a fresh container for every trial (matrix --isolation).
        self.isolation = "container" if hostcalls.offered("trial") else "process"
        self._import_libs: dict[str, dict[str, list[str]]] = {}
        self._zygotes: dict[str, Zygote] = {}
        self._environment: dict[str, Any] | None = None  # for artifact cache keys
        self._forking = True  # until a forked child hangs or forked loads disagree
        self._fork_check_due = False
        self._slowest_s = 0.0  # the slowest trial so far, for a forked child's timeout

    # ---- plan & environment ------------------------------------------------------------------

    def _fresh_cells(self) -> int:
        o = self.opts
        return len(o.models) * len(o.formats) * len(o.cache_modes)

    def _rounds(self) -> int:
        """Loads of a reused process (warm-up included): with `--repeats auto`, the fewest a
        cell gets (the process is one sample however many loads it makes)."""
        return self.opts.warmup + (self.opts.repeats or precision.MIN_REPEATS)

    def planned_trials(self) -> int:
        """Trial records at most: every cell to its repeats (auto: its maximum), the forked
        cells' fresh controls, the reused-process loads."""
        o = self.opts
        rounds = o.warmup + (o.repeats or o.max_repeats)
        fresh = self._fresh_cells() * rounds if o.process in ("fresh", "both") else 0
        forks = o.trial_process == "forked" and any(m != "cold" for m in o.cache_modes)
        controls = CONTROL_PAIRS if fresh and forks else 0
        reused = len(o.models) * len(o.formats) * self._rounds() if o.process != "fresh" else 0
        return fresh + controls + reused

    def write_plan(self, **extra: Any) -> None:
        """The `plan` record; `extra`: the fields a cross-load adds (docs/records.md)."""
        o = self.opts
        self.writer.write(
            "plan",
            models=o.models,
            formats=o.formats,
            cache_modes=o.cache_modes,
            repeats=o.repeats or "auto",
            max_repeats=o.max_repeats,
            precision=o.precision,
            fresh_artifacts=o.fresh_artifacts,
            warmup=o.warmup,
            inference_runs=o.inference_runs,
            process=o.process,
            trial_process=o.trial_process,
            seed=o.seed,
            weights=o.weights,
            trials_planned=self.planned_trials(),
            **extra,
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
        """Save every needed artifact, restarting the worker past any artifact that kills it;
        with an artifact cache, reuse what an earlier run saved and keep what this one saves."""
        result = ModelArtifacts(spec=spec)
        folder = os.path.join(self.work, spec.slug)
        os.makedirs(folder, exist_ok=True)
        pending = artifacts_for(self.opts.formats)
        store = self._artifact_cache(spec)
        if store and not self.opts.fresh_artifacts:
            self._reuse(store, result, folder, pending)
            pending = [a for a in pending if a not in result.saved]
        saving = list(pending)
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
        if store:
            self._keep(store, result, folder, saving)
        return result

    def _artifact_cache(self, spec: ModelSpec) -> ArtifactCache | None:
        """The cache entries of `spec` in this environment's cache folder, if one was given."""
        if not self.opts.artifact_cache:
            return None
        if self._environment is None:
            self._environment = artifact_cache.environment_fingerprint()
        key = artifact_cache.model_key(spec, self.opts.weights, self._environment)
        return ArtifactCache(self.opts.artifact_cache, key)

    def _reuse(
        self, store: ArtifactCache, result: ModelArtifacts, folder: str, pending: list[str]
    ) -> None:
        """Take the artifacts an earlier run saved (intact) into `folder`, as saved there."""
        model, hits = store.reuse(pending, folder)
        if not hits:
            return
        result.params = model["params"]
        result.input = os.path.join(folder, "parity-inputs.npz")
        result.parity_informative = model["parity_informative"]
        result.not_keras = model["not_keras"]
        result.described = model["described"]
        for name, entry in hits.items():
            saved = entry["saved"]
            path = os.path.join(folder, ARTIFACTS[name].filename)
            ok = saved["status"] == "ok"
            result.saved[name] = Saved(
                saved["status"],
                reason=saved["reason"],
                path=path if ok else "",
                reference=os.path.join(folder, artifact_cache.reference_name(name)) if ok else "",
                save_s=saved["save_s"],
                files=cache.files_of(path) if ok else [],
                converter_options=saved["converter_options"],
                converter_failed=saved["converter_failed"],
                reused_from=saved["run_id"],
            )

    def _keep(
        self, store: ArtifactCache, result: ModelArtifacts, folder: str, saved_now: list[str]
    ) -> None:
        """Put what this run saved (ok, or deterministically unsupported) into the cache."""
        if result.params is None:
            return
        model = {
            "params": result.params,
            "parity_informative": result.parity_informative,
            "not_keras": result.not_keras,
            "described": result.described,
        }
        for name in saved_now:
            saved = result.saved.get(name)
            if saved is None or saved.status not in ("ok", "unsupported"):
                continue
            store.store(
                name,
                folder,
                {
                    "status": saved.status,
                    "reason": saved.reason,
                    "path": saved.path,
                    "reference": saved.reference,
                    "save_s": saved.save_s,
                    "converter_options": saved.converter_options,
                    "converter_failed": saved.converter_failed,
                    "run_id": self.opts.run_id,
                },
                model,
            )

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
            said = (exc.stderr or b"").decode(errors="replace")  # raw bytes, even with text=True
            returncode, stderr = -9, f"timed out after {SAVE_TIMEOUT_S} s {said}"
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
                "reused": saved.reused_from is not None,
                "reused_from": saved.reused_from,
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
    def _check_libs(mode: str, per_package: dict[str, float]) -> str:
        """The reason the trial is invalid, or "", from the resident fraction of each package.

        Warm: every package must be resident, each on its own, so a small one (Keras's
        bytecode) is not hidden behind TensorFlow's gigabyte. Cold: the runtime's own package
        (the first: TensorFlow or LiteRT, nearly all of a cold import) must not be; numpy, h5py
        and Keras are recorded but do not decide, since any process of the machine that maps
        numpy (the local orchestrator does) would otherwise make every cold trial invalid.
        """
        if not per_package:
            return (
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
            return ""
        return what.format(", ".join(f"{n} {r:.1%} resident" for n, r in stayed.items()))

    def _put_artifact(self, mode: str, files: list[str]) -> str:
        """Put the artifact in the cache state `mode` claims; returns the eviction method."""
        if mode == "cold" and self.drop_via == "host":
            hostcalls.call_host("drop", HOST_DROP_TIMEOUT_S)
            return "host-drop_caches"
        if mode == "cold":
            cache.drop_all_caches()
            return "drop_caches"
        if mode == "cold-model":
            cache.evict(files)
            return "fadvise"
        cache.read_all(files)
        return "read"

    @staticmethod
    def _artifact_invalid(mode: str, resident: float) -> str:
        """The reason the artifact's measured residency belies `mode`, or ""."""
        if mode != "warm" and resident > cache.COLD_MAX_RESIDENT:
            return f"eviction did not take: {resident:.1%} of it resident"
        if mode == "warm" and resident < cache.WARM_MIN_RESIDENT:
            return f"warm read did not stay cached: {resident:.1%} resident"
        return ""

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
        self, fmt: str, saved: Saved, arts: ModelArtifacts, loads: int, process: str
    ) -> dict[str, Any]:
        """Run one trial worker (`process` forked: from the runtime's zygote) and return its
        result; ForkFailure when a forked one hangs or its zygote fails."""
        # In its own container the worker writes its result where the host's mount reaches.
        shared = hostcalls.calls_dir() if self.isolation == "container" else None
        with tempfile.TemporaryDirectory(prefix="trial-", dir=shared) as tmp:
            result_path = os.path.join(tmp, "result.json")
            args = [
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
                args += ["--code", path]
            if saved.api:
                args += ["--api", saved.api]
            began = time.monotonic()
            try:
                if process == "forked":
                    returncode, stderr = self._fork_worker(FORMATS[fmt].import_target, args, tmp)
                else:
                    argv = [sys.executable, "-m", "harness.trial_worker", *args]
                    returncode, stderr = self._run_worker(argv)
            except subprocess.TimeoutExpired:
                return {"error": f"trial timed out after {TRIAL_TIMEOUT_S} s"}
            except hostcalls.HostCallError as exc:
                return {"error": f"trial container: {exc}"}
            self._slowest_s = max(self._slowest_s, time.monotonic() - began)
            if os.path.exists(result_path):
                with open(result_path) as handle:
                    return json.load(handle)
            return {"error": f"{_death(returncode)}: {_tail(stderr)}"}

    def _fork_worker(self, target: str, args: list[str], tmp: str) -> tuple[int, str]:
        """(exit code, stderr) of a trial forked from `target`'s zygote, started on first use.

        A child gets FORK_TIMEOUT_FACTOR times the slowest trial of the run so far (at least
        FORK_TIMEOUT_FLOOR_S): a forked child that deadlocks on a lock one of the runtime's
        threads held at the fork never ends, and a trial that slow is suspect anyway.
        """
        if target not in self._zygotes:
            log = os.path.join(self.work, f"zygote-{target}.log")
            self._zygotes[target] = Zygote(target, _child_env(), log, TRIAL_TIMEOUT_S)
        stderr_path = os.path.join(tmp, "stderr.txt")
        slowest = FORK_TIMEOUT_FACTOR * self._slowest_s
        timeout = min(TRIAL_TIMEOUT_S, max(FORK_TIMEOUT_FLOOR_S, slowest))
        returncode = self._zygotes[target].run(args, stderr_path, timeout)
        with open(stderr_path, errors="replace") as handle:
            return returncode, handle.read()

    def _close_zygotes(self) -> None:
        for zygote in self._zygotes.values():
            zygote.close()
        self._zygotes.clear()

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
        method = self._put_artifact(mode, files)
        # Only `cold` times a cold import: every other trial starts with the libraries read in,
        # so none inherits the last one's state; a forked one too, as pages its zygote mapped
        # but never touched may have left the cache.
        measure = cache.residency if mode == "cold" else cache.read_in
        by_package = {name: measure(lib_files) for name, lib_files in libs.items()}
        resident = cache.residency(files)  # last: reading the libraries may have evicted it
        invalid = self._artifact_invalid(mode, resident)
        libs_invalid = self._check_libs(mode, by_package)
        sizes = {name: cache.page_count(lib_files) for name, lib_files in libs.items()}
        proof = {
            "eviction": method,
            "resident_before": resident,
            "import_libs_resident_before": sum(by_package[n] * sizes[n] for n in libs)
            / max(sum(sizes.values()), 1),
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
    ) -> float | None:
        """Prepare the cache, run one trial process, write its record(s); the load time of an
        ok first load (None otherwise). A forked trial whose child hangs, or whose zygote
        fails, ends forking for the environment and is made again in a fresh process."""
        saved = arts.saved_for(fmt)
        suffix = "reused" if process == "reused" else mode
        cell_id = f"{self.opts.env_id}/{arts.spec.slug}/{fmt}/{suffix}"
        base = self.trial_fields(cell_id, arts.spec.slug, fmt, mode, process, rnd, order)
        loads = self._rounds() if process == "reused" else 1
        phase = "warmup" if rnd < self.opts.warmup else "measure"
        try:
            result, invalid = self.spawn_prepared(base, saved, arts, loads)
        except ForkFailure as exc:
            reason = f"forked trial: {exc}; this environment's trials are fresh-process from here"
            self.writer.write("trial", status="retried", reason=reason, phase=phase, **base)
            self._stop_forking("hung", reason)
            return self.trial(arts, fmt, mode, rnd, order, "fresh")
        return self.write_trial(result, base, phase, saved.files, invalid)

    def trial_fields(
        self, cell_id: str, model: str, fmt: str, mode: str, process: str, rnd: int, order: int
    ) -> dict[str, Any]:
        """The fields every record of one trial starts with (harness.crossload adds its own)."""
        return {
            "cell_id": cell_id,
            "model": model,
            "format": fmt,
            "cache_mode": mode,
            "process": process,
            "round": rnd,
            "order": order,
            "import_target": FORMATS[fmt].import_target,
            "isolation": self.isolation,
        }

    def spawn_prepared(
        self, base: dict[str, Any], saved: Saved, arts: ModelArtifacts, loads: int
    ) -> tuple[dict[str, Any], str]:
        """Put the cache in the state `base` claims and add the proof to `base`, then run the
        trial worker; (its result, the reason the trial is invalid or "")."""
        mode, target = base["cache_mode"], base["import_target"]
        if mode == "cold":  # a zygote's mapped libraries would keep the cold import warm
            self._close_zygotes()
        proof, invalid = self.prepare_cache(mode, saved.files, target)
        base.update(proof)
        return self._spawn_trial(base["format"], saved, arts, loads, base["process"]), invalid

    @staticmethod
    def result_fields(result: dict[str, Any]) -> dict[str, Any]:
        """What a trial worker's `result` says about its process, for each of its records."""
        return {k: result.get(k) for k in RESULT_FIELDS}

    def write_trial(
        self,
        result: dict[str, Any],
        base: dict[str, Any],
        phase: str,
        files: list[str],
        invalid: str,
    ) -> float | None:
        """The record(s) of one trial worker's `result` (`error`, or one per load, `invalid`
        with its reason when the cache state was not proven); the first ok load time."""
        common = self.result_fields(result)
        if "error" in result:
            self.writer.write(
                "trial", status="error", reason=result["error"], phase=phase, **base, **common
            )
            return None
        mode, target = base["cache_mode"], base["import_target"]
        first: float | None = None
        for index, load in enumerate(result["loads"]):
            if base["process"] == "reused":
                phase = "warmup" if index < self.opts.warmup else "measure"
            why = invalid or self._cold_load_unread(mode, target, files, load["load_read_bytes"])
            status = "invalid" if why else "ok"
            extra = {"reason": why} if why else {}
            if index == 0 and not why:
                first = load["load_s"]
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
        return first

    def write_untimed(
        self, cell_id: str, model: str, fmt: str, mode: str, status: str, reason: str, **extra: Any
    ) -> None:
        """The one record of a cell that cannot be timed at all (`extra`: a cross-load's)."""
        self.writer.write(
            "trial",
            cell_id=cell_id,
            model=model,
            format=fmt,
            cache_mode=mode,
            process="fresh",
            phase="measure",
            status=status,
            reason=reason,
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
        """Rounds of every cell still in the rotation, each round in a new shuffled order; then
        the reused-process loads. A cell that cannot be timed at all gets exactly one record
        with its reason.

        `--repeats auto`: a cell leaves the rotation once `harness.precision` says its median
        is known well enough (or it has had the maximum), and gets a `precision` record.
        Forked cells also get fresh-process controls in their first measured rounds, which
        `_check_forks` holds the forked loads to.
        """
        o = self.opts
        fresh = o.process in ("fresh", "both")
        cells: list[Cell] = []
        blocked = []
        for arts in all_arts:
            for fmt in o.formats:
                for mode in o.cache_modes if fresh else ():
                    verdict = self.not_runnable(arts, fmt, mode)
                    if verdict:
                        blocked.append((arts, fmt, mode, verdict))
                    else:
                        cells.append(Cell(arts, fmt, mode, self._process_for(mode)))
        reused = []
        if o.process != "fresh":
            reused = [
                (a, f)
                for a in all_arts
                for f in o.formats
                if self.not_runnable(a, f, "warm") is None
            ]
        forked = [c for c in cells if c.process == "forked"]
        # CONTROL_PAIRS in all, one cell after another in a seeded order, each in fewer
        # rounds than every cell gets: its forked trials always outnumber its controls.
        random.Random(f"{o.seed}-controls").shuffle(forked)
        most = (o.repeats or precision.MIN_REPEATS) - 1
        for turn in range(CONTROL_PAIRS if forked else 0):
            cell = forked[turn % len(forked)]
            cell.controls = min(cell.controls + 1, most)
        self._fork_check_due = bool(forked)
        self._schedule(cells, len(blocked) + len(reused) * self._rounds())
        for arts, fmt, mode, (status, reason) in blocked:
            cell_id = f"{o.env_id}/{arts.spec.slug}/{fmt}/{mode}"
            self.write_untimed(cell_id, arts.spec.slug, fmt, mode, status, reason)
        rnd = 0
        while True:
            measuring = rnd >= o.warmup
            active = [c for c in cells if not (measuring and c.done)]
            if not active:
                break
            entries = [(c, c.process) for c in active]
            if measuring:
                entries += [(c, "fresh") for c in active if c.controls and c.process == "forked"]
            for position, (cell, process) in enumerate(self._round_order(entries, rnd)):
                if process == "forked" and not self._forking:
                    process = "fresh"
                load = self.trial(cell.arts, cell.fmt, cell.mode, rnd, position, process)
                if not self._forking:  # stopped by this trial or before: all fresh from here
                    process = "fresh" if process == "forked" else process
                    for each in cells:
                        each.process = "fresh"
                if measuring:
                    cell.record(process, rnd, load)
            if measuring:
                for cell in active:
                    cell.controls = max(cell.controls - 1, 0)
                if self._fork_check_due and not any(c.controls for c in cells):
                    self._check_forks(cells)
                for cell in active:
                    self._settle(cell, len(cells))
                self._schedule(cells, len(reused) * self._rounds())
            rnd += 1
        if self._fork_check_due:  # every forked cell left before its controls were done
            self._check_forks(cells)
        self._close_zygotes()
        for position, (arts, fmt) in enumerate(reused):
            self.trial(arts, fmt, "warm", 0, position, process="reused")

    def _process_for(self, mode: str) -> str:
        """`forked` where the import is not what a cell measures and a zygote can serve it."""
        if (
            self.opts.trial_process == "forked"
            and mode != "cold"
            and self.isolation == "process"
            and self._forking
        ):
            return "forked"
        return "fresh"

    def _round_order(self, entries: list[tuple[Cell, str]], rnd: int) -> list[tuple[Cell, str]]:
        """The round's trials, shuffled by the run's seed. With zygotes about, the `cold`
        trials go first (still shuffled among themselves): zygotes are stopped for them, and
        restarting them after every cold trial would cost an import each time."""
        order = list(entries)
        random.Random(f"{self.opts.seed}-{rnd}").shuffle(order)
        if any(process == "forked" for _, process in order):
            order.sort(key=lambda entry: entry[0].mode != "cold")  # stable: keeps the shuffle
        return order

    def _settle(self, cell: Cell, family: int) -> None:
        """Whether `cell` leaves the rotation; writes its `precision` record when it does."""
        o = self.opts
        loads = cell.loads[cell.process]
        attempts = cell.attempts[cell.process]
        if o.repeats:
            cell.done = len(cell.rounds) >= o.repeats
            reached = None
        else:
            found = precision.progress(loads, self._target(), family)
            cell.done = found.done or (attempts >= precision.MIN_REPEATS and not loads)
            reached = found.reached
        if not cell.done:
            return
        half = precision.relative_half_width(loads)
        interval = precision.median_ci(loads)
        self.writer.write(
            "precision",
            cell_id=f"{o.env_id}/{cell.arts.spec.slug}/{cell.fmt}/{cell.mode}",
            model=cell.arts.spec.slug,
            format=cell.fmt,
            cache_mode=cell.mode,
            process=cell.process,
            n=len(loads),
            attempts=attempts,
            load_median=statistics.median(loads) if loads else None,
            load_ci_low=interval[0] if interval else None,
            load_ci_high=interval[1] if interval else None,
            precision=half,
            target=None if o.repeats else o.precision,
            reached=reached,
        )

    def _target(self) -> precision.Target:
        return precision.Target(precision=self.opts.precision, max_repeats=self.opts.max_repeats)

    def _schedule(self, cells: list[Cell], others: int) -> None:
        """A `schedule` record: trials written so far plus the most the rotation can still
        take (with `--repeats auto` an upper bound, lowered after every round)."""
        o = self.opts
        left = 0
        for cell in cells:
            if o.repeats:
                rounds = o.repeats - len(cell.rounds)
            else:
                rounds = o.max_repeats - len(cell.loads[cell.process])
            left += 0 if cell.done else max(rounds, 1) + cell.controls
        warmups = len(cells) * o.warmup if not self.writer.trials_written else 0
        self.writer.write(
            "schedule", trials_scheduled=self.writer.trials_written + warmups + left + others
        )

    def _check_forks(self, cells: list[Cell]) -> None:
        """Hold the forked loads to the fresh-process controls of the same rounds (the rule of
        `harness.precision.agreement`); on a disagreement every cell is fresh from here."""
        self._fork_check_due = False
        pairs = [
            (by_process["forked"], by_process["fresh"])
            for cell in cells
            for by_process in cell.paired.values()
            if {"forked", "fresh"} <= set(by_process)
        ]
        found = precision.agreement(pairs)
        fallback = found.verdict == "disagree"
        self.writer.write(
            "fork_check",
            verdict=found.verdict,
            pairs=found.pairs,
            change=found.change,
            change_low=found.low,
            change_high=found.high,
            threshold=precision.THRESHOLD,
            fallback=fallback,
            cells=sorted(
                c.cell_id(self.opts.env_id)
                for c in cells
                if any("forked" in loads for loads in c.paired.values())
            ),
            reason="",
        )
        if fallback:
            self._stop_forking("disagree", "")

    def _stop_forking(self, verdict: str, reason: str) -> None:
        """No more forked trials in this environment (a child hung, or a zygote failed)."""
        if verdict == "hung":
            self._fork_check_due = False
            self.writer.write(
                "fork_check",
                verdict=verdict,
                fallback=True,
                threshold=precision.THRESHOLD,
                reason=reason,
            )
        self._forking = False
        self._close_zygotes()

    # ---- whole run ---------------------------------------------------------------------------

    def execute(self) -> int:
        began = time.perf_counter()
        self.write_plan()
        if not self.write_environment():
            self.writer.close()
            return 1
        self.measure()
        self.writer.write(
            "done",
            trials_written=self.writer.trials_written,
            elapsed_s=round(time.perf_counter() - began, 3),
            calibration_end_s=calibrate.calibration_s(),
        )
        self.writer.close()
        return 0

    def measure(self) -> None:
        """Save every model, then time every cell (a cross-load times others' artifacts)."""
        all_arts = []
        for name in self.opts.models:
            options = self.model_options.get(name, ModelOptions())
            arts = self.save_model(replace(parse_model(name), options=options))
            self.write_artifact_records(arts)
            all_arts.append(arts)
        self.run_trials(all_arts)


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
