"""The engine thread of the online loop: take what other threads handed in, step, deliver, go idle,
rotate the recording, and end.

This thread alone touches the Engine (its scheduler, executor and recorder). Between steps it takes
requests and client aborts from the Inbox; after each step Deliveries hands every request's new
tokens to its sink. A step whose forward pass fails aborts its own requests (Engine.step raises
StepFailedError): they get an error and the loop goes on, unless steps keep failing. Anything else a
step raises is a bug in the engine, whose state is then unknown: the loop ends, its run is marked
failed and every waiting client hears so. Once a drain has begun and everything accepted has finished
(or its deadline has aborted it), the loop ends its run.
"""

from __future__ import annotations

import logging
import time

from engine.config import EngineConfig
from engine.engine_loop import StepFailedError
from engine.executors.base import Executor
from engine.online_inbox import SHUTTING_DOWN, Handed, Inbox
from engine.online_io import OnlineRequest, OutputSink, RecordingFactory, RequestOutput, Rotation, StepObserver
from engine.online_outputs import Deliveries, StepTally, step_report
from engine.online_segment import Segment, open_segment, rotation_due
from engine.request import Request, RequestStatus
from engine.sampling_params import with_model_eos
from engine.snapshot import StepSnapshot

log = logging.getLogger("batchscope.online")

MAX_CONSECUTIVE_STEP_FAILURES = 3  # then the loop gives up and the run is marked failed
IDLE_POLL_S = 1.0  # an idle loop wakes this often even unasked (deadlines, rotation)


def let_other_threads_run() -> None:
    """Release the GIL for a moment, so a thread waiting for it (the HTTP thread, with first tokens to
    send) takes it now: 0.42 -> 0.24-0.30 ms from a first token handed out to its chunk built on 2
    cores (BENCHMARKS.md, Serving)."""
    time.sleep(0)


class EngineThread:
    """run() is the thread's body; status, error, run_id and run_ids may be read from any thread."""

    def __init__(self, config: EngineConfig, executor: Executor, inbox: Inbox, recordings: RecordingFactory | None,
                 rotation: Rotation | None, observer: StepObserver | None) -> None:
        self._config = config
        self._executor = executor
        self._inbox = inbox
        self._recordings = recordings
        self._rotation = rotation if rotation and (rotation.every_steps or rotation.every_seconds) else None
        self._observer = observer
        self._deliveries = Deliveries()
        self._segment: Segment | None = None
        self._held: list[Handed] = []  # waiting for the next run (a rotation is due)
        self._early_aborts: set[str] = set()  # aborted by their clients before the engine took them
        self._failures = 0  # steps failed in a row
        self._idle = False  # the idle flush and report are done; nothing happened since
        self.run_id: int | None = None
        self.run_ids: list[int] = []  # every run this loop recorded, in order
        self.status: str | None = None  # finished | aborted | failed once the loop has ended
        self.error: str | None = None

    def open(self) -> None:
        """Open the first run (on the engine thread, before run()); raises if it cannot."""
        self._open_segment(time.perf_counter())

    def run(self) -> None:
        """Serve until drained, then close the run (as failed if the loop failed)."""
        status, error = "finished", None
        try:
            self._serve()
            status = "aborted" if self._seg.cut_short else "finished"
        except BaseException as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("the engine loop failed")
        self.end(status, error)

    def _serve(self) -> None:
        inbox = self._inbox
        while True:
            if inbox.take_abort_now():
                self._abort_everything()
            self._take_requests()
            self._take_client_aborts()
            self._check_drain_deadline()
            if self._seg.is_busy():
                self._step()
                continue
            self._went_idle()
            if self._held:
                self._release_held()
                continue
            if inbox.drained():
                return
            timeout = IDLE_POLL_S
            if inbox.drain_deadline is not None:
                timeout = min(timeout, max(inbox.drain_deadline - time.perf_counter(), 0.0))
            self._seg.clock.wait(timeout)

    @property
    def _seg(self) -> Segment:
        assert self._segment is not None, "the loop has no run open"
        return self._segment

    # -- requests in ------------------------------------------------------------------------------
    def _take_requests(self) -> None:
        for item in self._inbox.take_requests():
            if self._held or self._rotation_due():
                self._held.append(item)  # the run ends once the engine is empty; the next one takes these
            else:
                self._admit(*item)
        self._update_waiting()

    def _admit(self, request: OnlineRequest, sink: OutputSink) -> None:
        seg = self._seg
        engine = seg.engine
        rid = request.request_id
        self._inbox.admitted(rid)
        self._idle = False
        if rid in engine.requests or rid in self._deliveries:
            sink.admitted(seg.run_id, f"request id {rid!r} is already in use in this run")
            return
        received = request.received_at if request.received_at is not None else time.perf_counter()
        req = Request(rid, request.prompt_token_ids,
                      with_model_eos(request.sampling_params, self._executor.extra_eos_token_ids),
                      arrival_time=max(seg.clock.run_time(received), 0.0), priority=request.priority,
                      eos_token_id=self._executor.eos_token_id)
        engine.add_request(req)
        seg.num_requests += 1
        if req.status == RequestStatus.FINISHED_REJECTED:
            sink.admitted(seg.run_id, req.reject_reason or "the engine refused the request")
            return  # recorded at the next flush, idle or not
        self._deliveries.track(rid, sink)
        sink.admitted(seg.run_id, None)
        if rid in self._early_aborts:
            self._early_aborts.discard(rid)
            self._deliveries.end(engine, rid)

    def _take_client_aborts(self) -> None:
        for rid in self._inbox.take_aborts():
            if rid in self._deliveries:
                self._deliveries.end(self._seg.engine, rid)
            elif self._inbox.is_unadmitted(rid):
                self._early_aborts.add(rid)  # recorded as arrived and aborted once admitted

    def _check_drain_deadline(self) -> None:
        deadline = self._inbox.drain_deadline
        if deadline is None or time.perf_counter() < deadline:
            return
        if self._deliveries or self._held or self._inbox.has_requests():
            self._abort_everything()

    def _abort_everything(self) -> None:
        """Admit whatever was handed in (so it is recorded) and abort every request."""
        held, self._held = self._held, []
        for item in [*held, *self._inbox.take_requests()]:
            self._admit(*item)
        if self._deliveries.end_all(self._seg.engine):
            self._seg.cut_short = True

    # -- one step ---------------------------------------------------------------------------------
    def _step(self) -> None:
        seg = self._seg
        self._idle = False
        try:
            snapshot = seg.engine.step()
        except StepFailedError as exc:
            self._step_failed(exc)
            return
        self._failures = 0
        if snapshot is not None:
            seg.num_steps += 1
        tally = self._deliveries.after_step(seg.engine, snapshot)
        if tally.prompt_tokens:
            # First tokens were handed to their clients' threads: let one send them now, not once this
            # thread next blocks (after the next step's scheduling).
            let_other_threads_run()
        self._update_waiting()
        self._report(snapshot, tally)
        engine = seg.engine
        if snapshot is None and engine.scheduler.has_unfinished_requests() and not engine.has_pending_aborts():
            self._stalled()

    def _stalled(self) -> None:
        """Nothing could be scheduled although requests wait (a scheduler bug, as EngineStalledError
        says for offline runs): fail them rather than spin."""
        n = self._seg.engine.scheduler.get_num_unfinished_requests()
        message = f"the scheduler could not schedule any of {n} unfinished requests"
        log.error(message)
        self._deliveries.fail_unfinished(self._seg.engine, message)

    def _step_failed(self, exc: StepFailedError) -> None:
        """The engine has aborted the failed step's requests (and recorded them so): they get an error
        and the loop goes on; after a few failures in a row it gives up (the run is marked failed)."""
        cause = exc.__cause__ or exc
        self._failures += 1
        log.error("engine step %d failed: %s: %s", exc.step, type(cause).__name__, cause, exc_info=cause)
        if self._failures >= MAX_CONSECUTIVE_STEP_FAILURES:
            raise RuntimeError(f"{self._failures} engine steps failed in a row; last: {type(cause).__name__}: {cause}")
        message = f"the engine failed while computing this request: {type(cause).__name__}: {cause}"
        self._deliveries.after_failed_step(self._seg.engine, exc.request_ids, message)
        self._update_waiting()

    # -- idle, rotation, end ------------------------------------------------------------------------
    def _went_idle(self) -> None:
        """The engine is empty: the first time since something happened (a step, an admission, a
        rejection), write everything so readers see it, and report the idle state."""
        if self._idle:
            return
        self._idle = True
        self._seg.flush()
        self._update_waiting()
        self._report(None, StepTally())

    def _rotation_due(self) -> bool:
        return self._inbox.drain_deadline is None and rotation_due(self._rotation, self._seg)

    def _release_held(self) -> None:
        """The engine is empty and requests wait for the next run: open it, unless a drain began (what
        was accepted before it is served in this run)."""
        held, self._held = self._held, []
        if self._inbox.drain_deadline is None:
            now = time.perf_counter()
            origin = min([now, *(r.received_at for r, _ in held if r.received_at is not None)])
            self._seg.close("finished", None)
            self._open_segment(origin)
        for item in held:
            self._admit(*item)

    def _open_segment(self, origin: float) -> None:
        index = 0 if self._segment is None else self._segment.index + 1
        self._segment = open_segment(self._config, self._executor, self._recordings, index, origin,
                                     self._inbox.wake_event)
        self.run_id = self._segment.run_id
        if self.run_id is not None:
            self.run_ids.append(self.run_id)

    def end(self, status: str, error: str | None) -> None:
        """Close the run and answer everyone still waiting; the loop takes no more requests."""
        self._inbox.close("the engine failed; see the server's log" if status == "failed" else SHUTTING_DOWN)
        if status == "failed":
            self._fail_everyone(f"the engine failed: {error}")
        if self._segment is not None:
            try:
                self._segment.close(status, error)
            except BaseException:
                log.exception("could not close the run")
                status = "failed"
        try:
            self._executor.shutdown()
        finally:
            self.status, self.error = status, error

    def _fail_everyone(self, message: str) -> None:
        self._deliveries.fail_all(message)
        for request, sink in [*self._held, *self._inbox.take_requests()]:
            try:
                sink.output(RequestOutput(request.request_id, (), 0, "error", message))
            except Exception:
                log.exception("the output sink of request %s failed", request.request_id)
        self._held = []

    # -- reporting --------------------------------------------------------------------------------
    def _update_waiting(self) -> None:
        self._inbox.engine_waiting = len(self._seg.engine.scheduler.waiting)

    def _report(self, snapshot: StepSnapshot | None, tally: StepTally) -> None:
        if self._observer is not None:
            report = step_report(self._seg.engine, snapshot, self._inbox.num_waiting, tally,
                                 self._deliveries.take_finished())
            self._observer(report)
