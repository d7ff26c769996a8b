"""Run a workload through an Engine with recording, signals and a progress bar.

SIGINT/SIGTERM stop the run gracefully: what is left is aborted, everything is flushed, and the
run is marked aborted. A second signal stops at once (still flushed and marked).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@contextmanager
def _graceful_signals(stop: threading.Event, on_stop: Callable[[], None]) -> Iterator[None]:
    """First SIGINT/SIGTERM sets `stop`; a second raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        on_stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
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
) -> SessionResult:
    recorder = None
    info = replace(info, extra={**info.extra, "pid": os.getpid()})  # lets the dashboard stop this run
    if target.enabled:
        from storage.database import open_for_write
        from storage.recorder import Recorder

        recorder = Recorder(open_for_write(target.db), info, executor_facts=executor.describe())
    engine = Engine(config, executor, clock, recorder)
    stop = threading.Event()
    wake = getattr(clock, "wake", lambda: None)
    bar = _progress_bar(len(specs)) if progress else None
    finished = 0

    def step_hook(snapshot: StepSnapshot) -> None:
        nonlocal finished
        if bar is not None and snapshot.finishes:
            finished += len(snapshot.finishes)
            bar.update(len(snapshot.finishes))
        if on_step is not None:
            on_step(snapshot)

    clock.start()  # loading the model and opening the database are not the run's time
    try:
        with _graceful_signals(stop, wake):
            summary = engine.run(specs, on_step=step_hook, stop=stop)
    except KeyboardInterrupt:
        # Stopped mid-step: the engine's state may be half-updated, so only flush what was recorded.
        if recorder is not None:
            recorder.finish("aborted", error="stopped at once by a second interrupt")
        raise
    except BaseException as exc:
        if recorder is not None:
            recorder.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if bar is not None:
            bar.close()
    status = "aborted" if stop.is_set() else "finished"
    if recorder is not None:
        recorder.finish(status, summary=summary.to_dict(),
                        error="stopped by SIGINT/SIGTERM" if status == "aborted" else None)
    rejections = {rid: req.reject_reason or "no reason given" for rid, req in engine.requests.items()
                  if req.reject_reason is not None}
    return SessionResult(recorder.run_id if recorder else None, summary, status, rejections)


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="req", desc="requests", file=sys.stderr, dynamic_ncols=True)
