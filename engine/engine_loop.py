"""The engine loop: requests arrive on time, then schedule -> execute -> update -> record.

The same loop drives real runs (torch executor, wall clock) and simulations (cost model,
virtual clock); only the executor and the clock differ.
"""

from __future__ import annotations

import queue
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import cast

from engine.burst_steps import BurstRunner
from engine.clock import Clock
from engine.config import ConfigError, EngineConfig
from engine.executors.base import Executor, StepTimePredictor
from engine.itl import InterTokenLatency
from engine.metrics import EngineStats, RunSummary, summarize
from engine.outputs import KVBlockEvent, ModelRunnerOutput, SchedulerOutput
from engine.phases import PhaseChange, PhaseTracker
from engine.request import Request, RequestStatus
from engine.sampling_params import SamplingParams, with_model_eos
from engine.scheduler import Scheduler
from engine.snapshot import FirstToken, RequestArrival, RequestFinish, StepRecorder, StepSnapshot, finish_record
from engine.step_counts import StepCounts
from engine.workload.spec import RequestSpec
from engine.workload.synthetic import SyntheticPrompt


class EngineStalledError(RuntimeError):
    """The scheduler could not make progress although requests are unfinished (a bug)."""


class StepFailedError(RuntimeError):
    """The executor failed a step; its requests were aborted (recorded so) and the engine goes on."""

    def __init__(self, step: int, request_ids: tuple[str, ...], cause: BaseException) -> None:
        super().__init__(f"step {step} failed ({type(cause).__name__}: {cause}); aborted its "
                         f"{len(request_ids)} request(s)")
        self.step = step
        self.request_ids = request_ids
        self.cause = cause


class Engine:
    def __init__(
        self,
        config: EngineConfig,
        executor: Executor,
        clock: Clock,
        recorder: StepRecorder | None = None,
        fast_forward: bool = True,
    ) -> None:
        if config.cache.num_gpu_blocks is None:
            raise ConfigError("num_gpu_blocks must be known before the engine starts")
        self.config = config
        self.executor = executor
        self.clock = clock
        self.recorder = recorder
        self.scheduler = Scheduler(config.scheduler, config.cache, clock.now, executor.include_token_ids)
        self.phases = PhaseTracker()
        self.stats = EngineStats()
        self.itl = InterTokenLatency()
        self.requests: dict[str, Request] = {}  # every request seen, finished ones included
        self._pending: deque[RequestSpec] = deque()  # not arrived yet, by arrival time
        self._aborts: queue.SimpleQueue[tuple[str, RequestStatus]] = queue.SimpleQueue()
        self._abort_everything = False
        self._arrivals: list[RequestArrival] = []
        self._finishes: list[RequestFinish] = []
        self._changes: list[PhaseChange] = []
        self._kv_carry: tuple[KVBlockEvent, ...] = ()  # block events for the next recorded step (never mutated)
        self._next_step = 0
        self._max_concurrency: int | None = None
        # Decode bursts (the simulator's fast path) need a virtual clock and an executor that knows a
        # step's time from its counts alone.
        predicts = callable(getattr(executor, "predict_step_time", None))
        self._bursts = (BurstRunner(self, cast(StepTimePredictor, executor))
                        if fast_forward and getattr(clock, "virtual", False) and predicts else None)
        # A simulated engine woken from idle by an arrival starts its step this much after it, as the
        # recorded engine did (a real clock spends that time by itself).
        self._idle_wake_s = float(getattr(executor, "idle_wake_s", 0.0)) if getattr(clock, "virtual", False) else 0.0

    # -- requests -----------------------------------------------------------------------------
    def make_request(self, spec: RequestSpec) -> Request:
        """A scheduler Request from a workload entry; prompts are tokenized or synthesized."""
        ids: Sequence[int]
        if spec.prompt_token_ids is not None:
            ids = spec.prompt_token_ids
        elif spec.prompt is not None:
            ids = self.executor.encode(spec.prompt)
        else:
            assert spec.prompt_len is not None, "a RequestSpec needs a prompt, its ids, or a length"
            salt = zlib.crc32(spec.request_id.encode())
            ids = SyntheticPrompt(spec.prompt_len, salt, self.executor.vocab_size)
        params = SamplingParams(max_tokens=spec.max_tokens, temperature=spec.temperature,
                                ignore_eos=spec.ignore_eos, seed=zlib.crc32(spec.request_id.encode()))
        params = with_model_eos(params, self.executor.extra_eos_token_ids)
        return Request(spec.request_id, ids, params, arrival_time=spec.arrival_time, priority=spec.priority,
                       eos_token_id=self.executor.eos_token_id, true_output_len=spec.true_output_len)

    def add_request(self, req: Request) -> None:
        """Hand an arrived request to the scheduler (it may reject it at once)."""
        if req.request_id in self.requests:
            raise ValueError(f"duplicate request id {req.request_id!r}")
        self.requests[req.request_id] = req
        self.scheduler.add_request(req, reject_reason=self._request_problem(req))
        self._arrivals.append(RequestArrival(req.request_id, req.arrival_time, req.num_prompt_tokens,
                                             req.sampling_params.max_tokens, req.priority))
        if req.status == RequestStatus.FINISHED_REJECTED:
            self._finishes.append(finish_record(req))
        else:
            self._changes.append(self.phases.arrived(req.request_id, self._next_step, req.arrival_time))

    def add_arrivals(self, pending: deque[RequestSpec], now: float) -> None:
        """Hand over every pending request (in arrival order) that has arrived by `now`; with a
        max_concurrency, only while fewer requests are unfinished, a held one arriving when let in
        (a closed-loop client, as `vllm bench serve --max-concurrency` drives a server)."""
        cap = self._max_concurrency
        scheduler = self.scheduler
        while pending and pending[0].arrival_time <= now:
            if cap is not None and scheduler.get_num_unfinished_requests() >= cap:
                return
            spec = pending.popleft()
            if cap is not None and spec.arrival_time < now:
                spec = replace(spec, arrival_time=now)
            self.add_request(self.make_request(spec))

    def note_phase_changes(self, changes: Iterable[PhaseChange]) -> None:
        """Phase changes for the next recorded step."""
        self._changes.extend(changes)

    def _request_problem(self, req: Request) -> str | None:
        """Why the model cannot read this prompt's token ids (ids given by the user), or cannot give the
        log-probabilities it asks for (a cost model has none), if either."""
        if req.sampling_params.logprobs is not None and not getattr(self.executor, "computes_logprobs", False):
            return "this engine runs no model (a cost model), so it has no log-probabilities to return"
        ids = req.prompt_token_ids
        if isinstance(ids, SyntheticPrompt) or not ids:
            return None  # synthesized within the vocabulary
        vocab = self.executor.vocab_size
        low, high = min(ids), max(ids)
        if low < 0 or high >= vocab:
            bad = low if low < 0 else high
            return f"prompt token id {bad} is outside the model's vocabulary (0..{vocab - 1})"
        return None

    def abort_request(self, request_id: str) -> None:
        """Abort from any thread; takes effect before the next step."""
        self._end_request(request_id, RequestStatus.FINISHED_ABORTED)

    def stop_request(self, request_id: str) -> None:
        """Finish a request as stopped from any thread, before the next step: a stop the scheduler
        cannot see in token ids (a server's stop string, known only once the text is decoded). A
        request that has just finished by length is recorded as stopped instead."""
        self._end_request(request_id, RequestStatus.FINISHED_STOPPED)

    def _end_request(self, request_id: str, status: RequestStatus) -> None:
        self._aborts.put((request_id, status))
        wake = getattr(self.clock, "wake", None)
        if wake is not None:
            wake()

    def abort_all(self) -> None:
        """Abort every request, arrived or not (from any thread); takes effect before the next step."""
        self._abort_everything = True
        wake = getattr(self.clock, "wake", None)
        if wake is not None:
            wake()

    def has_pending_aborts(self) -> bool:
        return self._abort_everything or not self._aborts.empty()

    def _apply_aborts(self) -> None:
        if self._abort_everything:
            self._abort_everything = False
            now = self.clock.now()
            for spec in self._pending:
                self._record_unsent_abort(spec, now)
            self._pending.clear()
            for rid in list(self.scheduler.requests):
                self._aborts.put((rid, RequestStatus.FINISHED_ABORTED))
        while True:
            try:
                rid, status = self._aborts.get_nowait()
            except queue.Empty:
                return
            req = self.requests.get(rid)
            if status == RequestStatus.FINISHED_STOPPED and req is not None \
                    and req.status == RequestStatus.FINISHED_LENGTH:
                # Its last token also completed a stop string (found once the server decoded the
                # text): stopped, as its client is told and as vLLM's output processor says.
                req.status = RequestStatus.FINISHED_STOPPED
                self._finishes.append(finish_record(req))
                continue
            now = self.clock.now()
            pending = next((s for s in self._pending if s.request_id == rid), None)
            if pending is not None:
                self._pending.remove(pending)
                self._record_unsent_abort(pending, now)
            elif self.scheduler.abort_request(rid, status):
                self._finishes.append(finish_record(self.requests[rid]))
                self.itl.forget(rid)
                change = self.phases.left(rid, self._next_step, now)
                if change is not None:
                    self._changes.append(change)

    def flush_pending(self) -> None:
        """Hand the recorder what happened since the last step (arrivals, finishes, aborts' frees)
        without ending the run: a server going idle writes them so the dashboard sees them."""
        self._apply_aborts()
        if self.recorder is not None and (self._arrivals or self._finishes or self._changes or self._kv_carry):
            self.recorder.record_tail(self._next_step, tuple(self._arrivals), tuple(self._finishes),
                                      tuple(self._changes), self._kv_carry)
            self._arrivals, self._finishes, self._changes, self._kv_carry = [], [], [], ()

    def _record_unsent_abort(self, spec: RequestSpec, now: float) -> None:
        """A request aborted before it arrived: recorded as aborted, never queued."""
        req = self.make_request(spec)
        req.status, req.finish_time = RequestStatus.FINISHED_ABORTED, now
        self.requests[req.request_id] = req
        self._arrivals.append(RequestArrival(req.request_id, req.arrival_time, req.num_prompt_tokens,
                                             req.sampling_params.max_tokens, req.priority))
        self._finishes.append(finish_record(req))

    # -- one step -----------------------------------------------------------------------------
    def step(self) -> StepSnapshot | None:
        """Run one engine step; None when nothing could be scheduled."""
        self._apply_aborts()
        clock = self.clock
        start = clock.now()
        out = self.scheduler.schedule()
        if out.is_empty:
            self.executor.execute_model(out)  # lets it drop state of finished requests
            self._kv_carry += out.kv_events
            return None
        changes = self._changes
        changes.extend(self.phases.scheduled(out, start))
        try:
            result = self.executor.execute_model(out)
        except Exception as exc:
            raise self._fail_step(out, exc) from exc
        clock.advance(result.model_time_s)
        update = self.scheduler.update_from_output(out, result)
        end = clock.now()
        changes.extend(self.phases.updated(out.step, update, end))
        itl = self.itl
        consecutive = 0
        for s in out.scheduled:
            if s.do_sample and itl.sampled(s.request_id, out.step, end):
                consecutive += 1
        itl.step_done(out.step, end, consecutive)
        finished = [self.requests[f.request_id] for f in update.finished]
        snapshot = self.record_step(out.step, start, end, out.counts, update.num_sampled_tokens, result.model_time_s,
                                     update.first_token_req_ids, finished, out.kv_events, update.kv_events,
                                     build=True, result=result)
        assert snapshot is not None
        return snapshot

    def record_step(self, step: int, start: float, end: float, counts: StepCounts, num_output_tokens: int,
                    model_time: float, first_token_ids: Sequence[str], finished: Sequence[Request],
                    kv_events: Sequence[KVBlockEvent], freed: Sequence[KVBlockEvent], build: bool,
                    result: ModelRunnerOutput | None = None) -> StepSnapshot | None:
        """What every step totals and records, taken the ordinary way or in a decode burst: the
        stats, the finishes, the block events (a step's frees are in effect from the next step on),
        and its StepSnapshot to the recorder. build=False: nobody will read the snapshot."""
        stats = self.stats
        stats.num_steps += 1
        stats.sum_batch_size += counts.num_prefill_seqs + counts.num_decode_seqs
        stats.sum_batched_tokens += counts.num_batched_tokens
        stats.sum_prefill_tokens += counts.num_prefill_tokens
        stats.sum_padding_tokens += counts.num_padding_tokens
        stats.num_preemptions += counts.num_preemptions
        stats.model_time_s += model_time
        if result is not None:  # the executor measured more than the time (a real run's FLOPs)
            stats.model_flops += result.num_flops
            stats.padding_flops += result.num_padding_flops
        finishes = self._finishes
        for req in finished:
            finishes.append(finish_record(req))
            self.itl.forget(req.request_id)
        carry, self._kv_carry = self._kv_carry, tuple(freed)
        snapshot = None
        if build or self.recorder is not None:
            requests = self.requests
            events = tuple(carry) + tuple(kv_events) if carry else tuple(kv_events)
            snapshot = StepSnapshot(
                step=step, start_time=start, end_time=end, counts=counts, num_output_tokens=num_output_tokens,
                model_time=model_time, model_flops=(result.num_flops or None) if result is not None else None,
                compute_utilization=result.compute_utilization if result is not None else None,
                arrivals=tuple(self._arrivals),
                first_tokens=tuple(FirstToken(rid, requests[rid].first_scheduled_time, end) for rid in first_token_ids),
                finishes=tuple(finishes), phase_changes=tuple(self._changes), kv_events=events,
            )
            if self.recorder is not None:
                self.recorder.record(snapshot)
        # Fresh lists only where the step used them (a simulated step usually has none).
        if self._arrivals:
            self._arrivals = []
        if finishes:
            self._finishes = []
        if self._changes:
            self._changes = []
        self._next_step = step + 1
        return snapshot

    def record_quiet_steps(self, first_step: int, num_decodes: int, num_padding: int, times: list[float]) -> None:
        """record_step for a run of steps that changed nothing but counts and times (decodes only,
        no finish, no admission, no block event) when nothing records or watches them: the totals,
        summed step by step as record_step would sum them."""
        stats = self.stats
        k = len(times)
        stats.num_steps += k
        stats.sum_batch_size += num_decodes * k
        stats.sum_batched_tokens += num_decodes * k
        stats.sum_padding_tokens += num_padding * k
        model_time = stats.model_time_s
        for t in times:
            model_time += t
        stats.model_time_s = model_time
        self._kv_carry = ()
        self._arrivals, self._finishes, self._changes = [], [], []  # nothing records them
        self._next_step = first_step + k

    def _fail_step(self, out: SchedulerOutput, exc: Exception) -> StepFailedError:
        """Abort the requests of a step the executor failed, keeping the record whole: the step's
        block allocations and the aborts' frees reach the block events, their finishes the requests."""
        self._kv_carry += out.kv_events
        ids = tuple(s.request_id for s in out.scheduled)
        for rid in ids:
            self._aborts.put((rid, RequestStatus.FINISHED_ABORTED))
        self._next_step = out.step + 1
        self._apply_aborts()
        return StepFailedError(out.step, ids, exc)

    # -- a whole workload -----------------------------------------------------------------------
    def run(
        self,
        specs: Iterable[RequestSpec],
        on_step: Callable[[StepSnapshot], None] | None = None,
        stop: threading.Event | None = None,
        max_concurrency: int | None = None,
    ) -> RunSummary:
        """Send every request at its arrival time and step until all have finished.

        Setting `stop` aborts what is left (the run still ends cleanly and is summarized).
        max_concurrency: at most this many unfinished requests; the next is sent when one finishes.
        """
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self._max_concurrency = max_concurrency
        self._pending = deque(sorted(specs, key=lambda s: s.arrival_time))
        clock = self.clock
        scheduler = self.scheduler
        stopped = False
        while True:
            if stop is not None and stop.is_set() and not stopped:
                stopped = True
                self.abort_all()
            self._apply_aborts()
            now = clock.now()
            pending = self._pending
            self.add_arrivals(pending, now)
            if not scheduler.has_unfinished_requests():
                if not pending:
                    break
                clock.wait_until(pending[0].arrival_time + self._idle_wake_s)
                continue
            if self._bursts is not None and self._bursts.run(pending, on_step, stop):
                continue
            snapshot = self.step()
            if snapshot is None:
                if pending:
                    clock.wait_until(pending[0].arrival_time)
                    continue
                if scheduler.has_unfinished_requests():
                    raise EngineStalledError(
                        f"no request could be scheduled with {scheduler.get_num_unfinished_requests()} unfinished"
                    )
                continue
            if on_step is not None:
                on_step(snapshot)
        return self.finish()

    def finish(self) -> RunSummary:
        """Close open phases, write what is left, and summarize."""
        self._apply_aborts()
        if not self.scheduler.has_unfinished_requests():
            # No step follows, so hand over what a next schedule() would report: the executor drops
            # the finished requests' state, and the frees of aborts are recorded.
            out = self.scheduler.schedule()
            if out.finished_req_ids or out.kv_events:
                self.executor.execute_model(out)
                self._kv_carry += out.kv_events
        end = self.clock.now()
        self._changes.extend(self.phases.close_all(self._next_step, end))
        if self.recorder is not None and (self._arrivals or self._finishes or self._changes or self._kv_carry):
            self.recorder.record_tail(self._next_step, tuple(self._arrivals), tuple(self._finishes),
                                      tuple(self._changes), self._kv_carry)
        self._arrivals, self._finishes, self._changes, self._kv_carry = [], [], [], ()
        last_finish = max((r.finish_time for r in self.requests.values() if r.finish_time is not None), default=end)
        return summarize(self.requests.values(), self.stats, last_finish, self.itl.pooled())
