"""Run a workload through an Engine with recording, signals and a progress bar.

SIGINT/SIGTERM stop the run gracefully: what is left is aborted, everything is flushed, and the
run is marked aborted. A second signal stops at once (what was recorded is flushed and the run
marked aborted), unless it arrives while the recorder writes: then the run stops gracefully as
soon as that write is done. Until the run is marked, no further signal interrupts it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

from engine.clock import Clock
from engine.config import EngineConfig
from engine.engine_loop import Engine
from engine.executors.base import Executor
from engine.metrics import RunSummary
from engine.snapshot import RunInfo, StepSnapshot
from engine.workload.spec import RequestSpec


@dataclass(frozen=True)
class RecordTarget:
    db: str | None  # SQLite path or SQLAlchemy URL; None: the default
    enabled: bool = True


@dataclass(frozen=True)
class SessionResult:
    run_id: int | None
    summary: RunSummary
    status: str  # finished | aborted
    rejections: dict[str, str] = field(default_factory=dict)  # request id -> why it was refused


class _StopSignals:
    """SIGINT/SIGTERM while a run is served. The first sets `stop` (the engine aborts what is left
    and returns); a second raises KeyboardInterrupt to leave a long step at once. Never while the
    recorder writes or the run is being finished: an exception cut into a transaction can leave the
    database locked, and SIGTERM's default action would leave the run marked running."""

    def __init__(self, stop: threading.Event, on_stop: Callable[[], None]) -> None:
        self.stop = stop
        self.on_stop = on_stop
        self.recorder: Any = None  # set once the run's Recorder exists
        self.finishing = False
        self._previous: dict[int, Any] = {}

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if not self.stop.is_set():
            self.stop.set()
            self.on_stop()
            return
        if self.finishing or (self.recorder is not None and self.recorder.writing):
            return  # `stop` is set: the run ends right after this write, or is ending now
        self.finishing = True  # one KeyboardInterrupt at most: what follows it is the finish
        raise KeyboardInterrupt

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)


def run_session(
    config: EngineConfig,
    executor: Executor,
    clock: Clock,
    specs: tuple[RequestSpec, ...],
    info: RunInfo,
    target: RecordTarget,
    progress: bool = False,
    on_step: Callable[[StepSnapshot], None] | None = None,
    max_concurrency: int | None = None,
) -> SessionResult:
    """max_concurrency: a closed-loop client's cap on requests in flight (each held one is sent,
    and counts as arriving, when another finishes)."""
    # The pid lets the dashboard stop this run; declared lengths label sjf as knowing them.
    info = replace(info, pid=os.getpid(), lengths_declared=all(spec.length_is_declared for spec in specs))
    stop = threading.Event()
    # Installed before the database is opened, so a signal there stops the run before its first step.
    with _StopSignals(stop, getattr(clock, "wake", lambda: None)) as signals:
        recorder = None
        try:
            if target.enabled:
                from storage.database import open_for_write
                from storage.recorder import Recorder

                recorder = signals.recorder = Recorder(open_for_write(target.db), info,
                                                       executor_facts=executor.describe())
            engine = Engine(config, executor, clock, recorder)
            summary = _serve(engine, specs, stop, signals, progress, on_step, max_concurrency)
            status = "aborted" if stop.is_set() else "finished"
            if recorder is not None:
                recorder.finish(status, summary=summary.to_dict(),
                                error="stopped by SIGINT/SIGTERM" if status == "aborted" else None)
        finally:
            if recorder is not None:  # opened here: its connections close now, not whenever gc gets to them
                recorder.db.dispose()
    rejections = {rid: req.reject_reason or "no reason given" for rid, req in engine.requests.items()
                  if req.reject_reason is not None}
    return SessionResult(recorder.run_id if recorder else None, summary, status, rejections)


def _serve(engine: Engine, specs: tuple[RequestSpec, ...], stop: threading.Event, signals: _StopSignals,
           progress: bool, on_step: Callable[[StepSnapshot], None] | None,
           max_concurrency: int | None) -> RunSummary:
    """engine.run with a progress bar; an interrupted or failed run is marked before the exception leaves."""
    recorder = signals.recorder
    bar = _progress_bar(len(specs)) if progress else None

    def step_hook(snapshot: StepSnapshot) -> None:
        if bar is not None and snapshot.finishes:
            bar.update(len(snapshot.finishes))
        if on_step is not None:
            on_step(snapshot)

    engine.clock.start()  # loading the model and opening the database are not the run's time
    try:
        summary = engine.run(specs, on_step=step_hook, stop=stop, max_concurrency=max_concurrency)
        signals.finishing = True
        return summary
    except KeyboardInterrupt:
        signals.finishing = True
        # Stopped mid-step: the engine's state may be half-updated, so only flush what was recorded.
        if recorder is not None:
            recorder.finish("aborted", error="stopped at once by a second interrupt")
        raise
    except BaseException as exc:
        signals.finishing = True
        if recorder is not None:
            recorder.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if bar is not None:
            bar.close()


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="req", desc="requests", file=sys.stderr, dynamic_ncols=True)
