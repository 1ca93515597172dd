"""The HTML report, built from real harness records merged by `load_runs` (no hand-made tables).

The page's behaviour in a browser is tested in test_report_browser.py; here, the file itself:
sections, size, that it asks nothing of the network and that hostile names stay text.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from matrix.report.charts import heat_map
from matrix.report.history import series_frame
from matrix.report.html import write_report
from matrix.report.pairs import embed_json
from matrix.report.text import MAX_ROWS, count, seconds, size
from matrix.results.dataset import cell_problems, cell_stats, load_runs
from tests.integration.report_inputs import (
    ENV_ID,
    HOSTILE_REASON,
    IMG_NAME,
    MODEL,
    SCRIPT_NAME,
    Inputs,
    build_report,
    real_run,
    report_inputs,
    sweep_run,
)

pytestmark = pytest.mark.slow  # one real harness run (about a minute), shared by the session

# The sections every report has (`What changed` needs two versions of TF or Python).
SECTIONS = ["headline", "axes", "heatmap", "bars", "ladder", "tables", "article", "runtime"]
SECTIONS += ["parity", "environments", "problems", "noise", "pairs", "history"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "report-inputs"


@pytest.fixture(scope="module")
def inputs(base: Path) -> Inputs:
    return report_inputs(base)


@pytest.fixture(scope="module")
def html(base: Path, inputs: Inputs) -> str:
    return build_report(base).read_text(encoding="utf-8")


def _pairs(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="pairs-data">(.*?)</script>', html, re.S)
    assert found, "the pair view's data is missing"
    return json.loads(found.group(1))


def test_every_section_is_there(html: str) -> None:
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert html.count('<svg class="chart"') >= 5  # heat maps, bars, ladder, sparklines
    assert "cold-model" in html and "no <code>cold</code> measurements" in html


def test_size_is_small(html: str) -> None:
    assert len(html.encode()) < 10 * 1024 * 1024


def test_nothing_is_fetched_from_elsewhere(html: str) -> None:
    assert not re.search(r"""(?:src|href|action|srcset)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert not re.search(r"url\(|@import|<link|<iframe", html, re.I)
    assert "default-src 'none'" in html  # the browser itself refuses any fetch


def test_hostile_names_stay_text(html: str) -> None:
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=window.__xss=1&gt;" in html
    for raw in (SCRIPT_NAME, IMG_NAME, "<script>alert", "<img", "<script>window"):
        assert raw not in html
    # Exactly the report's own two scripts: the pair data and the page's code.
    assert html.count("<script") == html.count("</script>") == 2
    assert "&lt;/script&gt;&lt;script&gt;window.__xss=2" in html  # the failure's reason


def test_pair_view_data(html: str) -> None:
    pairs = _pairs(html)
    assert pairs["envs"] == [f"{ENV_ID} · rep-a", f"{ENV_ID} · rep-b", f"{ENV_ID}-tfkeras"]
    assert {tuple(r) for r in pairs["rows"]} >= {
        (m, f, c)
        for m in (MODEL, SCRIPT_NAME, IMG_NAME)
        for f in ("h5", "tflite")
        for c in ("warm", "cold-model")
    }
    row = pairs["rows"].index([MODEL, "h5", "warm"])
    a, b, other = (cells[row] for cells in pairs["cells"])
    assert b["median"] == pytest.approx(a["median"] * 1.3)
    assert a["eviction"] == b["eviction"] == "read" and a["keras"] == "keras3"
    assert other["keras"] == "tf-keras"
    if importlib.util.find_spec("scipy"):
        p, verdict = pairs["p"]["0,1"][row]
        assert 0 < p <= 1 and verdict in ("slower", "underpowered")  # B is A's loads x 1.3
    else:
        assert pairs["p"] is None
    assert pairs["cells"][0][pairs["rows"].index([SCRIPT_NAME, "h5", "warm"])] is None


def test_problems_list_the_failure_with_its_reason(html: str) -> None:
    problems = html[html.index('<section id="problems">') : html.index('<section id="noise">')]
    assert "failure" in problems or "error" in problems
    assert HOSTILE_REASON.replace("<", "&lt;").replace(">", "&gt;") in problems


def test_headline_names_the_format_first_to_predict(html: str, inputs: Inputs) -> None:
    headline = html[html.index('<section id="headline">') : html.index('<section id="heatmap">')]
    assert inputs.stats["first_prediction_median"].notna().all()  # the harness records it
    first = inputs.stats.loc[
        inputs.stats.groupby(["run_id", "env_id", "model", "cache_mode"])[
            "first_prediction_median"
        ].idxmin(),
        "format",
    ]
    for fmt in set(first):
        assert f'<b class="win">{fmt}</b>' in headline
    assert "first to predict in" in headline and "cold start" in headline


def test_a_fresh_run_has_parity_verdicts_and_device_start_up(html: str, inputs: Inputs) -> None:
    """The harness's own records (schema 2): every cell has a parity verdict and a device
    start-up time, and the report shows them (no "not checked" in a new run)."""
    stats = inputs.stats
    assert stats["parity_status"].isin(["pass", "fail", "not-informative"]).all()
    assert stats["device_init_median"].notna().all()
    parity = html[html.index('<section id="parity">') : html.index('<section id="environments">')]
    assert 'class="unchecked"' not in parity and 'class="good"' in parity  # dense-10k passes
    assert ">Device init</th>" in html


def test_history_is_optional(inputs: Inputs, tmp_path: Path) -> None:
    path = write_report(inputs.ds, inputs.stats, inputs.problems, tmp_path / "r", "no history")
    text = path.read_text()
    assert path == tmp_path / "r" / "index.html"
    assert '<section id="history">' not in text and 'href="#history"' not in text


def _sweep_report(base: Path, out: Path, envs: int, models: int) -> str:
    """The report of a sweep, with the history of it and a night before it (one run alone has
    no history to show)."""
    runs = [sweep_run(real_run(base), out / name, envs, models) for name in ("night-1", "sweep")]
    ds = load_runs(runs[1:])
    history = series_frame(load_runs(runs))
    return write_report(
        ds, cell_stats(ds), cell_problems(ds), out / "report", "sweep", history=history
    ).read_text(encoding="utf-8")


def _section(html: str, section: str) -> str:
    start = html.index(f'<section id="{section}">')
    return html[start : html.index("</section>", start)]


def _rows(html: str, table: str) -> int:
    body = html[html.index(f'id="{table}"') :]
    return body[body.index("<tbody>") : body.index("</tbody>")].count("<tr>")


def test_a_big_sweep_keeps_every_section_and_counts_what_it_leaves_out(
    base: Path, tmp_path: Path
) -> None:
    """1200 measured and 1200 invalid cells in 30 environments: the per-cell tables keep
    MAX_ROWS rows and say how many more there are, the bars pool the environments, and the
    heat map still has every environment."""
    envs, models = 30, 20
    html = _sweep_report(base, tmp_path, envs, models)
    cells = envs * models * 2  # h5 and tflite, warm; every cold-model cell is invalid
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert len(html.encode()) < 10 * 1024 * 1024
    for table in ("t-runtime", "t-problems", "t-history"):
        assert _rows(html, table) == MAX_ROWS
    assert f"{cells - MAX_ROWS} more cells not listed" in _section(html, "runtime")
    assert f"{cells - MAX_ROWS} more problem cells not listed" in _section(html, "problems")
    assert f"{cells - MAX_ROWS} more series not listed" in _section(html, "history")
    assert "page cache not evicted" in _section(html, "problems")
    bars = _section(html, "bars")
    assert bars.count('<svg class="chart"') == models
    assert f"{envs} environments are too many to draw a panel each" in bars
    assert f"<h3>Median of {envs} environments</h3>" in bars
    heat = _section(html, "heatmap")
    assert all(f"<title>sweep-{e:02d}</title>" in heat for e in range(envs))


def test_a_sweep_of_a_few_hundred_cells_lists_every_cell(base: Path, tmp_path: Path) -> None:
    envs, models = 5, 15
    html = _sweep_report(base, tmp_path, envs, models)
    cells = envs * models * 2
    for table in ("t-runtime", "t-problems", "t-history"):
        assert _rows(html, table) == cells
    assert 'class="more"' not in html
    assert _section(html, "bars").count('<svg class="chart"') == envs * models


def test_units_fit_the_value() -> None:
    assert [seconds(v) for v in (2.5, 0.0123, 4.56e-6, None)] == [
        "2.5 s",
        "12.3 ms",
        "4.56 µs",
        "—",
    ]
    assert [size(v) for v in (512, 70_896, 3.5e9)] == ["512 B", "70.9 kB", "3.5 GB"]
    assert count(9922) == "9.92k"


def test_svg_and_json_escape_what_they_embed() -> None:
    svg = heat_map(["<b>env</b>"], ["h5"], {}, seconds, "x")
    assert "<b>" not in svg and "&lt;b&gt;env&lt;/b&gt;" in svg
    embedded = embed_json({"name": "</script><script>x()</script>&"})
    assert "<" not in embedded and ">" not in embedded and "&" not in embedded
    assert json.loads(str(embedded)) == {"name": "</script><script>x()</script>&"}
