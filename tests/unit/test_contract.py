"""The contract between orchestrator and harness (`harness.contract`) against docs/records.md,
the built-in matrix, the harness's command line and the schema 1 runs kept as fixtures."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from harness.catalog import SCHEMA_VERSION, CatalogError
from harness.contract import (
    RECORDS,
    RunSpec,
    add_arguments,
    common_fields,
    fields_of,
    from_arguments,
    upgrade,
)
from matrix.execute.matrix_run import MatrixRun
from matrix.plan.config import load_config
from matrix.results.dataset import load_runs
from matrix.results.reader import read_run

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_1_RUNS = sorted((ROOT / "tests" / "fixtures" / "runs").iterdir())


def documented() -> dict[str, set[str]]:
    """The fields docs/records.md defines, by record kind: the backticked names in the first
    column of each table of a record's section (`## \\`trial\\``; common fields: `## Fields on
    every record`), up to its first subsection."""
    found: dict[str, set[str]] = {}
    kind = None
    for line in (ROOT / "docs" / "records.md").read_text().splitlines():
        if line.startswith("## "):
            heading = re.match(r"## `(\w+)`", line)
            kind = heading[1] if heading else ("common" if "every record" in line else None)
        elif line.startswith("### "):
            kind = None
        elif kind and line.startswith("| `"):
            first_cell = line.split(" | ")[0]
            found.setdefault(kind, set()).update(re.findall(r"`(\w+)`", first_cell))
    return found


def test_every_record_field_is_documented_and_every_documented_one_defined() -> None:
    docs = documented()
    assert set(docs) == {"common", *RECORDS}
    assert docs["common"] == set(common_fields())
    for kind in RECORDS:
        own = set(fields_of(kind)) - set(common_fields())
        assert own - docs[kind] == set(), f"{kind}: defined, not in docs/records.md"
        assert docs[kind] - own == set(), f"{kind}: in docs/records.md, not in harness.contract"


def test_the_harness_defaults_are_the_built_in_matrix() -> None:
    """Run by hand, the harness measures what `matrix run` measures by default."""
    builtin = yaml.safe_load((ROOT / "matrix" / "plan" / "default.yaml").read_text())
    config = load_config(None, {})
    spec = RunSpec(out="", run_id="")
    for field, key in matrix_fields().items():
        assert getattr(spec, field) == list_or(getattr(config, key)), field
        assert key in builtin, key


def matrix_fields() -> dict[str, str]:
    """RunSpec fields the orchestrator takes from its matrix → their MatrixConfig key."""
    import dataclasses

    return {
        f.name: f.metadata["config"] or f.name
        for f in dataclasses.fields(RunSpec)
        if f.metadata["matrix"]
    }


def list_or(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def test_the_plan_record_repeats_every_value_taken_from_the_matrix() -> None:
    assert set(matrix_fields()) <= set(fields_of("plan"))


def test_the_orchestrator_s_arguments_parse_back_to_its_matrix(tmp_path: Path) -> None:
    config = load_config(
        None,
        {"results_dir": str(tmp_path), "cache": "warm,cold", "repeats": 7, "process": "both"},
    )
    args = MatrixRun(config=config, run_id="r1").harness_args("env-a")
    parser = argparse.ArgumentParser()
    add_arguments(parser.add_subparsers(dest="command").add_parser("run"))
    spec = from_arguments(parser.parse_args(args))
    assert (spec.run_id, spec.env_id, spec.out) == ("r1", "env-a", str(tmp_path.absolute() / "r1"))
    assert spec.cache_modes == ["warm", "cold"] and spec.repeats == 7 and spec.process == "both"
    assert spec.start_gate == f"{tmp_path.absolute()}/r1/.gate-env-a/open"
    assert spec.to_argv() == args[1:]


def test_repeats_auto_travels_as_auto() -> None:
    spec = RunSpec(out="o", run_id="r", repeats=None)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert from_arguments(parser.parse_args(spec.to_argv())).repeats is None
    assert "auto" in spec.to_argv()


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({"formats": ["h6"]}, "unknown format 'h6'; choose from savedmodel"),
        ({"cache_modes": ["hot"]}, "unknown cache mode 'hot'; choose from cold"),
        ({"repeats": 0}, "--repeats must be >= 1 (got 0)"),
        ({"process": "forked"}, "--process: 'forked' is not one of fresh, reused, both"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag_and_the_choices(given: dict, error: str) -> None:
    with pytest.raises(CatalogError, match=re.escape(error)):
        RunSpec(out="o", run_id="r", **given).check()


def test_schema_1_trials_get_the_headline_figures_they_imply() -> None:
    trials = [r for run in SCHEMA_1_RUNS for r in read_run(run).records if r["kind"] == "trial"]
    assert trials and {r["schema_version"] for r in trials} == {1} and SCHEMA_VERSION > 1
    measured = [upgrade(r) for r in trials if r.get("load_s") is not None]
    for record in measured:
        assert record["first_prediction_s"] == record["load_s"] + record["first_inference_s"]
        if record["process"] == "fresh":
            assert record["cold_start_s"] == record["import_s"] + record["first_prediction_s"]
    ds = load_runs(SCHEMA_1_RUNS)  # and they table as a current run does
    assert ds.trials["first_prediction_s"].notna().sum() == len(measured)


def test_current_records_are_not_changed() -> None:
    record = {"schema_version": SCHEMA_VERSION, "kind": "trial", "load_s": 1.0}
    assert upgrade(record) is record
