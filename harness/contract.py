"""The contract between orchestrator and harness: what a run is asked to do, and what it writes.

`RunSpec` is the one definition of a run's arguments: the harness's command line is generated
from it and the orchestrator builds one from its matrix, so a new option is one field here. The
record definitions name every field of every record kind (docs/records.md, checked by a test);
`upgrade` brings a record of an older `schema_version` to the current shape, as readers must
accept older runs. Standard library only, and Python 3.8: every image imports it.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, TypedDict

from harness.catalog import (
    CACHE_MODES,
    FORMATS,
    SCHEMA_VERSION,
    CatalogError,
    check_choices,
    parse_model,
)
from harness.precision import MAX_REPEATS, MIN_REPEATS, PRECISION


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _repeats(text: str) -> int | None:
    return None if text == "auto" else int(text)


def _meta(
    help: str = "",
    flag: str = "",
    parse: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] = (),
    low: int | None = None,
    config: str = "",
    matrix: bool = False,
) -> dict[str, Any]:
    """What a RunSpec field's command-line flag and checks need.

    `parse` turns the flag's text into the value (a list field's: comma-separated); `choices`
    are the allowed values (of each item, for a list); `low` the smallest number allowed;
    `matrix` says the orchestrator sets it from its matrix (`MatrixConfig`), under the key
    `config` when that is not the field's name; the `plan` record repeats those values.
    """
    return {
        "help": help,
        "flag": flag,
        "parse": parse,
        "choices": choices,
        "low": low,
        "config": config,
        "matrix": matrix,
    }


@dataclass
class RunSpec:
    """What one harness run does, in one environment (`python -m harness run`).

    Defaults are the built-in matrix's (matrix/plan/default.yaml, held equal by a test): they
    apply when the harness is run by hand; the orchestrator always passes every value.
    """

    out: str = field(metadata=_meta("folder for <env-id>.jsonl and artifacts"))
    run_id: str = field(metadata=_meta())
    env_id: str = field(default="", metadata=_meta("default: derived from this interpreter"))
    models: list[str] = field(
        default_factory=lambda: ["MobileNetV2"], metadata=_meta(parse=_csv, matrix=True)
    )
    formats: list[str] = field(
        default_factory=lambda: list(FORMATS),
        metadata=_meta(parse=_csv, choices=FORMATS, matrix=True),
    )
    cache_modes: list[str] = field(
        default_factory=lambda: ["cold", "warm"],
        metadata=_meta(
            flag="--cache", parse=_csv, choices=CACHE_MODES, config="cache", matrix=True
        ),
    )
    repeats: int | None = field(  # None: auto, until `precision` (or `max_repeats`) is reached
        default=5, metadata=_meta("a number, or auto", parse=_repeats, low=1, matrix=True)
    )
    warmup: int = field(default=1, metadata=_meta(parse=int, low=0, matrix=True))
    inference_runs: int = field(default=10, metadata=_meta(parse=int, low=1, matrix=True))
    process: str = field(
        default="fresh", metadata=_meta(choices=("fresh", "reused", "both"), matrix=True)
    )
    trial_process: str = field(  # how a warm or cold-model trial starts
        default="fresh", metadata=_meta(choices=("forked", "fresh"), matrix=True)
    )
    max_repeats: int = field(
        default=MAX_REPEATS, metadata=_meta(parse=int, low=MIN_REPEATS, matrix=True)
    )
    precision: float = field(default=PRECISION, metadata=_meta(parse=float, matrix=True))
    fresh_artifacts: bool = field(
        default=False,
        metadata=_meta(
            "save every artifact anew, even where the artifact cache has it", matrix=True
        ),
    )
    artifact_cache: str = field(
        default="",
        metadata=_meta("this environment's artifact cache folder (docs/records.md); none if empty"),
    )
    seed: int = field(default=1234, metadata=_meta(parse=int, low=0, matrix=True))
    weights: str = field(default="none", metadata=_meta(choices=("none", "imagenet"), matrix=True))
    work: str = field(default="", metadata=_meta("artifact folder (default: OUT/artifacts/ENV)"))
    model_options: str = field(
        default="",
        metadata=_meta(
            "per model (by its name in --models): its own code, inputs (.npz) and dynamic "
            "dimension sizes, as docs/records.md 'Inputs' describes"
        ),
    )
    start_gate: str = field(
        default="",
        metadata=_meta(
            "wait until this file exists before starting (the orchestrator creates it once "
            "it is idle, so its own work never overlaps the run)"
        ),
    )

    def check(self) -> RunSpec:
        """This spec, or a one-line CatalogError naming the flag, the value and the choices."""
        for model in self.models:
            parse_model(model)
        for spec_field in dataclasses.fields(self):
            value, meta = getattr(self, spec_field.name), spec_field.metadata
            if meta["choices"] and isinstance(value, list):
                check_choices(_label(spec_field), value, meta["choices"])
            elif meta["choices"] and value not in meta["choices"]:
                raise CatalogError(
                    f"{_flag(spec_field)}: {value!r} is not one of {', '.join(meta['choices'])}"
                )
            if meta["low"] is not None and value is not None and value < meta["low"]:
                raise CatalogError(f"{_flag(spec_field)} must be >= {meta['low']} (got {value})")
        return self

    def to_argv(self) -> list[str]:
        """The arguments after `python -m harness run` that give this spec back (`parse`).
        Empty options (no work folder, no gate) are left out; every run value is spelled out."""
        argv: list[str] = []
        for spec_field in dataclasses.fields(self):
            value = getattr(self, spec_field.name)
            if value == "" or value is False:
                continue
            if value is True:
                argv.append(_flag(spec_field))
                continue
            text = ",".join(value) if isinstance(value, list) else _text(value)
            argv += [_flag(spec_field), text]
        return argv

    @classmethod
    def from_config(cls, config: Any, **where: Any) -> RunSpec:
        """A spec of the orchestrator's matrix (its `matrix` fields, by name or `config` key)
        and `where` (out, run_id, env_id, work, model_options, start_gate, models as seen)."""
        values = {
            spec_field.name: getattr(config, spec_field.metadata["config"] or spec_field.name)
            for spec_field in dataclasses.fields(cls)
            if spec_field.metadata["matrix"]
        }
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return cls(**{**values, **where})


def _text(value: Any) -> str:
    """A value as its flag takes it: None (the one optional number, `--repeats`) is `auto`."""
    return "auto" if value is None else str(value)


def _flag(spec_field: dataclasses.Field) -> str:
    return spec_field.metadata["flag"] or "--" + spec_field.name.replace("_", "-")


def _label(spec_field: dataclasses.Field) -> str:
    """How a list field's items are named in errors: `format`, `cache mode`."""
    return {"formats": "format", "cache_modes": "cache mode"}.get(spec_field.name, spec_field.name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per RunSpec field; values are checked by `RunSpec.check`, not here, so a bad
    one gets the same one line wherever the spec came from."""
    for spec_field in dataclasses.fields(RunSpec):
        meta = spec_field.metadata
        required = spec_field.default is dataclasses.MISSING and (
            spec_field.default_factory is dataclasses.MISSING
        )
        default = None if required else _default(spec_field)
        if isinstance(default, bool):
            parser.add_argument(_flag(spec_field), action="store_true", help=meta["help"] or None)
            continue
        parser.add_argument(
            _flag(spec_field),
            dest=spec_field.name,
            type=meta["parse"] or str,
            default=default,
            required=required,
            metavar=_metavar(spec_field),
            help=meta["help"] or None,
        )


def _metavar(spec_field: dataclasses.Field) -> str | None:
    """`{fresh,reused,both}` for a one-of field, as argparse shows its own choices."""
    meta = spec_field.metadata
    return "{" + ",".join(meta["choices"]) + "}" if meta["choices"] and not meta["parse"] else None


def from_arguments(args: argparse.Namespace) -> RunSpec:
    """The RunSpec of parsed arguments (`add_arguments`), checked."""
    return RunSpec(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RunSpec)}).check()


def _default(spec_field: dataclasses.Field) -> Any:
    if spec_field.default_factory is not dataclasses.MISSING:
        return spec_field.default_factory()
    return spec_field.default


# ---- records ------------------------------------------------------------------------------------
# One TypedDict per record kind: its fields (docs/records.md defines each) and their JSON types.
# `| None` marks a field that is `null` where it does not apply. Every field may be absent
# from a record of an older schema.


class Common(TypedDict, total=False):
    schema_version: int
    kind: str
    run_id: str
    env_id: str
    time: str


class PlanRecord(Common, total=False):
    models: list[str]
    formats: list[str]
    cache_modes: list[str]
    repeats: int | str  # a number, or "auto"
    max_repeats: int
    precision: float
    fresh_artifacts: bool
    trial_process: str
    warmup: int
    inference_runs: int
    process: str
    seed: int
    weights: str
    trials_planned: int
    savers: list[str]


class EnvironmentRecord(Common, total=False):
    tool_version: str
    python: str
    python_executable: str
    tensorflow: str
    tensorflow_git: str
    keras: str
    keras_impl: str
    keras_safe_mode: bool
    numpy: str
    tflite_runtime: str
    cpu_model: str
    cpu_count: int
    kernel: str
    memory_gb: float
    hostname: str
    gpus: list[str]
    build_info: dict[str, Any]
    started: str
    in_container: bool
    container_id: str | None
    drop_caches_allowed: bool
    drop_caches_via: str | None
    calibration_s: float
    hypervisor: str | None
    ray_node_id: str  # added on a Ray node (matrix.execute.backends.ray_node), not the harness
    ray_node_hostname: str
    ray_attempt: int


class Storage(TypedDict):
    fstype: str
    mount_point: str
    kind: str


class SavedBy(TypedDict):
    env_id: str
    tensorflow: str
    keras: str
    keras_impl: str


class ArtifactRecord(Common, total=False):
    cell_id: str
    model: str
    format: str
    status: str
    reason: str
    path: str
    bytes: int
    files: int
    largest_file_bytes: int
    params: int | None
    save_s: float
    io_floor_s: float | None
    storage: Storage
    parity_informative: bool | None
    inputs: list[dict[str, Any]]
    input_source: str
    outputs: list[dict[str, Any]]
    user_code_import_s: float | None
    tflite_converter_options: list[str] | None
    tflite_converter_failed: list[str] | None
    reused: bool
    reused_from: str | None


class ScheduleRecord(Common, total=False):
    trials_scheduled: int


class TrialRecord(Common, total=False):
    cell_id: str
    model: str
    format: str
    cache_mode: str
    process: str
    isolation: str
    container_id: str | None
    phase: str
    round: int
    order: int
    status: str
    reason: str
    resident_before: float
    import_libs_resident_before: float
    import_libs_resident: dict[str, float]
    import_libs_checked: list[str]
    eviction: str
    import_target: str
    import_s: float
    startup_s: float
    device_init_s: float
    tflite_runtime: str | None
    load_s: float
    load_cpu_s: float
    first_inference_s: float
    first_prediction_s: float
    cold_start_s: float | None
    user_code_import_s: float | None
    load_major_faults: int
    load_read_bytes: int | None
    inference_s: float | None
    inference_call: str
    rss_before_load_mb: float
    rss_load_delta_mb: float
    peak_rss_mb: float
    parity_status: str
    parity_family: str
    parity_tolerance: float
    parity_rel_err: float | None
    parity_top1_agreement: float | None
    parity_cosine: float | None
    parity_max_abs_diff: float | None
    parity_outputs: int
    output_shape: list[int | None]
    load_index: int
    saved_by: SavedBy
    load_api: str
    fallback: bool
    exception: str


class FailureRecord(Common, total=False):
    scope: str
    model: str
    reason: str


class DoneRecord(Common, total=False):
    trials_written: int
    elapsed_s: float
    calibration_end_s: float


class PrecisionRecord(Common, total=False):
    cell_id: str
    model: str
    format: str
    cache_mode: str
    process: str
    n: int
    attempts: int
    load_median: float | None
    load_ci_low: float | None
    load_ci_high: float | None
    precision: float | None
    target: float | None
    reached: bool | None


class ForkCheckRecord(Common, total=False):
    verdict: str
    pairs: int
    change: float | None
    change_low: float | None
    change_high: float | None
    threshold: float
    fallback: bool
    cells: list[str]
    reason: str


RECORDS: dict[str, type] = {
    "plan": PlanRecord,
    "environment": EnvironmentRecord,
    "artifact": ArtifactRecord,
    "schedule": ScheduleRecord,
    "trial": TrialRecord,
    "precision": PrecisionRecord,
    "fork_check": ForkCheckRecord,
    "failure": FailureRecord,
    "done": DoneRecord,
}
# Fields holding an object of known keys, which tables spread into `<field>_<key>` columns.
NESTED: dict[str, tuple[str, ...]] = {
    "storage": tuple(Storage.__annotations__),
    "saved_by": tuple(SavedBy.__annotations__),
}


def fields_of(kind: str) -> tuple[str, ...]:
    """Every field of a record kind, the common ones first (KeyError for an unknown kind)."""
    return tuple(RECORDS[kind].__annotations__)


def common_fields() -> tuple[str, ...]:
    return tuple(Common.__annotations__)


# ---- older schemas ------------------------------------------------------------------------------


def _from_schema_1(record: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 trials lack the two headline figures; both are sums of what they recorded.

    `first_prediction_s` = load + first inference. `cold_start_s` adds the import for the
    first load of a process (null for a reused process's later loads); schema 1 created the
    device inside the load, so there is no `device_init_s` to add, and it stays null.
    """
    if record.get("kind") != "trial":
        return record
    record = dict(record)
    load, first, imported = (
        _number(record.get(k)) for k in ("load_s", "first_inference_s", "import_s")
    )
    prediction = _number(record.get("first_prediction_s"))
    if prediction is None and load is not None and first is not None:
        prediction = record["first_prediction_s"] = load + first
    first_load = record.get("process") != "reused" or not record.get("load_index")
    cold = record.get("cold_start_s")
    if cold is None and first_load and imported is not None and prediction is not None:
        record["cold_start_s"] = imported + prediction
    return record


def _number(value: Any) -> float | None:
    """`value` if it is a number (JSON's, not a bool), else None."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# schema_version -> the step that makes such a record one of the next version.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_schema_1}


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """`record` in the current schema's shape, its `schema_version` left as written (it says
    how the figures were measured). Current and newer records are returned as they are."""
    version = record.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version >= SCHEMA_VERSION:
        return record
    for step in range(version, SCHEMA_VERSION):
        if step in UPGRADES:
            record = UPGRADES[step](record)
    return record
