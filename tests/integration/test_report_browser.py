"""The report in a real browser: Debian's headless Chromium, driven by playwright.

It must open offline without a console error or a single request beyond the file itself, draw
its charts, keep hostile names as text (no script of theirs runs), sort its tables and switch
the environment pair view; on the four-TF docker sweep's report, switch the axis views without
overflowing a laptop screen. Screenshots land in test-artifacts/ for a human eye.
A missing browser fails these tests, never skips them: a skipped browser test hides a broken
report.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from matrix.report.html import write_report
from matrix.results.dataset import cell_problems, cell_stats, load_runs
from tests.conftest import fake_gpu_twin
from tests.integration.harness_helpers import ROOT
from tests.integration.report_inputs import ENV_ID, IMG_NAME, SCRIPT_NAME, build_report

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# No GPU, no sandbox (root in a container), and none of Chromium's own background fetches,
# so "no request leaves the page" measures the report alone.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = ROOT / "test-artifacts" / "report.png"


class Seen:
    """What the page did while it was open: console errors, requests, dialogs."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run tests/ensure-chromium.sh (installs Debian's "
            "chromium) before the browser tests",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "playwright is not installed: pip install -e '.[test]' (never run "
            "`playwright install`; the system Chromium from tests/ensure-chromium.sh "
            "is used)",
            pytrace=False,
        )
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def seen() -> Seen:
    return Seen()


@pytest.fixture(scope="module")
def page(browser: Any, seen: Seen, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    report = build_report(tmp_path_factory.getbasetemp() / "report-inputs")
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    page.on("request", lambda r: seen.requests.append(r.url))
    page.on("dialog", lambda d: (seen.dialogs.append(d.message), d.dismiss()))
    page.goto(report.as_uri(), wait_until="load")
    yield page
    page.close()


def test_opens_without_errors_or_requests(page: Any, seen: Seen) -> None:
    assert page.title().startswith("Report of ")
    assert seen.errors == []
    assert seen.requests == [page.url]


def test_charts_are_drawn(page: Any) -> None:
    assert page.locator("#heatmap svg.chart rect").count() >= 4
    assert page.locator("#bars svg.chart rect").count() >= 4
    # Its models are one size (renamed copies): a chart of one dot column collapses to why.
    assert page.locator("#ladder svg.chart").count() == 0
    assert "needs at least two" in page.locator("#ladder").inner_text()
    box = page.locator("#heatmap svg.chart").first.bounding_box()
    assert box["width"] > 200 and box["height"] > 40


def test_hover_highlights_a_series(page: Any) -> None:
    page.locator('#heatmap g[data-series="tflite"]').first.hover()
    assert page.locator("#heatmap.hovering").count() == 1
    assert page.locator('#heatmap .hl[data-series="tflite"]').count() >= 1
    assert page.locator('#heatmap .hl[data-series="h5"]').count() == 0


def test_hostile_names_are_text(page: Any, seen: Seen) -> None:
    headline = page.locator("#headline").inner_text()
    assert SCRIPT_NAME in headline and IMG_NAME in headline
    assert SCRIPT_NAME in page.locator("#problems").inner_text()
    assert page.evaluate("window.__xss") is None
    assert seen.dialogs == []


def _column(page: Any, table: str, index: int) -> list[float]:
    return [
        float(v)
        for v in page.locator(f"#{table} tbody tr").evaluate_all(
            f"rows => rows.map(r => r.cells[{index}].dataset.sort)"
        )
    ]


def test_tables_sort_on_click(page: Any) -> None:
    header = page.locator("#t-runtime th", has_text="Import")
    index = page.locator("#t-runtime th").all_inner_texts().index(header.inner_text())
    header.click()
    ascending = _column(page, "t-runtime", index)
    assert ascending == sorted(ascending) and len(set(ascending)) > 1
    header.click()
    assert _column(page, "t-runtime", index) == sorted(ascending, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"


def _pair_row(page: Any, model: str, fmt: str, cache: str) -> list[str]:
    for row in page.locator("#t-pairs tbody tr").all():
        cells = row.locator("td").all_inner_texts()
        if cells[:3] == [model, fmt, cache]:
            return cells
    raise AssertionError(f"no row {model} {fmt} {cache} in the pair view")


def test_pair_selector_changes_the_comparison(page: Any) -> None:
    page.select_option("#pair-a", label=f"{ENV_ID} · rep-a")
    page.select_option("#pair-b", label=f"{ENV_ID} · rep-b")
    row = _pair_row(page, "dense-10k", "h5", "warm")
    assert row[5] == "+30 %" and "not comparable" not in row[7]
    assert _pair_row(page, SCRIPT_NAME, "h5", "warm")[7] == "not comparable: only in B"
    page.select_option("#pair-b", label=f"{ENV_ID}-tfkeras")
    row = _pair_row(page, "dense-10k", "h5", "warm")
    assert row[5] == "—" and row[7] == "not comparable: Keras keras3 vs tf-keras"


def test_screenshot(page: Any) -> None:
    page.select_option("#pair-b", label=f"{ENV_ID} · rep-b")
    page.mouse.move(0, 0)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 50_000


# ---- the axis views, on the real four-TF docker sweep's report ----------------------------------

GPU_TWINS = ["tf2.15-py3.11-cpu", "tf2.16-py3.11-cpu"]
LAPTOP = {"width": 1280, "height": 720}


@pytest.fixture(scope="module")
def sweep_report(four_tf_sweep: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep's records, and beside them a fake GPU twin of two of its environments
    (SavedModel loading twice as fast): no GPU runs here, and the CPU vs GPU view needs one."""
    assert four_tf_sweep.done.returncode == 0, four_tf_sweep.done.stderr[-3000:]
    base = tmp_path_factory.mktemp("sweep-report")
    twin = fake_gpu_twin(four_tf_sweep.run_dir, base / "fake-gpu", GPU_TWINS, {"savedmodel": 2.0})
    ds = load_runs([four_tf_sweep.run_dir, twin])
    return write_report(ds, cell_stats(ds), cell_problems(ds), base / "report", "four TF")


@pytest.fixture(scope="module")
def sweep_page(browser: Any, sweep_report: Path) -> Iterator[tuple[Any, Seen]]:
    seen = Seen()
    page = browser.new_page(viewport=LAPTOP)
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    page.on("request", lambda r: seen.requests.append(r.url))
    page.goto(sweep_report.as_uri(), wait_until="load")
    yield page, seen
    page.close()


def _visible(page: Any, selector: str) -> list[Any]:
    return [e for e in page.locator(selector).all() if e.is_visible()]


def _shown_figures(page: Any) -> list[tuple[str, str]]:
    return [
        (f.get_attribute("data-metric"), f.get_attribute("data-cache"))
        for f in _visible(page, "#axes .axis-view figure")
    ]


def test_axis_tabs_switch_views(sweep_page: tuple[Any, Seen]) -> None:
    page, seen = sweep_page
    seen_views = {}
    for axis in ("device", "keras", "python", "tf"):
        page.click(f"#tab-{axis}")
        views = _visible(page, "#axes .axis-view")
        assert [v.get_attribute("data-axis") for v in views] == [axis]
        assert page.get_attribute(f"#tab-{axis}", "aria-selected") == "true"
        seen_views[axis] = (views[0].inner_text(), _shown_figures(page))
    for axis in ("tf", "device"):  # drawn: the first figure, for the coldest cache mode
        shown = seen_views[axis][1]
        assert shown and set(shown) == {("first_prediction_s", "warm")}, axis
    ticks = page.locator("#view-tf figure:not([hidden]) tspan").all_text_contents()
    assert ticks[:4] == ["2.5.3", "py3.9", "2.15.1", "py3.11"]
    assert "GPU ÷ CPU" in seen_views["device"][0]
    assert seen_views["keras"][1] == [] and "tf-keras" in seen_views["keras"][0]
    assert seen_views["python"][1] == [] and "only together with" in seen_views["python"][0]
    assert seen.errors == [] and seen.requests == [page.url]


def test_the_figure_picker_switches_every_panel(sweep_page: tuple[Any, Seen]) -> None:
    page, seen = sweep_page
    page.click("#tab-tf")
    before = len(_shown_figures(page))
    page.select_option("#axis-metric", "load_s")
    assert set(_shown_figures(page)) == {("load_s", "warm")} and len(_shown_figures(page)) == before
    page.click("#tab-device")
    assert set(_shown_figures(page)) == {("load_s", "warm")}  # the choice holds across tabs
    page.select_option("#axis-metric", "first_prediction_s")
    assert seen.errors == []


@pytest.mark.parametrize("viewport", [LAPTOP, {"width": 1366, "height": 900}])
def test_nothing_overflows(sweep_page: tuple[Any, Seen], viewport: dict[str, int]) -> None:
    """On a laptop screen the page never scrolls sideways, and no view's chart or caption is
    wider than the page: each panel fits whole, whichever tab is open."""
    page, _ = sweep_page
    page.set_viewport_size(viewport)
    for axis in ("tf", "device", "keras", "python"):
        page.click(f"#tab-{axis}")
        width = page.evaluate("document.documentElement.clientWidth")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, axis
        for element in _visible(page, "#axes svg.chart, #axes figcaption, #axes .controls"):
            box = element.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, axis
    page.click("#tab-tf")
    page.locator("#axes").screenshot(path=str(SCREENSHOT.with_name("axes.png")))
