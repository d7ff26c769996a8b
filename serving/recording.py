"""Recording what a server serves: one run per segment of its life (one, unless it rotates).

A served run is recorded like any other (storage.Recorder, step by step). What marks it as served,
until runs get typed metadata fields, is its `extra`: source "served", the URL it serves, the pid
(so the dashboard can stop it), which part of a rotated recording it is and the run before it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from sqlalchemy import Engine as SqlEngine

from engine.metrics import RunSummary
from engine.snapshot import RunInfo, StepRecorder
from storage.database import open_for_write
from storage.recorder import Recorder


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

    def __init__(self, db: str | None, info: RunInfo, executor_facts: dict[str, Any]) -> None:
        self._db: SqlEngine = open_for_write(db)  # a bad --db fails here, before the server listens
        self._info = info
        self._facts = executor_facts
        self._last_run_id: int | None = None

    def __call__(self, segment: int) -> RecordedRun:
        info = self._info
        extra: dict[str, Any] = {**info.extra, "pid": os.getpid()}
        if segment:
            info = replace(info, name=f"{info.name} (part {segment + 1})")
            extra |= {"part": segment + 1, "previous_run_id": self._last_run_id}
        run = RecordedRun(Recorder(self._db, replace(info, extra=extra), executor_facts=self._facts))
        self._last_run_id = run.run_id
        return run

    def dispose(self) -> None:
        self._db.dispose()
