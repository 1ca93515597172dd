"""The report in a real browser: Debian's headless Chromium, driven by playwright.

It must open offline without a console error or a single request beyond the file itself, draw
its charts, keep hostile names as text (no script of theirs runs), sort its tables and switch
the environment pair view. The screenshot lands in test-artifacts/report.png for a human eye.
A missing browser fails these tests, never skips them: a skipped browser test hides a broken
report.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
    assert page.locator("#ladder svg.chart circle").count() >= 2
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
    header.click()
    ascending = _column(page, "t-runtime", 5)
    assert ascending == sorted(ascending) and len(set(ascending)) > 1
    header.click()
    assert _column(page, "t-runtime", 5) == sorted(ascending, reverse=True)
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
