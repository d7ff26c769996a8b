"""The simulator's fast path, engine half: price each decode-burst step with the executor's step-time
prediction, move the virtual clock, keep phases and inter-token gaps, and record the step through
the same Engine.record_step an ordinary step uses. The scheduler half is engine/decode_burst.py.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.outputs import ModelRunnerOutput
from engine.snapshot import StepSnapshot
from engine.workload.spec import RequestSpec

if TYPE_CHECKING:
    from engine.engine_loop import Engine
    from engine.executors.base import StepTimePredictor


class BurstRunner:
    """Runs decode bursts for an Engine through its public members."""

    def __init__(self, engine: Engine, predictor: StepTimePredictor) -> None:
        self._engine = engine
        self._predictor = predictor

    def run(self, pending: deque[RequestSpec], on_step: Callable[[StepSnapshot], None] | None,
            stop: threading.Event | None) -> int:
        """Take steps while they are simple; the number taken (0: the next step is not)."""
        engine, predictor = self._engine, self._predictor
        scheduler = engine.scheduler
        if not scheduler.begin_burst(predictor.burst_token):
            return 0
        phases, itl, clock = engine.phases, engine.itl, engine.clock
        step = scheduler.step_index
        new_decoders = [r for r in scheduler.running if phases.current(r.request_id) != "decode"]
        irregular = [r for r in scheduler.running if (itl.last_token(r.request_id) or (-1, 0.0))[0] != step - 1]
        padding_dirty = True
        with_events = engine.recorder is not None or on_step is not None
        taken, last_end = 0, 0.0
        try:
            while not ((stop is not None and stop.is_set()) or engine.has_pending_aborts()):
                now = clock.now()
                engine.add_arrivals(pending, now)
                planned = scheduler.burst_schedule(now, with_events)
                if planned is None:
                    break
                step = planned.step
                # Phase changes at the step's start: last step's prefills now decode, new ones prefill.
                changes = [phases.enter(r.request_id, "decode", step, now) for r in new_decoders]
                changes += [phases.enter(r.request_id, "prefill", step, now) for r in planned.admitted]
                if padding_dirty:
                    changes += phases.padding(planned.padding_req_ids, step, now)
                cost = predictor.predict_step_time(planned.counts)
                clock.advance(cost)
                end = clock.now()
                consecutive = planned.counts.num_decode_seqs
                for req in irregular:  # their gap spans steps they sat out: kept one by one
                    if not itl.sampled(req.request_id, step, end):
                        consecutive -= 1
                irregular = []
                for req in planned.admitted:  # a recomputed request's gap spans its preemption
                    if itl.sampled(req.request_id, step, end):
                        consecutive += 1
                itl.step_done(step, end, consecutive)
                update = scheduler.burst_update(planned, end)
                changes += [phases.left(r.request_id, step + 1, end) for r in update.finished]
                engine.note_phase_changes(changes)
                new_decoders, padding_dirty = update.joined, bool(update.finished)
                counts = planned.counts
                snapshot = engine.record_step(step, now, end, counts, counts.num_decode_seqs + counts.num_prefill_seqs,
                                              ModelRunnerOutput({}, model_time_s=cost), update.first_token_ids,
                                              update.finished, planned.kv_events, update.freed,
                                              build=on_step is not None)
                if on_step is not None and snapshot is not None:
                    on_step(snapshot)
                taken, last_end = taken + 1, end
        finally:
            scheduler.end_burst()
            if taken:  # every running request sampled in the last step taken here
                for req in scheduler.running:
                    itl.set_last_token(req.request_id, scheduler.step_index - 1, last_end)
        return taken
