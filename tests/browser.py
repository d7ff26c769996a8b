"""Start the dashboard on a free local port and drive it with Debian's chromium through Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# URL paths
PAGES = {"runs": "", "live": "Live", "replay": "Replay", "what_if": "What-if", "curves": "Curves", "tune": "Tune"}


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_dashboard(db: Path | str, port: int | None = None,
                    extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], str]:
    """Start `streamlit run app.py` on 127.0.0.1 reading `db` and wait until it answers; the process
    and its base URL. The caller stops it."""
    port = port or free_port()
    env = {**os.environ, "BATCHSCOPE_DB": str(db)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", *extra_args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"the dashboard did not start:\n{out[-2000:]}")
        time.sleep(0.3)


@contextmanager
def dashboard(db: Path | str, port: int | None = None) -> Iterator[str]:
    """A running dashboard reading `db` for the length of the block; yields its base URL."""
    proc, url = start_dashboard(db, port)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def browser() -> Iterator[object]:
    """A Playwright chromium browser (Debian's binary, a fresh profile)."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(profile, executable_path=exe, headless=True,
                                                        args=CHROMIUM_FLAGS, viewport={"width": 1440, "height": 1000})
        try:
            yield context
        finally:
            context.close()


def open_page(context: object, url: str, wait_charts: int = 1, timeout_ms: int = 60_000) -> object:
    """Load a dashboard page and wait until it has stopped running and drawn its charts."""
    page = context.new_page()  # type: ignore[attr-defined]
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
    # The page title is the first thing every page writes; then wait for the script to finish.
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout_ms,
    )
    if wait_charts:
        page.wait_for_function(
            f"() => document.querySelectorAll('[data-testid=\"stVegaLiteChart\"] canvas, "
            f"[data-testid=\"stVegaLiteChart\"] svg.marks').length >= {wait_charts}",
            timeout=timeout_ms,
        )
    _settle(page, timeout_ms)
    return page


def _settle(page: object, timeout_ms: int = 30_000) -> None:
    """Wait until no element is still a loading skeleton, then a moment for the charts to draw."""
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => document.querySelectorAll('[data-testid=\"stSkeleton\"]').length === 0", timeout=timeout_ms)
    page.wait_for_timeout(800)  # type: ignore[attr-defined]


def full_screenshot(page: object, path: Path) -> None:
    """Streamlit scrolls an inner container, so grow the viewport to the content and shoot that."""
    measure = ("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
               " return Math.max(m ? m.scrollHeight : 0, document.body.scrollHeight); }")
    height = 0
    for _ in range(6):  # growing the viewport can reveal more to lay out; stop once the height holds
        new_height = min(int(page.evaluate(measure)) + 40, 12_000)  # type: ignore[attr-defined]
        if new_height == height:
            break
        height = new_height
        page.set_viewport_size({"width": 1440, "height": height})  # type: ignore[attr-defined]
        _settle(page)
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
