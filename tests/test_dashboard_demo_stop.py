"""Stopping the dashboard stops the demo engine it started: a real `streamlit run app.py` on an
empty database, driven without a browser through Streamlit's agent API, then Ctrl-C (SIGINT)."""

from __future__ import annotations

import signal
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser import start_dashboard

pytestmark = pytest.mark.slow
WAIT_S = 180  # a deadline for things that must happen, never a measured figure


def _wait_for(what: str, check, timeout_s: float = WAIT_S):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _demo_run(db: Path) -> tuple[str, int | None, int] | None:
    """(status, engine pid, steps) of the first run once it has recorded a step."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT status, pid, num_steps, name FROM runs ORDER BY id LIMIT 1").fetchone()
    except sqlite3.OperationalError:  # the engine is still creating the tables
        return None
    if row is None or not row[2]:
        return None
    assert row[3].startswith("demo"), row[3]
    return row[0], row[1], row[2]


def test_ctrl_c_on_the_dashboard_stops_its_demo_and_marks_the_run_aborted(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    proc, url = start_dashboard(db, extra_args=("--server.enableAgentApi", "true"))
    try:
        # One script run, as a first visitor's page load, starts the demo.
        request = urllib.request.Request(f"{url}/_stcore/agent/interact", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=WAIT_S) as resp:
            assert resp.status in (200, 202)
        status, pid, _ = _wait_for("the demo run's first step", lambda: _demo_run(db))
        assert status == "running" and pid is not None
        assert Path(f"/proc/{pid}").exists()

        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    status, _, steps = _demo_run(db) or ("missing", None, 0)
    assert status == "aborted"
    assert steps > 0
    assert not Path(f"/proc/{pid}").exists()  # exited and reaped, not left running or as a zombie

