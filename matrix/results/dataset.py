"""Every record of one or more runs as tidy pandas tables, and the per-cell statistics.

The one place that turns records into numbers (summary, compare, history and the report read these
tables, so a median means the same everywhere). Runs of different schema versions or machines
merge (an absent field is NaN). Statistics count only `measure` trials with status `ok` of one
process kind per cell (`measured`): never a warm-up load, nor an `invalid` "cold" load.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.contract import NESTED, fields_of, upgrade
from harness.precision import relative_half_width
from matrix.plan.inputs import RUN_ID
from matrix.results.reader import (
    CROSSLOAD_DIR,
    ENV_DIR_PREFIX,
    MANIFEST,
    SAVERS_FILE,
    Record,
    Records,
    read_jsonl,
)

CELL = ["run_id", "env_id", "model", "format", "cache_mode"]
ARTIFACT = ["run_id", "env_id", "model", "format"]
ENVIRONMENT = ["run_id", "env_id"]


def _columns(kind: str) -> list[str]:
    """Every field of a record kind (harness.contract, which docs/records.md defines), a nested
    object's as the `<field>_<key>` columns `_frame` spreads it into."""
    return [
        column
        for name in fields_of(kind)
        for column in ([f"{name}_{key}" for key in NESTED[name]] if name in NESTED else [name])
    ]


# A run written before a field existed still gets its column (NaN).
TRIAL_FIELDS = _columns("trial")
ARTIFACT_FIELDS = _columns("artifact")
ENVIRONMENT_FIELDS = _columns("environment")
# Per (run, environment) fields of the `plan` and `done` records, tabled with the environment.
PLAN_FIELDS = ["weights", "repeats", "max_repeats", "precision", "trial_process"]
DONE_FIELDS = ["calibration_end_s"]
LOCAL_BACKEND = "local"  # the `backend` of a run folder without a sweep manifest
FAILURE_FIELDS = _columns("failure")
PRECISION_FIELDS = _columns("precision")
# A manifest's outcome for an environment, under the names the environments table uses.
OUTCOME_FIELDS = {
    "status": "outcome",
    "reason": "outcome_reason",
    "image": "image",
    "image_built": "image_built",
    "build_s": "build_s",
}
# Medians of these trial fields, per cell, under these names.
MEDIANS = {
    "import_s": "import_median",
    "load_cpu_s": "load_cpu_median",
    "first_inference_s": "first_inference_median",
    "inference_s": "inference_median",
    "peak_rss_mb": "peak_rss_median",
    "rss_load_delta_mb": "rss_delta_median",
    "first_prediction_s": "first_prediction_median",
    "cold_start_s": "cold_start_median",
    "device_init_s": "device_init_median",
    "load_read_bytes": "read_bytes_median",
    "load_major_faults": "major_faults_median",
}
# Per-cell parity: the worst status of its trials (fail > not-informative > pass), the largest
# relative error and the lowest top-1 agreement and cosine; `null` for runs before schema 2.
PARITY_ORDER = ["pass", "not-informative", "fail"]
_PARITY_CODE = {status: code for code, status in enumerate(PARITY_ORDER)}
PARITY_WORST = {
    "parity_rel_err": ("parity_rel_err_max", "max"),
    "parity_top1_agreement": ("parity_top1_min", "min"),
    "parity_cosine": ("parity_cosine_min", "min"),
    "parity_tolerance": ("parity_tolerance", "max"),
}
COLD_MODES = ("cold", "cold-model")  # the cache modes that claim the artifact was not cached
GUEST_CACHE_GB_S = 1.0  # an I/O floor faster than this on a VM suggests the host cached the disk
GUEST_NOTE = "cold only inside the guest"  # what the summary and the report say of such a cell
ARTIFACT_STATS = ["bytes", "files", "params", "save_s", "io_floor_s", "storage_kind"]
NOISY_CV = 0.10  # above this coefficient of variation a median is flagged as noisy
NOISY_N = 3  # fewer ok trials than this and the spread cannot be judged
SEVERITY = {"failed-environment": 0, "error": 1, "invalid": 2, "unsupported": 3}  # 0 = worst


@dataclass
class Dataset:
    """The records of the chosen runs, one table per record kind (see docs/records.md).

    `trials` has every trial (every status and phase) with `host` and `source` (`file:line`);
    `environments` has one row per (run_id, env_id), with the sweep manifest's outcome if any.
    `crossloads` has the cross-load step's trials and failures (its `kind` column says which),
    the loader as `env_id` and the saver as `saved_by_*`: apart, so no own cell changes.
    """

    trials: pd.DataFrame
    artifacts: pd.DataFrame
    environments: pd.DataFrame
    failures: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    crossloads: pd.DataFrame = field(default_factory=lambda: _crossloads([], []))
    # The `precision` records: per cell, what `--repeats auto` reached when it left the rotation.
    precisions: pd.DataFrame = field(default_factory=lambda: _frame([], PRECISION_FIELDS))

    @property
    def run_ids(self) -> list[str]:
        """The runs in time order (run ids sort by their start time)."""
        return sorted(self.environments["run_id"].dropna().unique())


def load_runs(run_dirs: Iterable[Path]) -> Dataset:
    """Every `<env_id>.jsonl` (and `manifest.json`) of the given run folders, merged.

    A bad line is skipped and named in `problems`; so is a second file for a (run, environment)
    already read (the same run given twice, or copied), since counting it twice would fake n.
    """
    dirs = list(dict.fromkeys(Path(d).resolve() for d in run_dirs))
    files = {run_dir: sorted(run_dir.glob("*.jsonl")) for run_dir in dirs}
    with _paused_gc():
        ds = _load(files)
        cross = [_read_cross(path, d.name, ds.problems) for d in dirs for path in _cross_files(d)]
    ds.crossloads = _crossloads(
        [r for found in cross for r in found.records], [s for f in cross for s in f.sources]
    )
    return ds


def _cross_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / CROSSLOAD_DIR).glob("*.jsonl"))


def _read_own(path: Path, run_id: str, problems: list[str]) -> Records:
    """The records of `path` that are its environment's (`_own_records`), each with its run."""
    found = _own_records(read_jsonl(path), path)
    problems.extend(found.problems)
    for record in found.records:
        record.setdefault("run_id", run_id)
    return found


def _read_cross(path: Path, run_id: str, problems: list[str]) -> Records:
    """A loader's cross-load records, each `saved_by` replaced by the host's own account of that
    saver: the `--saved-by` file the host gave the loader. The records were written where the
    savers' files were loaded, so one naming a saver the host did not give it is left out and
    counted in `problems`: a loader cannot claim a pair, nor a saver's TF version."""
    found = _read_own(path, run_id, problems)
    try:
        given = json.loads((path.parent / f"{ENV_DIR_PREFIX}{path.stem}" / SAVERS_FILE).read_text())
        savers = {s["env_id"]: s for s in given["savers"]}
    except (OSError, ValueError, KeyError, TypeError):
        savers = {}
    kept = Records()
    forged = 0
    for record, source in zip(found.records, found.sources):
        if "saved_by" in record:
            said = record["saved_by"]
            saver = savers.get(said.get("env_id")) if isinstance(said, dict) else None
            if saver is None:
                forged += 1
                continue
            record["saved_by"] = {key: saver.get(key) for key in NESTED["saved_by"]}
        kept.records.append(record)
        kept.sources.append(source)
    if forged:
        problems.append(
            f"{path}: skipped {forged} record(s) naming a saver not in the host's {SAVERS_FILE}"
        )
    return kept


def _crossloads(records: list[Record], sources: list[str]) -> pd.DataFrame:
    """The cross-load step's `trial` and `failure` records, in the current schema's shape."""
    kept = [
        (upgrade(r), source)
        for r, source in zip(records, sources)
        if r.get("kind") in ("trial", "failure")
    ]
    frame = _frame([r for r, _ in kept], ["kind", *TRIAL_FIELDS])
    frame["source"] = [source for _, source in kept]
    return frame


@contextmanager
def _paused_gc() -> Iterator[None]:
    """Parsing records allocates a dict per record, none in a reference cycle: the cyclic garbage
    collector would rescan them again and again as they pile up, for nothing to collect."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load(files: dict[Path, list[Path]]) -> Dataset:
    records: list[Record] = []
    sources: list[str] = []
    manifests: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: dict[tuple[Any, Any], Path] = {}
    for run_dir, paths in files.items():
        manifest = _read_manifest(run_dir, problems)
        if manifest:
            manifests.append(manifest)
        run_id = run_dir.name
        for path in paths:
            found = _read_own(path, run_id, problems)
            keys = {(r["run_id"], r.get("env_id")) for r in found.records}
            again = [seen[k] for k in keys if k in seen]
            if again:
                problems.append(f"{path}: skipped: same run and environment as {again[0]}")
                continue
            seen.update(dict.fromkeys(keys, path))
            records.extend(found.records)
            sources.extend(found.sources)
    return dataset_of(records, sources, manifests, problems)


def _own_records(found: Records, path: Path) -> Records:
    """Only the records of the environment the file is named after (`<env_id>.jsonl`).

    A container writes its own file, so a record in it naming another environment is a
    forgery (or a copy gone wrong): trusted, it would add trials to that environment, or make
    the environment's real file look like a duplicate and be skipped.
    """
    kept = Records()
    foreign = 0
    for record, source in zip(found.records, found.sources):
        if record.get("env_id") == path.stem:
            kept.records.append(record)
            kept.sources.append(source)
        else:
            foreign += 1
    kept.problems = list(found.problems)
    if foreign:
        kept.problems.append(
            f"{path}: skipped {foreign} record(s) naming another environment than {path.stem!r}"
        )
    return kept


def dataset_of(
    records: list[Record],
    sources: list[str] | None = None,
    manifests: list[dict[str, Any]] | None = None,
    problems: list[str] | None = None,
) -> Dataset:
    """The tables of records already in memory (`load_runs` reads them from disk)."""
    by_kind: dict[Any, list[Record]] = {}
    where: dict[Any, list[str]] = {}
    written: set[tuple[Any, Any]] = set()  # every (run_id, env_id) that wrote a record
    for written_as, source in zip(records, sources or repeat("")):
        record = upgrade(written_as)  # an older schema's, in the current shape
        kind = record.get("kind")
        by_kind.setdefault(kind, []).append(record)
        where.setdefault(kind, []).append(source)
        written.add((record.get("run_id"), record.get("env_id")))
    environments = _environments(written, by_kind, manifests or [])
    hosts = environments[[*ENVIRONMENT, "host"]]
    trials = _frame(by_kind.get("trial", []), TRIAL_FIELDS)
    trials = trials.merge(hosts, on=ENVIRONMENT, how="left")
    trials["source"] = where.get("trial", [])
    artifacts = _frame(by_kind.get("artifact", []), ARTIFACT_FIELDS)
    artifacts = artifacts.merge(hosts, on=ENVIRONMENT, how="left")
    failures = _frame(by_kind.get("failure", []), FAILURE_FIELDS)
    failures["source"] = where.get("failure", [])
    precisions = _frame(by_kind.get("precision", []), PRECISION_FIELDS)
    return Dataset(
        trials, artifacts, environments, failures, list(problems or []), precisions=precisions
    )


def _frame(records: list[Record], columns: list[str]) -> pd.DataFrame:
    """Records as a table with at least `columns`; nested dicts become `outer_inner` columns."""
    if not records:  # typed object, so merging on its keys works like on a full table
        return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    frame = pd.DataFrame.from_records(records)
    for name in [c for c in frame.columns if frame[c].dtype == object]:
        first = frame[name].first_valid_index()  # records of a kind share their shape
        if first is not None and isinstance(frame[name].loc[first], dict):
            nested = frame[name].map(lambda v: isinstance(v, dict))
            flat = pd.DataFrame(
                list(frame[name].where(nested, None).map(lambda v: v or {})), index=frame.index
            )
            frame = frame.drop(columns=name).join(flat.add_prefix(f"{name}_"))
    missing = [c for c in columns if c not in frame.columns]
    return frame.reindex(columns=[*frame.columns, *missing])


def _environments(
    written: set[tuple[Any, Any]], by_kind: dict[Any, list[Record]], manifests: list[dict]
) -> pd.DataFrame:
    """One row per (run, environment) that wrote anything or that a sweep manifest names.

    Inside a container the hostname is the container's id, so an environment that ran in a
    Docker sweep takes its `host` from the manifest, which the Docker host wrote. The plan's
    `weights`, the `done` record's calibration and the sweep's `backend` (`local` without a
    manifest) join the row: comparing two runs must know whether they measured alike.
    """
    keys = pd.DataFrame(list(written), columns=ENVIRONMENT, dtype=object).dropna()
    outcomes = pd.DataFrame(
        [_outcome(m, o) for m in manifests for o in m.get("outcomes", []) if o.get("env_id")]
        + [
            _outcome(m, {"env_id": s.get("id"), "status": "skipped", **s})
            for m in manifests
            for s in m.get("skipped", [])
        ],
        columns=[*ENVIRONMENT, *OUTCOME_FIELDS.values(), "manifest_host"],
    ).drop_duplicates(ENVIRONMENT, keep="last")
    keys = pd.concat([keys, outcomes[ENVIRONMENT]]).drop_duplicates(ignore_index=True)
    frame = keys
    for kind, fields in (
        ("environment", ENVIRONMENT_FIELDS),
        ("plan", [*ENVIRONMENT, *PLAN_FIELDS]),
        ("done", [*ENVIRONMENT, *DONE_FIELDS]),
    ):
        part = _frame(by_kind.get(kind, []), fields)
        part = part if kind == "environment" else part[fields]
        part = part.drop(columns=["schema_version", "kind", "time"], errors="ignore")
        frame = frame.merge(
            part.drop_duplicates(ENVIRONMENT, keep="last"), on=ENVIRONMENT, how="left"
        )
    checks = _frame(by_kind.get("fork_check", []), [*ENVIRONMENT, "verdict"])
    checks = checks[[*ENVIRONMENT, "verdict"]].rename(columns={"verdict": "fork_check"})
    frame = frame.merge(
        checks.drop_duplicates(ENVIRONMENT, keep="last"), on=ENVIRONMENT, how="left"
    )
    frame = frame.merge(outcomes, on=ENVIRONMENT, how="left")
    # In a container the hostname is the container's id, new for every run: the machine is
    # the manifest's host, else unknown (comparing runs must not see a new machine each night).
    in_container = frame["in_container"].eq(True)
    frame["host"] = frame["manifest_host"].where(in_container, frame["hostname"])
    frame["host"] = frame["host"].where(frame["host"].notna(), frame["manifest_host"])
    backends = {m.get("run_id"): _backend(m) for m in manifests}
    frame["backend"] = [backends.get(run, LOCAL_BACKEND) for run in frame["run_id"]]
    return frame.drop(columns="manifest_host").sort_values(ENVIRONMENT, ignore_index=True)


def _backend(manifest: dict[str, Any]) -> Any:
    """The sweep's backend; a manifest older than its `backend` field has only the matrix's,
    which is `auto` (unknown) unless the user named one."""
    return manifest.get("backend") or (manifest.get("matrix") or {}).get("backend")


def _outcome(manifest: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    row = {new: outcome.get(old) for old, new in OUTCOME_FIELDS.items()}
    host = manifest.get("host") or {}
    return {
        "run_id": manifest.get("run_id"),
        "env_id": outcome["env_id"],
        **row,
        "manifest_host": host.get("hostname"),
    }


def _read_manifest(run_dir: Path, problems: list[str]) -> dict[str, Any] | None:
    path = run_dir / MANIFEST
    if not path.exists():
        return None  # a local run has none: its one environment file says it all
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path}: skipped: {exc}")
        return None
    if not isinstance(manifest, dict):
        problems.append(f"{path}: skipped: not a JSON object")
        return None
    manifest.setdefault("run_id", run_dir.name)
    wrong = _manifest_problem(manifest)
    if wrong:
        problems.append(f"{path}: skipped: {wrong}")
        return None
    return manifest


def _manifest_problem(manifest: dict[str, Any]) -> str:
    """What makes a manifest unusable (a hand-edited or foreign file), or "" if nothing does."""
    for key in ("outcomes", "skipped"):  # lists of objects, each naming its environment
        entries = manifest.get(key, [])
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("env_id", e.get("id")), str) for e in entries
        ):
            return f"its {key} is not a list of environments"
    for key in ("host", "matrix"):
        if not isinstance(manifest.get(key) or {}, dict):
            return f"its {key} is not an object"
    run_id = manifest["run_id"]
    if not (isinstance(run_id, str) and RUN_ID.fullmatch(run_id)):
        return f"its run_id {run_id!r} is not one folder name"
    return ""


# ---- statistics ---------------------------------------------------------------------------------

_MEASURED = ["status", "phase", "process"]  # the columns `measured` selects by
# `process` of `measured` and `cell_stats`: each cell's one-load process, `forked` or `fresh`.
ONE_LOAD = "one-load"


def measured(trials: pd.DataFrame, process: str = ONE_LOAD) -> pd.DataFrame:
    """The trials statistics are made of: ok, `measure` phase, loaded by `process`.

    ONE_LOAD: per cell, its trials of one load per process, never a mix: `forked` or `fresh`,
    whichever has more (`fresh` on a tie). A forked cell's fresh controls are fewer than its
    forked trials; after a disagreement the harness goes on in fresh processes past that count
    (docs/records.md, "Forked trials").
    """
    keep = trials["status"].eq("ok") & trials["phase"].eq("measure")
    if process != ONE_LOAD:
        return trials[keep & trials["process"].eq(process)]
    rows = trials[keep & trials["process"].isin(["fresh", "forked"])]
    counts = rows.groupby([*CELL, "process"], dropna=False).size().unstack(fill_value=0)
    forked = counts.get("forked", 0) > counts.get("fresh", 0)
    chosen = pd.Series(np.where(forked, "forked", "fresh"), index=counts.index, name="chosen")
    joined = rows[CELL].merge(chosen.reset_index(), on=CELL, how="left")
    return rows[joined["chosen"].to_numpy() == rows["process"].to_numpy()]


def cell_stats(
    ds: Dataset,
    baseline_format: str = "h5",
    baseline_env: str | None = None,
    process: str = ONE_LOAD,
) -> pd.DataFrame:
    """One row per (run_id, env_id, model, format, cache_mode) with ok measured trials.

    Load-time spread (min, quartiles, IQR, CV), the distribution-free 95 % interval of the
    median (`load_precision`: its relative half-width) and whether `--repeats auto` reached its
    target (`precision_reached`), medians of the other phases, the artifact's size and I/O
    floor, the format's rank within its (run, environment, model, cache mode), and speed-ups
    against a baseline format and a baseline environment; `process` says which process kind
    the figures are of. `process="reused"` gives the same table for the repeated loads in one
    warm process.
    """
    numbers = ["load_s", *MEDIANS, "parity_max_abs_diff", *PARITY_WORST]
    texts = ["parity_status", "parity_family", "inference_call"]
    ok = _numeric(measured(ds.trials[[*CELL, *numbers, *texts, *_MEASURED]], process), numbers)
    ok = ok.assign(parity_code=ok["parity_status"].map(_PARITY_CODE))
    loads = ok.groupby(CELL, dropna=False)["load_s"]
    stats = pd.DataFrame(
        {
            "n": loads.count(),
            "load_median": loads.median(),
            "load_min": loads.min(),
            "load_q1": loads.quantile(0.25),
            "load_q3": loads.quantile(0.75),
            "load_cv": loads.std() / loads.mean(),
        }
    )
    stats.insert(5, "load_iqr", stats["load_q3"] - stats["load_q1"])
    stats["load_mean"] = loads.mean()
    stats["load_precision"] = loads.agg(lambda x: relative_half_width(list(x)))
    stats["process"] = ok.groupby(CELL, dropna=False)["process"].first()
    others = ok.groupby(CELL, dropna=False)
    stats = stats.join(others[list(MEDIANS)].median().rename(columns=MEDIANS))
    first = others["first_prediction_s"]
    stats["first_prediction_iqr"] = first.quantile(0.75) - first.quantile(0.25)
    stats["parity_max"] = others["parity_max_abs_diff"].max()
    stats = stats.join(_parity_stats(others))
    stats = stats.reset_index().merge(_artifact_stats(ds.artifacts), on=ARTIFACT, how="left")
    reached = ds.precisions[[*CELL, "process", "reached"]].drop_duplicates([*CELL, "process"])
    stats = stats.merge(
        reached.rename(columns={"reached": "precision_reached"}), on=[*CELL, "process"], how="left"
    )
    stats["io_multiple"] = stats["load_median"] / stats["io_floor_s"]
    stats["io_floor_gb_s"] = stats["bytes"] / stats["io_floor_s"] / 1e9
    hypervisors = ds.environments[[*ENVIRONMENT, "hypervisor"]]
    stats = stats.merge(hypervisors.drop_duplicates(ENVIRONMENT), on=ENVIRONMENT, how="left")
    stats["guest_cold_only"] = (
        stats["cache_mode"].isin(COLD_MODES)
        & stats["hypervisor"].notna()
        & stats["io_floor_gb_s"].gt(GUEST_CACHE_GB_S)
    )
    group = ["run_id", "env_id", "model", "cache_mode"]
    stats["rank"] = stats.groupby(group, dropna=False)["load_median"].rank(method="min")
    stats["speedup_vs_format"] = _speedup(stats, stats["format"] == baseline_format, group)
    stats["speedup_vs_env"] = _env_speedup(stats, baseline_env)
    stats["noisy"] = (stats["load_cv"] > NOISY_CV) | (stats["n"] < NOISY_N)
    return stats


def _parity_stats(by_cell: Any) -> pd.DataFrame:
    """Each cell's worst parity status and figures (see PARITY_WORST), and how its steady
    inference was called; the status as a code, so one vectorised `max` finds the worst."""
    frame = by_cell.agg(
        parity_code=("parity_code", "max"),
        parity_family=("parity_family", "first"),
        inference_call=("inference_call", "first"),
        **{name: (column, how) for column, (name, how) in PARITY_WORST.items()},
    )
    frame.insert(0, "parity_status", frame.pop("parity_code").map(dict(enumerate(PARITY_ORDER))))
    return frame


def _artifact_stats(artifacts: pd.DataFrame) -> pd.DataFrame:
    ok = _numeric(artifacts[artifacts["status"].eq("ok")], ARTIFACT_STATS[:-1])
    return ok[[*ARTIFACT, *ARTIFACT_STATS]].drop_duplicates(ARTIFACT, keep="last")


def _numeric(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`columns` as numbers; a value that is not one (a hand-edited record) becomes NaN."""
    return frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") for c in columns})


def _speedup(stats: pd.DataFrame, is_baseline: pd.Series, on: list[str]) -> pd.Series:
    """Baseline median / this median, the baseline being the row of `is_baseline` in `on`."""
    base = stats.loc[is_baseline, [*on, "load_median"]].drop_duplicates(on, keep="last")
    joined = stats[on].merge(base, on=on, how="left")
    return pd.Series(joined["load_median"].to_numpy(), index=stats.index) / stats["load_median"]


def _env_speedup(stats: pd.DataFrame, baseline_env: str | None) -> pd.Series:
    """Against the baseline environment in the same run or, if that run lacks it, the latest.

    Runs from several machines each have their own run id, so "the same run" alone would leave
    every other machine without a baseline.
    """
    if baseline_env is None:
        return pd.Series(float("nan"), index=stats.index)
    is_base = stats["env_id"] == baseline_env
    same_run = _speedup(stats, is_base, ["run_id", "model", "format", "cache_mode"])
    latest = stats.sort_values("run_id", kind="stable")
    latest_run = _speedup(
        latest, latest["env_id"] == baseline_env, ["model", "format", "cache_mode"]
    ).reindex(stats.index)
    return same_run.fillna(latest_run)


def load_samples(ds: Dataset, keys: list[str]) -> pd.DataFrame:
    """The measured load times of each cell as one list per row, for the significance tests."""
    columns = list(dict.fromkeys([*CELL, *keys, "load_s", *_MEASURED]))  # `measured` needs CELL
    ok = _numeric(measured(ds.trials[columns]), ["load_s"])
    return sample_lists(ok, keys, "load_s")


def sample_lists(frame: pd.DataFrame, keys: list[str], column: str) -> pd.DataFrame:
    """One row per group of `keys` with the group's values of `column` as a list (`samples`).

    Cut from one sorted array: `agg(list)` makes a Series per group, seconds for a sweep.
    """
    groups = frame.groupby(keys, dropna=False, observed=True)
    ids = groups.ngroup().to_numpy()
    order = np.argsort(ids, kind="stable")
    values = frame[column].to_numpy()[order]
    samples = np.split(values, np.flatnonzero(np.diff(ids[order])) + 1) if len(frame) else []
    table = groups.size().index.to_frame(index=False)
    return table.assign(samples=[part.tolist() for part in samples])


def distinct_values(frame: pd.DataFrame, keys: list[str], column: str, sep: str) -> pd.DataFrame:
    """Per group of `keys`, the distinct values of `column` as sorted text joined by `sep`
    (a cell measured with two eviction methods says "fadvise, read"); missing values are
    left out. A loop over the distinct rows: `agg(sep.join)` costs a Series per group."""
    used = frame[[*keys, column]].dropna(subset=[column]).astype({column: str}).drop_duplicates()
    found: dict[tuple, list[str]] = {}
    for *key, value in zip(*(used[c].tolist() for c in [*keys, column])):
        found.setdefault(tuple(key), []).append(value)
    return pd.DataFrame(
        [(*key, sep.join(sorted(values))) for key, values in found.items()], columns=[*keys, column]
    )


# ---- problems -----------------------------------------------------------------------------------


def cell_problems(ds: Dataset) -> pd.DataFrame:
    """Every cell that is not plainly ok, once, with its worst status and that status's reason.

    Sources, in order: trials that were not ok (any phase), artifacts that could not be saved
    (only when no trial already explains the format), `failure` records (a model, or a whole
    environment) and environments a sweep skipped. `trials` counts the trials of that status.
    """
    bad = ds.trials[ds.trials["status"].notna() & ds.trials["status"].ne("ok")]
    bad = bad.sort_values("status", key=lambda s: s.map(SEVERITY), kind="stable")
    by_cell = bad.groupby(CELL, dropna=False)
    trials = by_cell.agg(status=("status", "first"), reason=("reason", "first"))
    worst = bad["status"] == by_cell["status"].transform("first")
    trials["trials"] = worst.groupby([bad[c] for c in CELL], dropna=False).sum()
    trials = trials.reset_index()
    artifacts = ds.artifacts[ds.artifacts["status"].notna() & ds.artifacts["status"].ne("ok")]
    explained = trials[ARTIFACT].drop_duplicates()
    artifacts = artifacts.merge(explained, on=ARTIFACT, how="left", indicator=True)
    artifacts = artifacts[artifacts["_merge"] == "left_only"]
    failures = ds.failures.assign(
        status=ds.failures["scope"].map(
            lambda scope: "failed-environment" if scope == "environment" else "error"
        )
    )
    envs = ds.environments
    skipped = envs[envs["outcome"].eq("skipped")]
    skipped = skipped.assign(status="unsupported", reason=skipped["outcome_reason"])
    columns = [*CELL, "status", "reason", "trials"]
    rows = pd.concat(
        [trials, *(part.reindex(columns=columns) for part in (artifacts, failures, skipped))],
        ignore_index=True,
    )
    rows["trials"] = rows["trials"].fillna(0).astype(int)
    return rows.drop_duplicates(CELL, keep="first").reset_index(drop=True)


# ---- export -------------------------------------------------------------------------------------


def export(ds: Dataset, stats: pd.DataFrame, path: Path) -> list[Path]:
    """Write the trials to `path` and the per-cell statistics next to it (`<stem>-stats<ext>`).

    Two tables, because a trial and a cell are different units of observation; lists (GPU
    names, output shapes) become JSON text so CSV and Parquet readers see one type per column.
    The cross-load trials follow the environments' own, told apart by their `saved_by_env_id`
    (empty on an environment's own trial).
    """
    stats_path = path.with_name(f"{path.stem}-stats{path.suffix}")
    cross = ds.crossloads[ds.crossloads["kind"].eq("trial")].drop(columns="kind")
    trials = pd.concat([ds.trials, cross], ignore_index=True) if len(cross) else ds.trials
    for frame, where in ((trials, path), (stats, stats_path)):
        tidy = frame.copy()
        for name in [c for c in tidy.columns if tidy[c].dtype == object]:
            nested = tidy[name].map(lambda v: isinstance(v, (list, dict)))
            if nested.any():
                tidy[name] = tidy[name].where(~nested, tidy[name][nested].map(json.dumps))
        if path.suffix == ".parquet":
            tidy.to_parquet(where, index=False)
        else:
            tidy.to_csv(where, index=False)
    return [path, stats_path]
