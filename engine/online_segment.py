"""The recorded runs of an online loop's life: one Engine, clock and recording each (a segment).

A loop that never rotates has one segment. One that rotates opens the next once the current one
has emptied, so no request spans two runs: the engine thread decides when (engine.online_loop); this
module says whether one is due, and opens and closes them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from engine.config import EngineConfig
from engine.engine_loop import Engine
from engine.executors.base import Executor
from engine.metrics import RunSummary
from engine.online_clock import ServingClock
from engine.online_io import RecordingFactory, Rotation, RunRecording


@dataclass
class Segment:
    """One recorded run of the loop's life."""

    index: int
    engine: Engine
    clock: ServingClock
    recording: RunRecording | None
    started: float  # perf_counter
    num_steps: int = 0
    num_requests: int = 0
    cut_short: bool = False  # something was aborted by a drain timeout or abort_all

    @property
    def run_id(self) -> int | None:
        return self.recording.run_id if self.recording is not None else None

    def is_busy(self) -> bool:
        """The engine holds unfinished requests, or aborts it has yet to apply."""
        return self.engine.scheduler.has_unfinished_requests() or self.engine.has_pending_aborts()

    def flush(self) -> None:
        """Write what happened so far, the run going on: the steps the recorder buffers, and the
        arrivals and finishes no step row carries yet (a rejection, an abort applied by an empty step),
        so readers never see those as still running."""
        self.engine.flush_pending()
        if self.recording is not None:
            self.recording.flush()

    def close(self, status: str, error: str | None) -> RunSummary:
        """End the run: open phases are closed, what is left is written, the run is marked `status`."""
        summary = self.engine.finish()
        if self.recording is not None:
            self.recording.finish(status, summary, error)
        return summary


def open_segment(config: EngineConfig, executor: Executor, recordings: RecordingFactory | None, index: int,
                 origin: float, wake: threading.Event) -> Segment:
    """A new run whose time starts at `origin` (a perf_counter reading)."""
    recording = recordings(index) if recordings is not None else None
    clock = ServingClock(origin, wake)
    recorder = recording.recorder if recording is not None else None
    # No decode bursts: they need a virtual clock, and every step's tokens go out as it ends.
    engine = Engine(config, executor, clock, recorder, fast_forward=False)
    return Segment(index, engine, clock, recording, started=time.perf_counter())


def rotation_due(rotation: Rotation | None, segment: Segment) -> bool:
    """Whether the segment has served its steps or seconds (a segment that took no request never is)."""
    if rotation is None or segment.num_requests == 0:
        return False
    if rotation.every_steps is not None and segment.num_steps >= rotation.every_steps:
        return True
    return rotation.every_seconds is not None and time.perf_counter() - segment.started >= rotation.every_seconds
