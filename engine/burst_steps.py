"""The simulator's fast path, engine half: price each decode-burst step with the executor's step-time
prediction, move the virtual clock, keep phases and inter-token gaps, and record the step through
the same Engine.record_step an ordinary step uses. The scheduler half is engine/decode_burst.py.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from engine.clock import Clock
from engine.decode_burst import DecodeBurst
from engine.executors.base import StepTimePredictor
from engine.itl import InterTokenLatency
from engine.outputs import KVBlockEvent
from engine.phases import PhaseChange, PhaseTracker
from engine.request import Request
from engine.scheduler import Scheduler
from engine.snapshot import StepRecorder, StepSnapshot
from engine.step_counts import StepCounts
from engine.workload.spec import RequestSpec


class BurstHost(Protocol):
    """What a burst needs of the Engine it runs in (the Engine's public members)."""

    clock: Clock
    recorder: StepRecorder | None
    scheduler: Scheduler
    phases: PhaseTracker
    itl: InterTokenLatency

    def has_pending_aborts(self) -> bool: ...

    def add_arrivals(self, pending: deque[RequestSpec], now: float) -> None: ...

    def note_phase_changes(self, changes: Iterable[PhaseChange]) -> None: ...

    def record_step(self, step: int, start: float, end: float, counts: StepCounts, num_output_tokens: int,
                    model_time: float, first_token_ids: Sequence[str], finished: Sequence[Request],
                    kv_events: Sequence[KVBlockEvent], freed: Sequence[KVBlockEvent],
                    build: bool) -> StepSnapshot | None: ...

    def record_quiet_steps(self, first_step: int, num_decodes: int, num_padding: int, times: list[float]) -> None: ...


class BurstRunner:
    """Runs decode bursts for an Engine through its public members."""

    def __init__(self, engine: BurstHost, predictor: StepTimePredictor) -> None:
        self._engine = engine
        self._predictor = predictor

    def run(self, pending: deque[RequestSpec], on_step: Callable[[StepSnapshot], None] | None,
            stop: threading.Event | None) -> int:
        """Take steps while they are simple; the number taken (0: the next step is not)."""
        engine, predictor = self._engine, self._predictor
        scheduler = engine.scheduler
        burst = scheduler.begin_burst(predictor.burst_token)
        if burst is None:
            return 0
        predict = predictor.predict_step_time
        phases, itl, clock = engine.phases, engine.itl, engine.clock
        step = scheduler.step_index
        new_decoders: Sequence[Request] = [r for r in scheduler.running if phases.current(r.request_id) != "decode"]
        irregular = [r for r in scheduler.running if (itl.last_token(r.request_id) or (-1, 0.0))[0] != step - 1]
        padding_dirty = scheduler.is_static  # static batching's pad slots change as members finish
        with_events = engine.recorder is not None or on_step is not None
        build = on_step is not None
        quiet = not build and engine.recorder is None  # nobody reads a step's snapshot: stretches may be folded
        taken, last_end = 0, 0.0
        # The hot loop of a simulation: phase changes are built only when something changes.
        try:
            while not ((stop is not None and stop.is_set()) or engine.has_pending_aborts()):
                now = clock.now()
                if pending and pending[0].arrival_time <= now:
                    engine.add_arrivals(pending, now)
                if quiet and not (new_decoders or padding_dirty or irregular) and (k := burst.quiet_steps()) > 1:
                    stretch = self._quiet_stretch(burst, k, pending)
                    if stretch:
                        taken, last_end = taken + stretch, clock.now()
                        continue
                planned = burst.step(now, predict, with_events)
                if planned is None:
                    break
                step, admitted, counts, end = planned.step, planned.admitted, planned.counts, planned.end
                clock.advance(planned.model_time)
                changes: list[PhaseChange] = []  # most steps change no phase: nothing is built then
                if new_decoders or admitted:  # at the step's start: last step's prefills decode, new ones prefill
                    for req in new_decoders:
                        if change := phases.enter(req.request_id, "decode", step, now):
                            changes.append(change)
                    for req in admitted:
                        if change := phases.enter(req.request_id, "prefill", step, now):
                            changes.append(change)
                if padding_dirty:
                    changes += phases.padding(planned.padding_req_ids, step, now)
                consecutive = counts.num_decode_seqs
                if irregular:  # their gap spans steps they sat out: kept one by one
                    for req in irregular:
                        if not itl.sampled(req.request_id, step, end):
                            consecutive -= 1
                    irregular = []
                for req in admitted:  # a recomputed request's gap spans its preemption
                    if itl.sampled(req.request_id, step, end):
                        consecutive += 1
                itl.step_done(step, end, consecutive)
                finished = planned.finished
                if finished:
                    for req in finished:
                        if change := phases.left(req.request_id, step + 1, end):
                            changes.append(change)
                    padding_dirty = scheduler.is_static
                if changes:
                    engine.note_phase_changes(changes)
                new_decoders = planned.joined
                snapshot = engine.record_step(step, now, end, counts, counts.num_decode_seqs + counts.num_prefill_seqs,
                                              planned.model_time, planned.first_token_ids, finished, planned.kv_events,
                                              planned.freed, build=build)
                if snapshot is not None and on_step is not None:
                    on_step(snapshot)
                taken, last_end = taken + 1, end
        finally:
            burst.leave()
            if taken:  # every running request sampled in the last step taken here
                for req in scheduler.running:
                    itl.set_last_token(req.request_id, scheduler.step_index - 1, last_end)
        return taken

    def _quiet_stretch(self, burst: DecodeBurst, k: int, pending: deque[RequestSpec]) -> int:
        """Take the next k steps, which change nothing but times (no block crossing, finish or
        admission), in a tight loop, each priced and timed exactly as a burst step would be, up to
        the next arrival; the number taken."""
        engine, clock = self._engine, self._engine.clock
        first, n, context, padding = burst.decode_shape()
        time_of = self._predictor.decode_step_time(n, padding)
        arrival = pending[0].arrival_time if pending else math.inf
        times: list[float] = []
        ends: list[float] = []
        while len(times) < k and arrival > clock.now():  # an arrival is handed over before its step
            t = time_of(context)
            clock.advance(t)
            times.append(t)
            ends.append(clock.now())
            context += n
        burst.skip_quiet(len(times))
        engine.itl.decode_run(first, ends, n)
        engine.record_quiet_steps(first, n, padding, times)
        return len(times)
