"""The dashboard in a real browser: Debian's chromium driven by Playwright against a live server.

Skipped when chromium or Playwright is missing, unless BATCHSCOPE_REQUIRE_BROWSER=1 (CI sets it).
Set BATCHSCOPE_SCREENSHOTS=DIR to keep a full-page screenshot of each page there.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

from dashboard.learn_lessons import LESSONS
from tests.browser import PAGES, browser, chromium_path, dashboard, full_screenshot, open_page
from tests.dashboard_fixture import build, build_lessons

MISSING = chromium_path() is None or importlib.util.find_spec("playwright") is None
if MISSING and os.environ.get("BATCHSCOPE_REQUIRE_BROWSER") == "1":
    raise RuntimeError("BATCHSCOPE_REQUIRE_BROWSER=1 but chromium or playwright is not installed")
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(MISSING, reason="needs Debian's chromium and the playwright package")]

MIN_CHARTS = {"runs": 0, "live": 5, "replay": 8, "what_if": 4, "curves": 5, "tune": 1}
SHOWN_RUN = {"live": "live", "replay": "swap"}  # the fixture run each page opens on (else "continuous")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    db = tmp_path_factory.mktemp("browser") / "fixture.db"
    ids = build(db)
    with dashboard(db) as url, browser() as context:
        yield url, context, ids


@pytest.mark.parametrize("name", list(PAGES))
def test_page_loads_draws_its_charts_and_shows_no_exception(name: str, server) -> None:  # type: ignore[no-untyped-def]
    url, context, ids = server
    run = ids[SHOWN_RUN.get(name, "continuous")]
    page = open_page(context, f"{url}/{PAGES[name]}?run={run}", wait_charts=MIN_CHARTS[name])
    try:
        assert page.locator('[data-testid="stException"]').count() == 0
        body = page.inner_text('[data-testid="stMain"]')
        assert "Traceback" not in body and "Error" not in body.split("\n")[0]
        drawn = page.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg.marks')
        assert drawn.count() >= MIN_CHARTS[name]
        if name == "runs":
            # The first page of a cold server can pass open_page's "not running" check before the
            # status widget appears; the table is the page's last element, so wait for it (or fail).
            page.wait_for_selector('[data-testid="stDataFrame"]', timeout=60_000)
            assert page.locator('[data-testid="stDataFrame"]').count() >= 1
            assert "killed mid-run" in body or page.locator("canvas").count() > 0  # the glide grid draws on canvas
        shots = os.environ.get("BATCHSCOPE_SCREENSHOTS")
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            full_screenshot(page, Path(shots) / f"{name}.png")
    finally:
        page.close()


def _current_step(page) -> int:  # type: ignore[no-untyped-def]
    match = re.search(r"Step ([\d,]+) at ", page.inner_text('[data-testid="stMain"]'))
    assert match, "no step line on the Replay page"
    return int(match.group(1).replace(",", ""))


def test_replay_play_advances_the_step(server) -> None:  # type: ignore[no-untyped-def]
    url, context, ids = server
    page = open_page(context, f"{url}/{PAGES['replay']}?run={ids['static']}", wait_charts=8)
    try:
        before = _current_step(page)
        page.get_by_text("Play", exact=True).click()
        page.wait_for_timeout(4000)  # a tick a second
        assert _current_step(page) > before
    finally:
        page.close()


@pytest.fixture(scope="module")
def learn_server(server, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A second dashboard on a database of every Learn lesson's simulated runs, in the same browser."""
    db = tmp_path_factory.mktemp("browser-learn") / "lessons.db"
    build_lessons(db)
    with dashboard(db) as url:
        yield url, server[1]


def test_learn_page_draws_every_lessons_chart_and_figures(learn_server) -> None:  # type: ignore[no-untyped-def]
    url, context = learn_server
    page = open_page(context, f"{url}/Learn", wait_charts=len(LESSONS))
    try:
        assert page.locator('[data-testid="stException"]').count() == 0
        drawn = page.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg.marks')
        assert drawn.count() >= len(LESSONS)
        assert page.locator('[data-testid="stTable"]').count() == len(LESSONS)
        body = page.inner_text('[data-testid="stMain"]')
        assert "190 steps" in body and "a 98-token chunk" in body and "✗" not in body
        assert all(page.locator(f"#{lesson.key}").count() == 1 for lesson in LESSONS)  # the contents' anchors
        shots = os.environ.get("BATCHSCOPE_SCREENSHOTS")
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            full_screenshot(page, Path(shots) / "learn.png")
    finally:
        page.close()


def test_a_link_to_a_view_opened_first_on_a_fresh_server_shows_no_page_not_found(  # type: ignore[no-untyped-def]
        server, tmp_path: Path) -> None:
    """A bookmark or shared link (`/Replay?run=N`) is often the first thing a just-started dashboard
    serves. With the views in a folder named `pages/`, Streamlit took the app for an old-style
    multipage app and covered that first view with a "Page not found" dialog."""
    context = server[1]  # the module's browser (one Playwright per process); a dashboard of its own
    db = tmp_path / "fixture.db"
    ids = build(db)
    with dashboard(db) as url:
        page = open_page(context, f"{url}/{PAGES['replay']}?run={ids['swap']}", wait_charts=MIN_CHARTS["replay"])
        try:
            page.wait_for_timeout(1500)  # the dialog, when it comes, comes with the first script run
            assert page.locator('[role="dialog"]').count() == 0
            assert "Page not found" not in page.inner_text("body")
            assert page.inner_text('[data-testid="stMain"] h1').strip() == "Replay"
        finally:
            page.close()
