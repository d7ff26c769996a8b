"""Per-step output delivery of the online loop, on the engine thread: after every step each request's
new tokens go to its sink, a sink's stop becomes Engine.stop_request, and each request's end is told
to its sink once (with its latencies kept for metrics).

A sink is called on the engine thread and must return at once; one that raises fails its own request
only (aborted in the engine, an error to its client).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain

from engine.engine_loop import Engine
from engine.online_io import FinishedStats, OutputSink, RequestOutput, StepReport
from engine.request import Request, RequestStatus
from engine.snapshot import StepSnapshot

log = logging.getLogger("batchscope.online")


@dataclass
class _Tracked:
    """A request the engine holds for a sink, and what that sink has been sent."""

    sink: OutputSink
    sent: int = 0  # output tokens handed to the sink
    last_token_time: float = 0.0
    stopping: bool = False  # its sink stopped it (a stop string): the sink has had its last output
    error: str | None = None  # why it failed: its end goes to the sink as an error


@dataclass
class StepTally:
    """What one step's outputs add to the metrics."""

    prompt_tokens: int = 0  # prompts of the requests whose first token came this step (vLLM's count)
    generation_tokens: int = 0
    time_to_first_tokens: list[float] = field(default_factory=list)
    inter_token_latencies: list[float] = field(default_factory=list)


class Deliveries:
    """The requests the loop holds for their sinks."""

    def __init__(self) -> None:
        self._tracked: dict[str, _Tracked] = {}
        self._ending: set[str] = set()  # ended by the loop (abort, stop); the engine applies it before its next step
        self._finished: list[FinishedStats] = []

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._tracked

    def __bool__(self) -> bool:
        return bool(self._tracked)

    def track(self, request_id: str, sink: OutputSink) -> None:
        self._tracked[request_id] = _Tracked(sink)

    def end(self, engine: Engine, request_id: str, error: str | None = None) -> None:
        """Abort a request (the client went away, or it failed: `error`); its sink hears once the
        engine has applied it."""
        tracked = self._tracked.get(request_id)
        if tracked is None or request_id in self._ending:
            return
        tracked.error = tracked.error or error
        engine.abort_request(request_id)
        self._ending.add(request_id)

    def end_all(self, engine: Engine) -> bool:
        """Abort every request (abort_all, a drain that ran out); whether there was any."""
        if not self._tracked:
            return False
        engine.abort_all()
        self._ending.update(self._tracked)
        return True

    def fail_unfinished(self, engine: Engine, error: str) -> None:
        for request_id in list(self._tracked):
            self.end(engine, request_id, error)

    # -- after a step ---------------------------------------------------------------------------------
    def after_step(self, engine: Engine, snapshot: StepSnapshot | None) -> StepTally:
        """Deliver what the step produced, then the ends the engine applied; snapshot None: it
        scheduled nothing (it may have applied aborts)."""
        tally = StepTally()
        if snapshot is not None:
            # Who sampled: those still running, and those the step finished (among its finishes).
            # First tokens go first: a step's outputs reach the clients one after another, and a
            # request waiting for its first token gains most from not queueing behind the others.
            sampled = dict.fromkeys(chain((f.request_id for f in snapshot.first_tokens),
                                          (r.request_id for r in engine.scheduler.running),
                                          (f.request_id for f in snapshot.finishes)))
            self._visit(engine, sampled, snapshot.end_time, tally)
        self.settle(engine)
        return tally

    def after_failed_step(self, engine: Engine, request_ids: Iterable[str], error: str) -> None:
        """The engine aborted these requests when their step failed: their sinks get `error`."""
        ids = list(request_ids)
        for request_id in ids:
            tracked = self._tracked.get(request_id)
            if tracked is not None:
                tracked.error = tracked.error or error
        self._visit(engine, ids, 0.0, StepTally())

    def settle(self, engine: Engine) -> None:
        """Requests whose end (abort or stop) the engine has applied: tell their sinks."""
        if self._ending:
            self._visit(engine, list(self._ending), 0.0, StepTally())

    def _visit(self, engine: Engine, request_ids: Iterable[str], end: float, tally: StepTally) -> None:
        for request_id in request_ids:
            tracked = self._tracked.get(request_id)
            req = engine.requests.get(request_id)
            if tracked is None or req is None:
                continue
            if len(req.output_token_ids) > tracked.sent:
                self._new_tokens(engine, req, tracked, end, tally)
            elif req.status.is_finished and not tracked.stopping:
                reason = "error" if tracked.error else req.status.finish_reason
                self._send(engine, tracked, RequestOutput(request_id, (), tracked.sent, reason, tracked.error))
            if req.status.is_finished:
                self._finish(req)

    def _new_tokens(self, engine: Engine, req: Request, tracked: _Tracked, end: float, tally: StepTally) -> None:
        new = tuple(req.output_token_ids[tracked.sent:])
        new_logprobs = tuple(req.output_logprobs[tracked.sent:])
        tally.generation_tokens += len(new)
        if tracked.sent == 0:
            if req.first_token_time is not None:
                tally.time_to_first_tokens.append(req.first_token_time - req.arrival_time)
            tally.prompt_tokens += req.num_prompt_tokens
        else:
            tally.inter_token_latencies.append(end - tracked.last_token_time)
        tracked.last_token_time = end
        tracked.sent = len(req.output_token_ids)
        finished = req.status.is_finished
        out = RequestOutput(req.request_id, new, tracked.sent, req.status.finish_reason if finished else None,
                            new_logprobs=new_logprobs)
        if self._send(engine, tracked, out):
            # A stop string: the sink has had its last output. The engine stops the request, or
            # relabels a length finish on this same token as stopped, as the client was told.
            tracked.stopping = True
            engine.stop_request(req.request_id)
            if not finished:
                self._ending.add(req.request_id)

    def _send(self, engine: Engine, tracked: _Tracked, out: RequestOutput) -> bool:
        """Hand an output to its sink; whether the sink stopped the request. A sink that raises fails
        its own request only."""
        try:
            return bool(tracked.sink.output(out))
        except Exception as exc:
            log.exception("the output sink of request %s failed", out.request_id)
            if out.finish_reason is None:
                self.end(engine, out.request_id,
                         f"the server failed on this request's output: {type(exc).__name__}: {exc}")
            return False

    def _finish(self, req: Request) -> None:
        tracked = self._tracked.pop(req.request_id, None)
        self._ending.discard(req.request_id)
        if tracked is None or req.finish_time is None or req.status == RequestStatus.FINISHED_REJECTED:
            return
        reason = "error" if tracked.error else "stopped" if tracked.stopping else req.status.finish_reason
        self._finished.append(finished_stats(req, reason or "aborted"))

    # -- the end of the loop ----------------------------------------------------------------------------
    def fail_all(self, message: str) -> None:
        """The loop failed: every sink still waiting hears so, and nothing is tracked any more."""
        for request_id, tracked in self._tracked.items():
            try:
                tracked.sink.output(RequestOutput(request_id, (), tracked.sent, "error", message))
            except Exception:
                log.exception("the output sink of request %s failed", request_id)
        self._tracked.clear()
        self._ending.clear()

    def take_finished(self) -> tuple[FinishedStats, ...]:
        finished, self._finished = tuple(self._finished), []
        return finished


def finished_stats(req: Request, reason: str) -> FinishedStats:
    """A finished request's latencies, from the engine's timestamps."""
    assert req.finish_time is not None
    first_sched, first_tok, fin = req.first_scheduled_time, req.first_token_time, req.finish_time
    return FinishedStats(
        request_id=req.request_id, finish_reason=reason, prompt_len=req.num_prompt_tokens,
        output_len=req.num_output_tokens, max_tokens=req.sampling_params.max_tokens,
        num_preemptions=req.num_preemptions, e2e=fin - req.arrival_time,
        queue=None if first_sched is None else first_sched - req.arrival_time,
        prefill=None if first_sched is None or first_tok is None else first_tok - first_sched,
        decode=None if first_tok is None else fin - first_tok,
        inference=None if first_sched is None else fin - first_sched,
    )


def step_report(engine: Engine, snapshot: StepSnapshot | None, num_waiting: int, tally: StepTally,
                finished: tuple[FinishedStats, ...]) -> StepReport:
    """What the observer (a metrics exporter) hears after a step, or on going idle (snapshot None)."""
    sched = engine.scheduler
    bm = sched.block_manager
    counts = snapshot.counts if snapshot is not None else None
    return StepReport(
        stepped=snapshot is not None,
        num_running=len(sched.running), num_waiting=num_waiting, num_swapped=len(sched.swapped),
        gpu_cache_usage=bm.gpu_usage,
        cpu_cache_usage=bm.num_used_cpu_blocks / bm.num_cpu_blocks if bm.num_cpu_blocks else 0.0,
        num_batched_tokens=counts.num_batched_tokens if counts is not None else 0,
        num_preemptions=counts.num_preemptions if counts is not None else 0,
        prompt_tokens=tally.prompt_tokens, generation_tokens=tally.generation_tokens,
        time_to_first_tokens=tuple(tally.time_to_first_tokens),
        inter_token_latencies=tuple(tally.inter_token_latencies), finished=finished,
    )
