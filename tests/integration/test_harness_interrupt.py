"""A run killed mid-way keeps every record it completed, and its file still parses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from tests.integration.harness_helpers import ROOT, harness_cmd


def test_records_stay_parseable_after_sigkill(tmp_path):
    records = tmp_path / "test-env.jsonl"
    proc = subprocess.Popen(
        harness_cmd(
            tmp_path,
            "--models",
            "dense-10k",
            "--formats",
            "h5,tflite",
            "--cache",
            "warm",
            "--repeats",
            "20",
            "--warmup",
            "0",
        ),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            text = records.read_text() if records.exists() else ""
            if text.count('"kind": "trial"') >= 3:
                break
            assert proc.poll() is None, "the run ended before it could be interrupted"
            time.sleep(0.2)
        else:
            raise AssertionError("no trials written within 300 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the harness and its trial child, mid-trial
        proc.wait()
    lines = records.read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is a whole record
    kinds = [r["kind"] for r in parsed]
    assert kinds[:2] == ["plan", "environment"] and "done" not in kinds
    assert kinds.count("trial") >= 3 and kinds.count("artifact") == 2
