"""Reading records: bad lines are skipped and reported as file:line, never fatal."""

from __future__ import annotations

import json
from pathlib import Path

from matrix.results.reader import (
    JsonlTail,
    error_count,
    is_complete,
    read_jsonl,
    read_run,
    short_reason,
)


def test_truncated_last_line_is_skipped_and_reported(tmp_path: Path, record, jsonl) -> None:
    good = [
        record("plan", trials_planned=1),
        record("trial", model="MobileNetV2", format="h5", cache_mode="warm", load_s=0.5),
    ]
    path = jsonl(tmp_path / "env.jsonl", good, tail='{"schema_version": 1, "kind": "tri')
    found = read_jsonl(path)
    assert found.records == good
    assert found.problems == [
        f"{path}:3: skipped: truncated last line, not valid JSON (Unterminated string starting at)"
    ]


def test_garbage_in_the_middle_keeps_the_records_around_it(tmp_path: Path, record) -> None:
    path = tmp_path / "env.jsonl"
    lines = [
        json.dumps(record("plan")),
        "not json at all",
        json.dumps([1, 2]),
        "",
        json.dumps(record("done")),
    ]
    path.write_text("\n".join(lines) + "\n")
    found = read_jsonl(path)
    assert [r["kind"] for r in found.records] == ["plan", "done"]
    assert len(found.problems) == 2
    assert found.problems[0].startswith(f"{path}:2: skipped: not valid JSON")
    assert found.problems[1] == f"{path}:3: skipped: not a record (no 'kind' field)"


def test_records_of_a_newer_schema_are_kept_with_a_warning(tmp_path: Path, record, jsonl) -> None:
    path = jsonl(tmp_path / "env.jsonl", [record("plan", schema_version=99)])
    found = read_jsonl(path)
    assert len(found.records) == 1
    assert "schema_version 99" in found.problems[0]


def test_unreadable_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    found = read_jsonl(tmp_path / "missing.jsonl")
    assert found.records == []
    assert found.problems[0].endswith("missing.jsonl: cannot read: No such file or directory")


def test_read_run_reads_every_environment_file(tmp_path: Path, record, jsonl) -> None:
    jsonl(tmp_path / "a.jsonl", [record("plan", env_id="a")])
    jsonl(tmp_path / "b.jsonl", [record("plan", env_id="b")], tail="{")
    (tmp_path / "a.log").write_text("not records\n")
    found = read_run(tmp_path)
    assert [r["env_id"] for r in found.records] == ["a", "b"]
    assert len(found.problems) == 1 and "b.jsonl:2:" in found.problems[0]


def test_tail_returns_only_whole_lines(tmp_path: Path, record) -> None:
    path = tmp_path / "env.jsonl"
    tail = JsonlTail(path)
    assert tail.read_new() == []  # not written yet
    first, second = json.dumps(record("plan")), json.dumps(record("done"))
    with path.open("a") as handle:
        handle.write(first + "\n" + second[:10])
    assert [r["kind"] for r in tail.read_new()] == ["plan"]
    with path.open("a") as handle:
        handle.write(second[10:] + "\n")
    assert [r["kind"] for r in tail.read_new()] == ["done"]
    assert tail.read_new() == []


def test_error_count_and_completeness(record) -> None:
    records = [
        record("plan"),
        record("artifact", model="m", format="h5", status="error", reason="boom"),
        record("trial", model="m", format="keras", cache_mode="warm", status="invalid"),
        record("failure", scope="model", model="x", reason="cannot build"),
    ]
    assert error_count(records) == 2
    assert not is_complete(records)
    assert is_complete([*records, record("done", trials_written=1)])


def test_short_reason_is_the_first_line_cut_to_width() -> None:
    assert short_reason("\n  RuntimeError: boom\nstderr tail") == "RuntimeError: boom"
    assert short_reason("x" * 100, width=10) == "x" * 9 + "…"
    assert short_reason(None) == ""
