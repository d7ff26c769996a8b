"""The simulator's fast path: steps run without visiting every running request every step.

While every running request is decoding, a simulated step depends only on counts (how many
requests decode, the context they attend) and on a few events: a request crossing into a KV
block it does not hold yet, a request sampling its last allowed token, an arrival, an admission
whose whole prompt fits in the step. FastForward keeps the running requests' token counts
implicit (each is exact as of its "anchor" step and grows by one per step since), keeps block
crossings and finishes in heaps ordered by (step, policy order), and so costs O(events) per step
instead of O(running requests). It changes the same Scheduler state the Scheduler would and
writes the same step records a step-by-step run writes; before any step that needs more (a
preemption, a prefill split over steps, a swap, an abort, a stop token) it stops, writes every
request's counts back, and the engine takes that step the ordinary way.

tests/test_fast_forward.py runs randomized simulations both ways and compares every recorded
step and request. Like decode steps in vLLM, a decode always samples, so nothing here guesses.
"""

from __future__ import annotations

import bisect
import heapq
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.outputs import KVBlockEvent
from engine.request import Request, RequestStatus
from engine.snapshot import FirstToken, StepSnapshot, finish_record
from engine.workload.spec import RequestSpec

if TYPE_CHECKING:
    from engine.engine_loop import Engine

OrderKey = tuple[float, ...]


class FastForward:
    """Part of the Engine of a simulation (virtual clock, simulated executor)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._scheduler = engine.scheduler
        self._token: int = engine.executor.burst_token  # type: ignore[attr-defined]
        self._predict = engine.executor.cost_model.predict  # type: ignore[attr-defined]
        cfg = engine.scheduler.scheduler_config
        self._sjf = cfg.policy == "sjf"
        self._sjf_oracle = cfg.policy == "sjf-oracle"
        # Lazy state, valid between _enter() and _leave(): a running request's computed tokens and
        # outputs are as of its anchor step, plus one per step since.
        self._anchor: dict[str, int] = {}
        self._order: dict[str, OrderKey] = {}  # running order, constant while decoding (see _order_key)
        self._crossings: list[tuple[int, OrderKey, int, Request]] = []  # (step, order, last step, request)
        self._finishes: list[tuple[int, OrderKey, Request]] = []  # (step of its last token, order, request)
        self._sum_computed = 0  # computed tokens of the running requests at the current step's start
        self._new_decoders: list[Request] = []  # phase "decode" opens at the next step
        self._padding_dirty = False
        self._irregular: list[Request] = []  # running requests whose last token was not in the last step
        self._last_end = 0.0  # end time of the last step taken here...
        self._last_end_step = -1  # ...and its index

    # -- public ---------------------------------------------------------------------------------
    def run(self, pending: deque[RequestSpec], on_step: Callable[[StepSnapshot], None] | None,
            stop: threading.Event | None) -> int:
        """Run steps while they are simple; the number run (0: the next step is not)."""
        if not self._enter():
            return 0
        steps = 0
        try:
            while self._step(pending, on_step, stop):
                steps += 1
        finally:
            self._leave()
        return steps

    # -- entering and leaving -------------------------------------------------------------------
    def _order_key(self, req: Request, step: int) -> OrderKey:
        """The running order: the policy key, except that sjf's (remaining outputs) falls by one
        per step for every decoding request, so remaining + step orders them for good."""
        if self._sjf:
            return (req.remaining_output_tokens + step, req.arrival_time, req.seq_no)
        if self._sjf_oracle:
            return (req.num_tokens_to_stop + step, req.arrival_time, req.seq_no)
        return self._scheduler._key(req)

    def _enter(self) -> bool:
        s = self._scheduler
        running = s.running
        if not running or s.swapped or len(running) + len(s._padding) > s.scheduler_config.token_budget:
            return False
        if s.scheduler_config.scheduler_delay_factor > 0:
            return False  # the delay clock ticks on every schedule() call, which this path skips
        token = self._token
        for req in running:
            if req.num_computed_tokens != req.num_tokens - 1 or req.num_computed_tokens < req.prefill_target:
                return False  # not decoding (a prefill chunk or a recompute is due)
            if req.is_stop_token(token):
                return False
        step = s._step
        if self._sjf or self._sjf_oracle:  # what schedule() does at a step's start
            running.sort(key=s._key)
        phases = self._engine.phases
        for req in running:
            self._join(req, step)
            self._sum_computed += req.num_computed_tokens
        self._new_decoders = [r for r in running if phases.current(r.request_id) != "decode"]
        self._padding_dirty = True
        itl = self._engine.itl
        self._irregular = [r for r in running if (itl.last_token(r.request_id) or (-1, 0.0))[0] != step - 1]
        return True

    def _join(self, req: Request, step: int) -> None:
        """req decodes from `step` on: note when it crosses into new blocks and when it finishes."""
        rid = req.request_id
        order = self._order_key(req, step)
        self._anchor[rid] = step
        self._order[rid] = order
        last = step + req.num_tokens_to_stop - 1  # the step that samples its last token
        heapq.heappush(self._finishes, (last, order, req))
        crossing = step + req.kv_capacity - req.num_computed_tokens  # first step whose token has no slot
        if crossing <= last:
            heapq.heappush(self._crossings, (crossing, order, last, req))

    def _leave(self) -> None:
        """Write the implicit counts back into the Request objects."""
        step = self._scheduler._step
        token = self._token
        anchor = self._anchor
        itl = self._engine.itl
        took_steps = self._last_end_step == step - 1
        for req in self._scheduler.running:
            k = step - anchor[req.request_id]
            if k:
                req.num_computed_tokens += k
                req.output_token_ids.extend([token] * k)
            if took_steps:  # every running request sampled in the last step taken here
                itl.set_last_token(req.request_id, step - 1, self._last_end)
        anchor.clear()
        self._order.clear()
        self._crossings.clear()
        self._finishes.clear()
        self._sum_computed = 0
        self._new_decoders = []
        self._irregular = []

    # -- one step -------------------------------------------------------------------------------
    def _admissions(self, free_blocks: int, budget: int) -> list[Request] | None:
        """The waiting requests Scheduler._admit would admit now, taken off the queue; None (and
        the queue unchanged) if one of them would get only part of its prompt this step."""
        s = self._scheduler
        waiting = s.waiting
        bm = s.block_manager
        room = s.scheduler_config.max_num_seqs - len(s.running)
        chunked = s.scheduler_config.enable_chunked_prefill
        admitted: list[Request] = []
        while waiting and len(admitted) < room and budget > 0:
            req = waiting.peek()
            target = req.num_tokens
            if not chunked and target > budget:
                break
            need = bm.blocks_needed(target) - bm.num_gpu_blocks_of(req.request_id)
            if need > free_blocks:
                break
            if target > budget or req.is_stop_token(self._token):
                for back in admitted:
                    waiting.add(back)
                return None
            admitted.append(waiting.pop())
            free_blocks -= max(need, 0)
            budget -= target
        return admitted

    def _step(self, pending: deque[RequestSpec], on_step: Callable[[StepSnapshot], None] | None,
              stop: threading.Event | None) -> bool:
        """One step, as Engine.step() would take it; False if it is not simple (then only the
        arrivals due by now were added, as the engine loop would add them anyway)."""
        engine = self._engine
        if (stop is not None and stop.is_set()) or engine.has_pending_aborts():
            return False
        clock = engine.clock
        now = clock.now()
        while pending and pending[0].arrival_time <= now:
            engine.add_request(engine.make_request(pending.popleft()))
        s = self._scheduler
        running = s.running
        n = len(running)
        if n == 0:
            return False
        step = s._step
        bm = s.block_manager
        cfg = s.scheduler_config

        # Who crosses into a new block this step (in running order), and who gets admitted.
        heap = self._crossings
        crossing: list[tuple[int, OrderKey, int, Request]] = []
        while heap and heap[0][0] == step:
            crossing.append(heapq.heappop(heap))
        free = bm.num_free_gpu_blocks
        if len(crossing) > free:
            return False  # the scheduler preempts here
        admitted: list[Request] = []
        if s.waiting and not s._static:
            if cfg.scheduler_delay_factor > 0:
                return False
            if n < cfg.max_num_seqs:
                maybe = self._admissions(free - len(crossing), cfg.token_budget - n)
                if maybe is None:
                    return False
                admitted = maybe

        # -- schedule(): block tables and queues, as the Scheduler changes them
        anchor, order = self._anchor, self._order
        block_size = bm.block_size
        kv_events = s._pending_kv_events  # an abort's frees, reported by the first step after it
        if kv_events or s._pending_finished or s._pending_rejected:
            s._pending_kv_events, s._pending_finished, s._pending_rejected = [], [], []
        else:
            kv_events = []
        record = engine.recorder is not None or on_step is not None  # else block events go nowhere
        for _, entry_order, last, req in crossing:
            rid = req.request_id
            block = bm.append_block(rid)
            if record:
                kv_events.append(KVBlockEvent(rid, "allocate", "gpu", (block,)))
            req.kv_capacity += block_size
            if step + block_size <= last:
                heapq.heappush(heap, (step + block_size, entry_order, last, req))
        prefill_tokens = prefill_pairs = 0
        for req in admitted:
            rid = req.request_id
            target = req.num_tokens
            blocks = bm.grow(rid, target)
            assert blocks is not None, "the free blocks were counted"
            if blocks:
                kv_events.append(KVBlockEvent(rid, "allocate", "gpu", blocks))
            req.kv_capacity = bm.num_gpu_blocks_of(rid) * block_size
            req.status = RequestStatus.RUNNING
            req.prefill_target = target
            if req.first_scheduled_time is None:
                req.first_scheduled_time = now
            order[rid] = self._order_key(req, step)
            bisect.insort(running, req, key=lambda r: order[r.request_id])
            prefill_tokens += target
            prefill_pairs += target * (target + 1) // 2
        num_adm = len(admitted)
        context = self._sum_computed + n
        num_waiting, num_running, used_blocks = len(s.waiting), len(running), bm.num_used_gpu_blocks
        padding = len(s._padding)  # static batching's pad rows: one per finished member

        # Phase changes at the step's start: last step's prefills now decode, new ones prefill.
        phases = engine.phases
        changes = engine._changes
        for req in self._new_decoders:
            change = phases.enter(req.request_id, "decode", step, now)
            if change is not None:
                changes.append(change)
        self._new_decoders = []
        for req in admitted:
            change = phases.enter(req.request_id, "prefill", step, now)
            if change is not None:
                changes.append(change)
        if self._padding_dirty:
            changes.extend(phases.padding(tuple(s._padding), step, now))
            self._padding_dirty = False

        # -- the executor: the cost model prices the step
        cost = self._predict((1.0, float(n + num_adm), float(prefill_tokens), float(n), float(context),
                              float(prefill_pairs), 0.0, float(padding)))
        clock.advance(cost)
        end = clock.now()
        itl = engine.itl
        consecutive = n
        if self._irregular:  # their gap spans steps they sat out: kept one by one
            for req in self._irregular:
                if itl.sampled(req.request_id, step, end):
                    continue
                consecutive -= 1
            self._irregular = []
        for req in admitted:  # a recomputed request's gap spans its preemption
            if itl.sampled(req.request_id, step, end):
                consecutive += 1
        itl.step_done(step, end, consecutive)
        self._last_end, self._last_end_step = end, step

        # -- update_from_output(): every request sampled one token; some finish at their length
        token = self._token
        self._sum_computed += n
        first_tokens: list[FirstToken] = []
        finished: list[Request] = []
        done = self._finishes
        while done and done[0][0] == step:
            req = heapq.heappop(done)[2]
            k = step + 1 - anchor.pop(req.request_id)
            req.num_computed_tokens += k
            req.output_token_ids.extend([token] * k)
            self._sum_computed -= req.num_computed_tokens
            finished.append(req)
        for req in admitted:
            req.num_computed_tokens = req.prefill_target
            req.output_token_ids.append(token)
            if req.first_token_time is None:
                req.first_token_time = end
                first_tokens.append(FirstToken(req.request_id, req.first_scheduled_time, end))
            if req.num_tokens_to_stop <= 0:
                finished.append(req)
            else:
                self._join(req, step + 1)
                self._sum_computed += req.num_computed_tokens
                self._new_decoders.append(req)
        freed: list[KVBlockEvent] = []
        for req in finished:
            itl.forget(req.request_id)
            status = req.finish_status(token)
            assert status is not None, "the fast path finishes a request only where it stops"
            s._finish(req, status, end, freed)
            running.remove(req)
            order.pop(req.request_id, None)
            engine._finishes.append(finish_record(req))
            change = phases.left(req.request_id, step + 1, end)
            if change is not None:
                changes.append(change)
        if finished:
            self._padding_dirty = True

        # -- what Engine.step() totals and records
        stats = engine.stats
        stats.num_steps += 1
        stats.sum_batch_size += n + num_adm
        stats.sum_batched_tokens += n + prefill_tokens
        stats.sum_prefill_tokens += prefill_tokens
        stats.sum_padding_tokens += padding
        stats.model_time_s += cost
        carry, engine._kv_carry = engine._kv_carry, freed
        if record:
            events = tuple(carry) + tuple(kv_events) if carry else tuple(kv_events)
            snapshot = StepSnapshot(
                step=step, start_time=now, end_time=end, num_waiting=num_waiting, num_running=num_running,
                num_swapped=0, num_prefill_seqs=num_adm, num_prefill_tokens=prefill_tokens, num_decode_seqs=n,
                num_decode_tokens=n, num_batched_tokens=n + prefill_tokens, num_padding_seqs=padding,
                num_padding_tokens=padding,
                num_used_gpu_blocks=used_blocks, num_gpu_blocks=bm.num_gpu_blocks,
                num_used_cpu_blocks=bm.num_used_cpu_blocks, num_preemptions=0, num_output_tokens=n + num_adm,
                num_context_tokens=context, num_prefill_pairs=prefill_pairs, num_swap_blocks=0, model_time=cost,
                arrivals=tuple(engine._arrivals), first_tokens=tuple(first_tokens),
                finishes=tuple(engine._finishes), phase_changes=tuple(changes), kv_events=events,
            )
            if engine.recorder is not None:
                engine.recorder.record(snapshot)
            if on_step is not None:
                on_step(snapshot)
        engine._arrivals, engine._finishes, engine._changes = [], [], []
        s._step = step + 1
        engine._next_step = step + 1
        return True
