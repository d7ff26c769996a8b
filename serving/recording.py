"""Recording what a server serves: one run per segment of its life (one, unless it rotates).

A served run is recorded like any other (storage.Recorder, step by step), marked as served: its
source, the URL it serves, the pid (so the dashboard can stop it) and, for a rotated recording, the
run before it (RunInfo's typed fields).
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine as SqlEngine

from engine.metrics import RunSummary
from engine.snapshot import RunInfo, StepRecorder
from storage.database import open_for_write
from storage.recorder import Recorder


def served_run_info(description: dict[str, Any], url: str, previous_run_id: int | None = None) -> RunInfo:
    """description: RunInfo's name, mode, batching, config, model, workload."""
    return RunInfo(**description, source="served", served_url=url, pid=os.getpid(), previous_run_id=previous_run_id)


class RecordedRun:
    """engine.online.RunRecording over a storage Recorder."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    @property
    def run_id(self) -> int | None:
        return self._recorder.run_id

    @property
    def recorder(self) -> StepRecorder:
        return self._recorder

    def flush(self) -> None:
        self._recorder.flush()

    def finish(self, status: str, summary: RunSummary, error: str | None) -> None:
        if error is None and status == "aborted":
            error = "stopped by SIGINT/SIGTERM before every request finished"
        self._recorder.finish(status, summary=summary.to_dict(), error=error)


class ServedRecording:
    """Opens the runs of one server (engine.online.RecordingFactory)."""

    def __init__(self, db: str | SqlEngine | None, description: dict[str, Any], url: str,
                 executor_facts: dict[str, Any]) -> None:
        """db: a target, or a writer already open (serve opens it before the model loads); disposed here."""
        # a bad --db fails here, before the server listens
        self._db: SqlEngine = db if isinstance(db, SqlEngine) else open_for_write(db)
        self._description = description
        self._url = url
        self._facts = executor_facts
        self._last_run_id: int | None = None

    def __call__(self, segment: int) -> RecordedRun:
        description = self._description
        if segment:
            description = description | {"name": f"{description['name']} (part {segment + 1})"}
        info = served_run_info(description, self._url, self._last_run_id if segment else None)
        run = RecordedRun(Recorder(self._db, info, executor_facts=self._facts))
        self._last_run_id = run.run_id
        return run

    def dispose(self) -> None:
        self._db.dispose()
