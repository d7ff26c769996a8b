"""The first-launch demo's bootstrap: start it once on a database that holds no run yet.

The entry file calls `ensure_started` on every rerun of every page, so it is idempotent: one
decision per dashboard process and database. Stopping the dashboard (Ctrl-C) stops the demo it
started, and the engine marks that run aborted; runs started from the form are not the
dashboard's to stop and keep running. What the demo runs is in dashboard.demo_workload.
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass, field

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from dashboard import data, launcher, settings
from dashboard.demo_workload import WORKLOAD, demo_form
from storage import queries
from storage.database import DatabaseMissingError, EmptyDatabaseError, StorageError

STOP_WAIT_S = 10.0  # how long the dashboard waits at exit for the demo engine to flush and exit


@dataclass
class _Demos:
    """Per dashboard process: the demo launched for each database, and which were decided."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    decided: set[str] = field(default_factory=set)
    launched: dict[str, launcher.Launched] = field(default_factory=dict)


@st.cache_resource(show_spinner=False)
def _demos() -> _Demos:
    return _Demos()


def _has_runs(target: str) -> bool | None:
    """Whether the database holds runs; None when it cannot be read (then no demo is written into it)."""
    try:
        return not queries.list_runs(data.reader(target)).empty
    except (DatabaseMissingError, EmptyDatabaseError):
        return False
    except (StorageError, SQLAlchemyError):
        return None


def ensure_started(target: str) -> launcher.Launched | None:
    """Start the demo if this database holds no run yet (a first launch); the demo this process started, if any."""
    demos = _demos()
    with demos.lock:
        if target not in demos.decided:
            demos.decided.add(target)
            if _has_runs(target) is False:
                workload = WORKLOAD.write(settings.log_dir() / "demo-workload.jsonl")
                launched = launcher.launch(demo_form(workload).argv(target), "demo")
                demos.launched[target] = launched
                atexit.register(_stop, launched.pid)
        return demos.launched.get(target)


def launched(target: str) -> launcher.Launched | None:
    """The demo this dashboard process started on this database, if it did."""
    return _demos().launched.get(target)


def _stop(pid: int) -> None:
    """At dashboard exit: one SIGTERM (the engine flushes and marks the run aborted), then reap it."""
    if launcher.stop(pid):
        launcher.wait_for_exit(pid, STOP_WAIT_S)
