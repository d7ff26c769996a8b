"""The online engine loop: requests arrive at any time from other threads, tokens go back after every step.

One thread owns the Engine (its scheduler, executor and recorder are never touched from elsewhere).
Other threads hand requests in (engine.online_inbox) and wake it; after every step it pushes each
request's new tokens to that request's sink, a non-blocking callback (an HTTP server queues them for
its event loop), so nothing on the serving side can stall a step (engine.online_outputs). One step is
still Engine.step(): one forward pass over every scheduled token. A sink that finds a stop string
stops its request through Engine.stop_request, so it is recorded as stopped.

Shutdown: drain() stops accepting, lets what runs finish (bounded by a timeout, then aborts the rest);
abort_all() aborts everything now. The run is closed as finished, or aborted if anything was cut short.
A long-lived loop may rotate its recording into consecutive runs (Rotation, engine.online_segment):
when one is due it stops admitting, lets the engine empty, closes the run and opens the next, so no
request spans two runs.

Imports nothing from storage or any application: recording comes in through RunRecording.
"""

from __future__ import annotations

import logging
import threading

from engine.config import EngineConfig
from engine.executors.base import Executor
from engine.online_clock import ServingClock
from engine.online_inbox import Inbox
from engine.online_io import (
    FinishedStats,
    NotAcceptingError,
    OnlineRequest,
    OutputSink,
    QueueFullError,
    RecordingFactory,
    RequestOutput,
    Rotation,
    RunRecording,
    StepObserver,
    StepReport,
)
from engine.online_loop import EngineThread

__all__ = [
    "FinishedStats",
    "NotAcceptingError",
    "OnlineEngine",
    "OnlineRequest",
    "OutputSink",
    "QueueFullError",
    "RecordingFactory",
    "RequestOutput",
    "Rotation",
    "RunRecording",
    "ServingClock",
    "StepObserver",
    "StepReport",
]

log = logging.getLogger("batchscope.online")


class OnlineEngine:
    """submit(), abort(), drain(), abort_all() are safe from any thread; everything else runs on the
    engine thread: the one start() starts, or the caller's own (open_here() then serve_here())."""

    def __init__(self, config: EngineConfig, executor: Executor, recording: RecordingFactory | None = None,
                 rotation: Rotation | None = None, observer: StepObserver | None = None) -> None:
        self.config = config
        self._inbox = Inbox()
        self._loop = EngineThread(config, executor, self._inbox, recording, rotation, observer)
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._done = threading.Event()
        self._serving_here = False  # serve_here() has been called (open_here's loop has a thread)

    def start(self) -> None:
        """Start the engine thread and open the first run; RuntimeError if that fails."""
        self._thread = threading.Thread(target=self._main, name="batchscope-engine", daemon=True)
        self._thread.start()
        self._started.wait()
        if self.status == "failed":
            raise RuntimeError(f"the engine loop could not start: {self.error}")

    def open_here(self) -> None:
        """Open the first run on the calling thread, which must then call serve_here(); RuntimeError
        if the run cannot be opened.

        For the thread that loaded the model: torch's CPU kernels keep one OpenMP thread team per
        calling thread, and a second thread's team (the first one's idles beside it) made a SmolLM2
        decode step 20-25% slower on 2 cores (bench/results_serving.md)."""
        try:
            self._loop.open()
        except BaseException as exc:
            self._loop.end("failed", f"{type(exc).__name__}: {exc}")
            self._done.set()
            if isinstance(exc, KeyboardInterrupt):
                raise  # the user stopped it: not an engine failure
            raise RuntimeError(f"the engine loop could not start: {self.error}") from exc
        finally:
            self._started.set()

    def serve_here(self) -> None:
        """Run the loop on the calling thread (after open_here()) until it has drained or failed."""
        self._serving_here = True
        try:
            self._loop.run()
        finally:
            self._done.set()

    def _main(self) -> None:
        try:
            try:
                self._loop.open()
            except BaseException as exc:
                log.exception("the engine loop could not open its run")
                self._loop.end("failed", f"{type(exc).__name__}: {exc}")
                return
            self._started.set()
            self._loop.run()
        finally:
            self._started.set()
            self._done.set()

    # -- state, from any thread -------------------------------------------------------------------
    @property
    def accepting(self) -> bool:
        return self._inbox.accepting

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def num_waiting(self) -> int:
        """Requests not yet scheduled: handed in but not admitted, plus the engine's waiting queue."""
        return self._inbox.num_waiting

    @property
    def run_id(self) -> int | None:
        """The run being recorded (the last one, once the loop has ended)."""
        return self._loop.run_id

    @property
    def run_ids(self) -> list[int]:
        """Every run this loop recorded, in order."""
        return self._loop.run_ids

    @property
    def status(self) -> str | None:
        """finished | aborted | failed once the loop has ended; None while it runs."""
        return self._loop.status

    @property
    def error(self) -> str | None:
        return self._loop.error

    # -- orders, from any thread ------------------------------------------------------------------
    def submit(self, request: OnlineRequest, sink: OutputSink, max_waiting: int | None = None) -> None:
        """Hand a request to the engine thread. NotAcceptingError when draining, stopped or failed;
        QueueFullError when max_waiting requests are already waiting; ValueError for stop strings in
        its SamplingParams, which the engine cannot see in token ids (the sink applies them, as the
        server's stream does, and ends the request with stop_request)."""
        if request.sampling_params.stop:
            raise ValueError("stop strings are applied by the output sink (the server's stream), not the online "
                             "engine: leave SamplingParams.stop unset and stop the request from the sink")
        self._inbox.submit(request, sink, max_waiting)

    def abort(self, request_id: str) -> None:
        """The client went away: abort the request wherever it is (recorded as aborted)."""
        self._inbox.abort(request_id)

    def drain(self, timeout_s: float) -> None:
        """Stop accepting; finish what was accepted, aborting what is left after timeout_s."""
        self._inbox.drain(timeout_s)

    def abort_all(self) -> None:
        """Stop accepting and abort everything now."""
        self._inbox.abort_all()

    def join(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Abort everything, end the loop and its run (tests, and a server that must stop now)."""
        self.abort_all()
        if self._thread is None and self._started.is_set() and not self._serving_here and not self.done:
            self.serve_here()  # opened here and never served (a start that failed later): end the run now
        self.join(timeout)
