"""The online engine loop: requests arrive at any time from other threads, tokens go back after every step.

One thread owns the Engine (its scheduler, executor and recorder are never touched from elsewhere).
Other threads hand requests in through a queue and wake it; after every step it pushes each request's
new tokens to that request's sink, a non-blocking callback (an HTTP server queues them for its event
loop), so nothing on the serving side can stall a step. One step is still Engine.step(): one forward
pass over every scheduled token.

What the engine does not know yet is done here, between steps, on the engine thread:
- stop conditions the sink decides (stop strings, which need text): the sink answers True and the
  request is aborted before the next step; it is recorded as *stopped*, not aborted;
- min_tokens: EOS and stop tokens are ignored until the request has min_tokens tokens (see _Active).

Shutdown: drain() stops accepting, lets what runs finish (bounded by a timeout, then aborts the rest);
abort_all() aborts everything now. The run is closed as finished, or aborted if anything was cut short.
A long-lived loop may rotate its recording into consecutive runs (Rotation): when one is due it stops
admitting, lets the engine empty, closes the run and opens the next, so no request spans two runs.

Imports nothing from storage or any application: recording comes in through RunRecording.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, replace

from engine.config import EngineConfig
from engine.engine_loop import Engine
from engine.executors.base import Executor
from engine.metrics import RunSummary
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
    ServingClock,
    StepObserver,
    StepReport,
)
from engine.online_wrappers import FinishReasonRecorder, TrackingExecutor
from engine.request import Request, RequestStatus
from engine.sampling_params import SamplingParams
from engine.snapshot import StepSnapshot

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

MAX_CONSECUTIVE_STEP_FAILURES = 3  # then the loop gives up and the run is marked failed
IDLE_POLL_S = 1.0  # an idle loop wakes this often even unasked (deadlines, rotation)


@dataclass
class _Active:
    """A request the engine holds, as the loop tracks it.

    min_tokens: until the request has min_tokens tokens the engine runs it with ignore_eos and no stop
    tokens; then its own parameters are put back (between steps, on this thread). A stopgap until the
    engine's SamplingParams carry min_tokens (which would also mask EOS in the sampler, as vLLM does;
    here an EOS sampled early is kept as an ordinary token)."""

    sink: OutputSink
    params: SamplingParams
    min_tokens: int
    restored: bool  # the request runs under its own parameters
    sent: int = 0  # output tokens handed to the sink
    last_token_time: float = 0.0
    stopping: bool = False  # the sink stopped it; the abort is on its way
    error: str | None = None  # the step it was in failed


@dataclass
class _Segment:
    """One recorded run of the loop's life."""

    index: int
    engine: Engine
    clock: ServingClock
    recording: RunRecording | None
    proxy: FinishReasonRecorder | None
    started: float  # perf_counter
    num_steps: int = 0
    num_requests: int = 0
    cut_short: bool = False  # something was aborted by a drain timeout or abort_all
    dirty: bool = False  # steps recorded since the last idle flush
    # Arrivals and finishes the engine holds for its next step's record (a rejection, an abort applied
    # by a step that scheduled nothing): written at idle, so readers never see them as still running.
    tail: bool = False


# -- the loop ----------------------------------------------------------------------------------
class OnlineEngine:
    """submit(), abort(), drain(), abort_all() are safe from any thread; everything else runs on the
    engine thread started by start()."""

    def __init__(self, config: EngineConfig, executor: Executor, recording: RecordingFactory | None = None,
                 rotation: Rotation | None = None, observer: StepObserver | None = None) -> None:
        self.config = config
        self.executor = TrackingExecutor(executor)
        self._recording = recording
        self._rotation = rotation if rotation and (rotation.every_steps or rotation.every_seconds) else None
        self._observer = observer
        self._wake = threading.Event()
        self._lock = threading.Lock()  # makes "accepting?" and the hand-off one step for submit and drain
        self._inbox: queue.SimpleQueue[tuple[OnlineRequest, OutputSink]] = queue.SimpleQueue()
        self._client_aborts: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._unadmitted: set[str] = set()  # handed in, not yet taken by the engine (guarded by _lock)
        self._engine_waiting = 0
        self._accepting = True
        self._refusal = "the server is not accepting requests"
        self._drain_deadline: float | None = None
        self._abort_now = False
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._started = threading.Event()
        # engine thread only
        self._segment: _Segment | None = None
        self._active: dict[str, _Active] = {}
        self._held: list[tuple[OnlineRequest, OutputSink]] = []  # waiting for a rotation
        self._aborting: set[str] = set()
        self._early_aborts: set[str] = set()  # aborted before the engine took them
        self._finished: list[FinishedStats] = []
        self._failures = 0
        self._idle = False
        # read from any thread
        self.run_id: int | None = None
        self.status: str | None = None  # finished | aborted | failed once the loop has ended
        self.error: str | None = None
        self.run_ids: list[int] = []  # every run this loop recorded, in order

    # -- any thread -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine thread and open the first run; RuntimeError if that fails."""
        self._thread = threading.Thread(target=self._main, name="batchscope-engine", daemon=True)
        self._thread.start()
        self._started.wait()
        if self.status == "failed":
            raise RuntimeError(f"the engine loop could not start: {self.error}")

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def num_waiting(self) -> int:
        """Requests not yet scheduled: handed in but not admitted, plus the engine's waiting queue."""
        return len(self._unadmitted) + self._engine_waiting

    def submit(self, request: OnlineRequest, sink: OutputSink, max_waiting: int | None = None) -> None:
        """Hand a request to the engine thread. NotAcceptingError when draining, stopped or failed;
        QueueFullError when max_waiting requests are already waiting."""
        if request.received_at is None:
            request.received_at = time.perf_counter()
        with self._lock:
            if not self._accepting:
                raise NotAcceptingError(self._refusal)
            if max_waiting is not None and self.num_waiting >= max_waiting:
                raise QueueFullError(f"{self.num_waiting} requests are already waiting (--max-waiting {max_waiting})")
            self._unadmitted.add(request.request_id)
            self._inbox.put((request, sink))
        self._wake.set()

    def abort(self, request_id: str) -> None:
        """The client went away: abort the request wherever it is (recorded as aborted)."""
        self._client_aborts.put(request_id)
        self._wake.set()

    def drain(self, timeout_s: float) -> None:
        """Stop accepting; finish what was accepted, aborting what is left after timeout_s."""
        with self._lock:
            self._accepting = False
            self._refusal = "the server is shutting down"
            deadline = time.perf_counter() + max(timeout_s, 0.0)
            self._drain_deadline = deadline if self._drain_deadline is None else min(self._drain_deadline, deadline)
        self._wake.set()

    def abort_all(self) -> None:
        """Stop accepting and abort everything now."""
        with self._lock:
            self._accepting = False
            self._refusal = "the server is shutting down"
            self._abort_now = True
            self._drain_deadline = time.perf_counter()
        self._wake.set()

    def join(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Abort everything, end the loop and its run (tests, and a server that must stop now)."""
        self.abort_all()
        self.join(timeout)

    # -- the engine thread ------------------------------------------------------------------------
    def _main(self) -> None:
        status, error = "finished", None
        try:
            self._open_segment(time.perf_counter())
        except BaseException as exc:
            log.exception("the engine loop could not open its run")
            self._end(status="failed", error=f"{type(exc).__name__}: {exc}", opened=False)
            return
        self._started.set()
        try:
            self._serve()
            seg = self._segment
            status = "aborted" if seg is not None and seg.cut_short else "finished"
        except BaseException as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("the engine loop failed")
        self._end(status, error)

    def _serve(self) -> None:
        while True:
            if self._abort_now:
                self._abort_now = False
                self._abort_everything()
            self._take_inbox()
            self._take_client_aborts()
            self._check_drain_deadline()
            seg = self._seg
            engine = seg.engine
            if engine.scheduler.has_unfinished_requests() or engine.has_pending_aborts():
                self._step()
                continue
            self._went_idle()
            if self._held:
                if self._drain_deadline is None:
                    self._rotate()
                else:  # accepted before the drain began: served in this run
                    held, self._held = self._held, []
                    for item in held:
                        self._admit(*item)
                continue
            if self._drain_deadline is not None and self._inbox.empty():
                with self._lock:
                    if self._inbox.empty():
                        return
            timeout = IDLE_POLL_S
            if self._drain_deadline is not None:
                timeout = min(timeout, max(self._drain_deadline - time.perf_counter(), 0.0))
            seg.clock.wait(timeout)

    @property
    def _seg(self) -> _Segment:
        assert self._segment is not None
        return self._segment

    # -- requests in ------------------------------------------------------------------------------
    def _take_inbox(self) -> None:
        seg = self._seg
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if self._held or (self._rotation_due() and seg.engine.scheduler.has_unfinished_requests()):
                self._held.append(item)  # the run ends once the engine is empty; the next one takes these
                continue
            if self._rotation_due():
                self._held.append(item)
                self._rotate()
                seg = self._seg
                continue
            self._admit(*item)
        self._update_waiting()

    def _admit(self, request: OnlineRequest, sink: OutputSink) -> None:
        seg = self._seg
        engine = seg.engine
        rid = request.request_id
        with self._lock:
            self._unadmitted.discard(rid)
        run_id = seg.recording.run_id if seg.recording is not None else None
        if rid in engine.requests or rid in self._active:
            sink.admitted(run_id, f"request id {rid!r} is already in use in this run")
            return
        params = request.sampling_params
        engine_params = params
        if request.min_tokens > 0 and (not params.ignore_eos or params.stop_token_ids):
            engine_params = replace(params, ignore_eos=True, stop_token_ids=())
        received = request.received_at if request.received_at is not None else time.perf_counter()
        req = Request(rid, request.prompt_token_ids, engine_params, arrival_time=max(seg.clock.run_time(received), 0.0),
                      priority=request.priority, eos_token_id=self.executor.eos_token_id)
        engine.add_request(req)
        seg.num_requests += 1
        if req.status == RequestStatus.FINISHED_REJECTED:
            seg.tail = True
            sink.admitted(run_id, req.reject_reason or "the engine refused the request")
            return
        self._active[rid] = _Active(sink, params, request.min_tokens, restored=engine_params is params)
        sink.admitted(run_id, None)
        if rid in self._early_aborts:
            self._early_aborts.discard(rid)
            self._abort_request(rid)

    def _take_client_aborts(self) -> None:
        while True:
            try:
                rid = self._client_aborts.get_nowait()
            except queue.Empty:
                return
            if rid in self._active:
                self._abort_request(rid)
            else:
                with self._lock:
                    waiting = rid in self._unadmitted
                if waiting:
                    self._early_aborts.add(rid)  # recorded as arrived and aborted once admitted

    def _abort_request(self, rid: str) -> None:
        self._seg.engine.abort_request(rid)
        self._aborting.add(rid)

    def _check_drain_deadline(self) -> None:
        deadline = self._drain_deadline
        if deadline is None or time.perf_counter() < deadline:
            return
        if self._active or self._held or not self._inbox.empty():
            self._abort_everything()

    def _abort_everything(self) -> None:
        """Admit whatever was handed in (so it is recorded) and abort every request."""
        self._drain_deadline = time.perf_counter()
        items = self._held
        self._held = []
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for item in items:
            self._admit(*item)
        if self._active:
            self._seg.cut_short = True
            self._seg.engine.abort_all()
            self._aborting.update(self._active)

    # -- one step ---------------------------------------------------------------------------------
    def _step(self) -> None:
        seg = self._seg
        tracker = self.executor
        tracker.begin()
        self._idle = False
        try:
            snapshot = seg.engine.step()
        except Exception as exc:
            self._step_failed(exc)
            return
        self._failures = 0
        if snapshot is not None:
            seg.num_steps += 1
            seg.dirty = True
            seg.tail = False
        else:
            seg.tail = True  # it may have applied aborts that no step row carries
        self._after_step(snapshot)
        engine = seg.engine
        if snapshot is None and engine.scheduler.has_unfinished_requests() and not engine.has_pending_aborts():
            self._stalled()

    def _stalled(self) -> None:
        """Nothing could be scheduled although requests wait (a scheduler bug, as EngineStalledError
        says for offline runs): fail them rather than spin."""
        n = self._seg.engine.scheduler.get_num_unfinished_requests()
        message = f"the scheduler could not schedule any of {n} unfinished requests"
        log.error(message)
        for rid, act in self._active.items():
            if rid not in self._aborting:
                act.error = message
                self._abort_request(rid)

    def _after_step(self, snapshot: StepSnapshot | None) -> None:
        seg = self._seg
        engine = seg.engine
        end = snapshot.end_time if snapshot is not None else seg.clock.now()
        ttfts: list[float] = []
        itls: list[float] = []
        prompt_tokens = generation_tokens = 0
        proxy = seg.proxy
        for rid in self.executor.sampled:
            act = self._active.get(rid)
            req = engine.requests.get(rid)
            if act is None or req is None:
                continue
            new = req.output_token_ids[act.sent:]
            if not new:
                continue
            generation_tokens += len(new)
            if act.sent == 0:
                if req.first_token_time is not None:
                    ttfts.append(req.first_token_time - req.arrival_time)
                prompt_tokens += req.num_prompt_tokens
            else:
                itls.append(end - act.last_token_time)
            act.last_token_time = end
            act.sent = len(req.output_token_ids)
            finished = req.status.is_finished
            stop = self._deliver(rid, act, RequestOutput(rid, tuple(new), act.sent,
                                                         req.status.finish_reason if finished else None))
            if stop:
                if proxy is not None:
                    proxy.overrides[rid] = "stopped"
                if finished:
                    req.status = RequestStatus.FINISHED_STOPPED  # a stop string on its last token
                else:
                    act.stopping = True
                    self._abort_request(rid)
            elif not finished and not act.restored and act.sent >= act.min_tokens:
                req.sampling_params = act.params
                act.restored = True
            if finished:
                self._finish(rid, req)
        self._settle_aborts()
        if proxy is not None:
            proxy.commit()
        self._update_waiting()
        if self._observer is not None:
            self._observer(self._report(snapshot, prompt_tokens, generation_tokens, ttfts, itls))

    def _deliver(self, rid: str, act: _Active, out: RequestOutput) -> bool:
        """Hand an output to the request's sink; a sink that raises fails its own request only."""
        try:
            return bool(act.sink.output(out))
        except Exception as exc:
            log.exception("the output sink of request %s failed", rid)
            if out.finish_reason is None and rid not in self._aborting:
                act.error = f"the server failed on this request's output: {type(exc).__name__}: {exc}"
                self._abort_request(rid)
            return False

    def _settle_aborts(self) -> None:
        """Requests whose abort the engine has applied: tell their sinks, patch stop-string stops."""
        if not self._aborting:
            return
        requests = self._seg.engine.requests
        for rid in list(self._aborting):
            req = requests.get(rid)
            if req is None or not req.status.is_finished:
                continue
            act = self._active.get(rid)
            if act is not None:
                if act.stopping and req.status == RequestStatus.FINISHED_ABORTED:
                    req.status = RequestStatus.FINISHED_STOPPED  # counted as finished in the run summary
                elif not act.stopping:
                    reason = "error" if act.error else req.status.finish_reason
                    self._deliver(rid, act, RequestOutput(rid, (), act.sent, reason, act.error))
            self._finish(rid, req)

    def _finish(self, rid: str, req: Request) -> None:
        act = self._active.pop(rid, None)
        self._aborting.discard(rid)
        if req.finish_time is None or req.status == RequestStatus.FINISHED_REJECTED:
            return
        reason = "error" if act is not None and act.error else (req.status.finish_reason or "aborted")
        first_sched, first_tok, fin = req.first_scheduled_time, req.first_token_time, req.finish_time
        self._finished.append(FinishedStats(
            request_id=rid, finish_reason=reason, prompt_len=req.num_prompt_tokens,
            output_len=req.num_output_tokens, max_tokens=req.sampling_params.max_tokens,
            num_preemptions=req.num_preemptions, e2e=fin - req.arrival_time,
            queue=None if first_sched is None else first_sched - req.arrival_time,
            prefill=None if first_sched is None or first_tok is None else first_tok - first_sched,
            decode=None if first_tok is None else fin - first_tok,
            inference=None if first_sched is None else fin - first_sched,
        ))

    def _step_failed(self, exc: Exception) -> None:
        """The step raised: fail its requests (all running ones if the executor was not the cause) and
        carry on; after a few failures in a row, give up (the run is marked failed)."""
        self._failures += 1
        log.error("engine step failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        if self._failures >= MAX_CONSECUTIVE_STEP_FAILURES:
            raise RuntimeError(f"{self._failures} engine steps failed in a row; last: {type(exc).__name__}: {exc}")
        message = f"the engine failed while computing this request: {type(exc).__name__}: {exc}"
        ids = self.executor.in_flight or tuple(self._active)
        for rid in ids:
            act = self._active.get(rid)
            if act is not None and rid not in self._aborting:
                act.error = message
                self._abort_request(rid)

    # -- idle, rotation, end ------------------------------------------------------------------------
    def _went_idle(self) -> None:
        seg = self._seg
        if self._idle and not seg.tail:
            return
        self._idle = True
        if seg.proxy is not None:
            seg.proxy.commit()
        if seg.recording is not None and seg.tail:
            # Engine.finish() with nothing unfinished writes what is pending and closes nothing; the
            # run goes on (an engine method to write pending rows without summarizing would be lighter).
            seg.engine.finish()
            self._settle_aborts()
            seg.dirty = False
        elif seg.recording is not None and seg.dirty:
            seg.recording.flush()
            seg.dirty = False
        seg.tail = False
        self._update_waiting()
        if self._observer is not None:
            self._observer(self._report(None, 0, 0, [], []))

    def _rotation_due(self) -> bool:
        rot, seg = self._rotation, self._segment
        if rot is None or seg is None or seg.num_requests == 0 or self._drain_deadline is not None:
            return False
        if rot.every_steps is not None and seg.num_steps >= rot.every_steps:
            return True
        return rot.every_seconds is not None and time.perf_counter() - seg.started >= rot.every_seconds

    def _rotate(self) -> None:
        """Close the (empty) run and open the next, which starts at the first held request's receipt."""
        held, self._held = self._held, []
        now = time.perf_counter()
        origin = min([now, *(r.received_at for r, _ in held if r.received_at is not None)])
        self._close_segment("finished", None)
        self._open_segment(origin)
        for item in held:
            self._admit(*item)

    def _open_segment(self, origin: float) -> None:
        index = 0 if self._segment is None else self._segment.index + 1
        recording = self._recording(index) if self._recording is not None else None
        proxy = FinishReasonRecorder(recording.recorder) if recording is not None else None
        clock = ServingClock(origin, self._wake)
        engine = Engine(self.config, self.executor, clock, proxy, fast_forward=False)
        self._segment = _Segment(index, engine, clock, recording, proxy, started=time.perf_counter())
        self.run_id = recording.run_id if recording is not None else None
        if self.run_id is not None:
            self.run_ids.append(self.run_id)

    def _close_segment(self, status: str, error: str | None) -> RunSummary:
        seg = self._seg
        summary = seg.engine.finish()  # applies pending aborts and writes the run's tail
        self._settle_aborts()
        if seg.recording is not None:
            seg.recording.finish(status, summary, error)
        return summary

    def _end(self, status: str, error: str | None, opened: bool = True) -> None:
        """Close the run and answer everyone still waiting; the loop takes no more requests."""
        with self._lock:
            self._accepting = False
            self._refusal = ("the engine failed; see the server's log" if status == "failed"
                             else "the server is shutting down")
        if status == "failed":
            message = f"the engine failed: {error}"
            for rid, act in list(self._active.items()):
                with contextlib.suppress(Exception):
                    act.sink.output(RequestOutput(rid, (), act.sent, "error", message))
            self._active.clear()
            while True:
                try:
                    self._held.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            for req, sink in self._held:
                with contextlib.suppress(Exception):
                    sink.output(RequestOutput(req.request_id, (), 0, "error", message))
            self._held = []
        if opened:
            try:
                self._close_segment(status, error)
            except BaseException:
                log.exception("could not close the run")
                status = "failed"
        try:
            self.executor.shutdown()
        finally:
            self.status, self.error = status, error
            self._started.set()
            self._done.set()

    # -- reporting --------------------------------------------------------------------------------
    def _update_waiting(self) -> None:
        self._engine_waiting = len(self._seg.engine.scheduler.waiting)

    def _report(self, snapshot: StepSnapshot | None, prompt_tokens: int, generation_tokens: int,
                ttfts: list[float], itls: list[float]) -> StepReport:
        sched = self._seg.engine.scheduler
        bm = sched.block_manager
        finished, self._finished = tuple(self._finished), []
        return StepReport(
            stepped=snapshot is not None,
            num_running=len(sched.running), num_waiting=self.num_waiting, num_swapped=len(sched.swapped),
            gpu_cache_usage=bm.gpu_usage,
            cpu_cache_usage=bm.num_used_cpu_blocks / bm.num_cpu_blocks if bm.num_cpu_blocks else 0.0,
            num_batched_tokens=snapshot.counts.num_batched_tokens if snapshot is not None else 0,
            num_preemptions=snapshot.counts.num_preemptions if snapshot is not None else 0,
            prompt_tokens=prompt_tokens, generation_tokens=generation_tokens,
            time_to_first_tokens=tuple(ttfts), inter_token_latencies=tuple(itls), finished=finished,
        )

