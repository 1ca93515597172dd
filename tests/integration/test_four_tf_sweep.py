"""The breadth a user relies on: a real docker sweep over four TF minors that span Python 3.9 and
3.11 and Keras 2 and 3 builds and completes every environment, so a compat pin that rots fails
here rather than on a user's machine. Its report is read here as text and in Chromium by
test_report_browser.py. The sweep takes minutes (`four_tf_sweep` prints how long).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.integration.docker_matrix import FOUR_TF, records

pytestmark = pytest.mark.slow


def test_every_environment_completes(four_tf_sweep: Any) -> None:
    print(f"four-TF docker sweep: {four_tf_sweep.seconds:.0f} s")  # `pytest -s` shows the cost
    assert four_tf_sweep.done.returncode == 0, four_tf_sweep.done.stderr[-3000:]
    manifest = json.loads((four_tf_sweep.run_dir / "manifest.json").read_text())
    outcomes = {o["env_id"]: o["status"] for o in manifest["outcomes"]}
    assert outcomes == dict.fromkeys(FOUR_TF, "ok")
    found = {}
    for env_id in FOUR_TF:
        written = records(four_tf_sweep.run_dir, env_id)
        kinds = [r["kind"] for r in written]
        assert kinds[-1] == "done" and "failure" not in kinds, env_id
        trials = [r for r in written if r["kind"] == "trial"]
        assert not [r["reason"] for r in trials if r["status"] in ("error", "unsupported")]
        # `invalid` (the page cache did not hold on a busy host) is no compat failure, but each
        # format must have measured loads.
        measured = {r["format"] for r in trials if r["phase"] == "measure" and r["status"] == "ok"}
        assert measured == {"h5", "savedmodel", "tflite"}, env_id
        env = next(r for r in written if r["kind"] == "environment")
        found[env_id] = (env["tensorflow"][:4], env["python"][:4], env["keras_impl"])
    assert {python for _, python, _ in found.values()} == {"3.9.", "3.11"}
    assert {keras for _, _, keras in found.values()} == {"keras2", "keras3"}


def test_the_report_draws_the_tf_trend_in_version_order(four_tf_sweep: Any) -> None:
    html = four_tf_sweep.report.read_text(encoding="utf-8")
    header = html[html.index('<div class="meta"') : html.index("<nav>")]
    assert "<strong>4 ran</strong>" in header and "4 skipped" in header and "0 failed" in header
    axes = html[html.index('<section id="axes">') : html.index('<section id="heatmap">')]
    trend = axes[axes.index('id="view-tf"') : axes.index('id="view-device"')]
    ticks = re.findall(r'<tspan x="[\d.]+" dy="0">([\d.]+)</tspan>', trend)
    assert ticks[:4] == ["2.5.3", "2.15.1", "2.16.2", "2.21.0"]
    assert "py3.9" in trend  # TF 2.5 runs on Python 3.9 only: the point names it
    assert '<section id="changes">' in html
    heat = html[html.index('<section id="heatmap">') : html.index('<section id="bars">')]
    rows = re.findall(r"<title>(tf[\d.]+-py[\d.]+-cpu)</title>", heat)
    assert rows == FOUR_TF
