"""Where the dashboard reads from and how often it refreshes (set by environment, never by a page)."""

from __future__ import annotations

import os
from pathlib import Path

from storage.database import default_target, is_url

LIVE_REFRESH_S = 1.0
LIVE_WINDOW_STEPS = 150  # the Live Gantt's sliding window
REPLAY_WINDOW_STEPS = 120  # steps either side of the current one in the zoomed Replay Gantt
MAX_GANTT_BARS = 4_000  # above this the whole-run Gantt is binned on the server
ROOT = Path(__file__).resolve().parents[1]


def db_target() -> str:
    """$BATCHSCOPE_DB or batchscope.db; a relative path is taken from the repo root."""
    target = default_target()
    if is_url(target) or Path(target).is_absolute():
        return target
    return str(ROOT / target) if "BATCHSCOPE_DB" not in os.environ else str(Path(target).resolve())


def log_dir() -> Path:
    """Where launched engines write their output (next to a SQLite database, else a temp folder)."""
    target = db_target()
    base = Path(target).parent if not is_url(target) else Path(os.environ.get("TMPDIR", "/tmp"))
    return base / "batchscope-logs"
