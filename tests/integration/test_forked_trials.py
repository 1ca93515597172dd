"""Forked trials and the artifact cache, on the local TensorFlow with a tiny model (real runs).

A forked trial comes from a zygote that imported TensorFlow once; fresh-process controls run
beside it and a `fork_check` record judges them; a forked child that hangs is killed and the
environment's trials are fresh from then on. A second run reuses the first one's artifacts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.integration.harness_helpers import of_kind, read_records, run_harness

TINY = ("--models", "dense-10k", "--formats", "h5", "--cache", "warm", "--trial-process", "forked")
# Imported (as the model's own code) in every TensorFlow process of the model: in a child forked
# from the zygote it never returns, as a child deadlocked on a lock of the runtime would not.
HANG_IN_FORKED_CHILD = """
import os, time
with open(f"/proc/{os.getppid()}/cmdline", "rb") as parent:
    if b"harness.zygote" in parent.read():
        time.sleep(3600)
"""


def _measured(records: list[dict], process: str) -> list[dict]:
    return [
        r
        for r in of_kind(records, "trial")
        if r["phase"] == "measure" and r.get("process") == process
    ]


def test_forked_trials_have_fresh_controls_and_a_rerun_reuses_the_artifacts(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, second = tmp_path / "first", tmp_path / "second"
    args = (*TINY, "--repeats", "2", "--artifact-cache", str(cache))
    proc = run_harness(first, *args, run_id="first")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records(first)
    forked, fresh = _measured(records, "forked"), _measured(records, "fresh")
    # Fresh controls in every round but the last: a cell's forked trials outnumber them.
    assert len(forked) == 2 and len(fresh) == 1
    assert {r["status"] for r in forked + fresh} == {"ok"}
    assert {r["parity_status"] for r in forked} == {"pass"}
    # The zygote's one import, timed as a fresh process times its own.
    assert (
        len({r["import_s"] for r in forked}) == 1 and fresh[0]["import_s"] != forked[0]["import_s"]
    )
    (check,) = of_kind(records, "fork_check")
    assert check["pairs"] == 1 and check["verdict"] == "undecided" and not check["fallback"]
    (saved,) = of_kind(records, "artifact")
    assert saved["reused"] is False and saved["save_s"] > 0

    proc = run_harness(second, *args, run_id="second")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records(second)
    (reused,) = of_kind(records, "artifact")
    assert reused["reused"] is True and reused["reused_from"] == "first"
    assert reused["save_s"] == saved["save_s"] and reused["io_floor_s"] is not None
    (entry,) = cache.glob("*/model.h5")
    assert os.stat(reused["path"]).st_ino == os.stat(entry).st_ino  # linked, not copied
    assert {r["status"] for r in of_kind(records, "trial")} == {"ok"}

    proc = run_harness(tmp_path / "third", *args, "--fresh-artifacts", run_id="third")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (fresh_save,) = of_kind(read_records(tmp_path / "third"), "artifact")
    assert fresh_save["reused"] is False and fresh_save["save_s"] != saved["save_s"]


def test_a_hung_forked_child_is_killed_and_the_environment_falls_back_to_fresh(
    tmp_path: Path,
) -> None:
    hang = tmp_path / "hang.py"
    hang.write_text(HANG_IN_FORKED_CHILD)
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"dense-10k": {"code": [str(hang)]}}))
    out = tmp_path / "out"
    proc = run_harness(out, *TINY, "--repeats", "2", "--model-options", str(options))
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records(out)
    trials = of_kind(records, "trial")
    (hung,) = [r for r in trials if r.get("process") == "forked"]
    assert hung["status"] == "retried" and "did not answer" in hung["reason"]
    (check,) = of_kind(records, "fork_check")
    assert check["verdict"] == "hung" and check["fallback"] is True
    later = trials[trials.index(hung) + 1 :]
    assert later and {r["process"] for r in later} == {"fresh"}
    assert {r["status"] for r in _measured(records, "fresh")} == {"ok"}
    assert len(_measured(records, "fresh")) >= 2
