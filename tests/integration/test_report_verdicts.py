"""The report's verdicts, on checked-in real records (tests/fixtures/runs, schema 1) and on
copies of them rewritten with the figures of schema 2 (`report_inputs.verdict_run`).

No TensorFlow runs here: what is tested is how records become the page's verdicts, which
format predicts first, whether parity passed, which cells are the article's method, and
whether a "cold" load on a VM can be trusted. (test_report.py covers the page as a whole on
a fresh harness run.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from matrix.report.html import write_report
from matrix.results.dataset import cell_problems, cell_stats, load_runs
from tests.integration.report_inputs import (
    FAILED_REL_ERR,
    HYPERVISOR,
    REUSED_LOADS,
    verdict_run,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "runs"
LOCAL_RUN = FIXTURES / "20261127-201543-761b"
pytestmark = pytest.mark.skipif(not LOCAL_RUN.is_dir(), reason="tests/fixtures/runs/ absent")


def _report(runs: list[Path], out: Path) -> str:
    ds = load_runs(runs)
    path = write_report(ds, cell_stats(ds), cell_problems(ds), out, "verdicts")
    return path.read_text(encoding="utf-8")


def _section(html: str, section: str) -> str:
    start = html.index(f'<section id="{section}">')
    return html[start : html.index("</section>", start)]


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> str:
    base = tmp_path_factory.mktemp("verdicts")
    return _report([verdict_run(LOCAL_RUN, base / "20261128-000000-v2")], base / "report")


def test_the_headline_ranks_by_first_prediction_not_load(verdicts: str) -> None:
    """TFLite loads fastest in every cell, but its first call takes seconds: h5 or another
    Keras format predicts first, and the headline says so."""
    headline = _section(verdicts, "headline")
    assert "Which format is ready to predict first?" in headline
    assert '<b class="win">tflite</b>' not in headline
    assert "first to predict in" in headline and "tflite first" not in headline
    assert "cold start" in headline and "load " in headline  # beside it, load alone still shown


def test_parity_fail_is_red_and_not_informative_is_not_green(verdicts: str) -> None:
    parity = _section(verdicts, "parity")
    fails = re.findall(r'<td data-sort="2" class="bad"[^>]*>fail<small>([^<]*)</small>', parity)
    assert fails and all(f"rel err {FAILED_REL_ERR}" in f for f in fails)
    assert 'class="uninformative"' in parity and "not informative" in parity
    assert 'class="good"' not in parity  # nothing passed: nothing is green
    assert "expected for quantized formats" not in verdicts


def test_reused_cells_and_the_articles_table(verdicts: str) -> None:
    article = _section(verdicts, "article")
    assert "Reused-process cells (the article's method)" in article
    assert 'id="t-reused"' in article
    mean = sum(REUSED_LOADS) / len(REUSED_LOADS)
    row = next(r for r in article.split("<tr>") if "mean of 4 loads in one process" in r)
    assert f">{mean * 1000:.0f} ms<" in row  # the article's figure: the mean, not the median
    assert "median of 3 fresh processes, warm" in article  # the other artifacts, labelled
    assert "garbage collector enabled, no collection between loads" in article


def test_a_vm_with_an_implausibly_fast_io_floor_is_warned_about(verdicts: str) -> None:
    warning = re.findall(r'<p class="warning">([^<]*)</p>', _section(verdicts, "headline"))
    assert len(warning) == 1
    assert warning[0].startswith(
        f"Cold only inside the guest in local-tf2.21-py3.11-cpu (a {HYPERVISOR} virtual machine)"
    )
    assert "5.0 GB/s" in warning[0]


def test_runtime_table_shows_device_init_call_style_and_cache_proof(verdicts: str) -> None:
    runtime = _section(verdicts, "runtime")
    for column in (
        "Device init",
        "First prediction",
        "Cold start",
        "Called as",
        "Read by load",
        "Major faults",
    ):
        assert f">{column}</th>" in runtime
    assert "<td>predict_on_batch</td>" in runtime and "<td>tflite invoke</td>" in runtime


def test_a_schema_1_run_still_reports_with_parity_not_checked(tmp_path: Path) -> None:
    runs = sorted(p for p in FIXTURES.iterdir() if p.is_dir())
    html = _report(runs, tmp_path)
    parity = _section(html, "parity")
    measured = cell_stats(load_runs(runs))[["env_id", "model", "format"]].drop_duplicates()
    assert parity.count('class="unchecked"') == len(measured) > 0  # every measured artifact
    assert 'class="good"' not in parity and 'class="bad"' not in parity
    assert '<p class="warning">' not in html  # no hypervisor recorded: nothing to warn of
    headline = _text(_section(html, "headline"))
    assert "first to predict in" in headline and "cold start" in headline
    assert "median of 3 fresh processes" in _section(html, "article")
    assert 'id="t-reused"' not in html
