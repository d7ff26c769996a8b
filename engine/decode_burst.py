"""The simulator's fast path, scheduler half: steps taken without visiting every running request.

While every running request is decoding, a step depends only on counts (how many decode, the
context they attend) and on a few events: a request crossing into a KV block it does not hold yet,
a request sampling its last token, an admission whose whole prompt fits in the step. The burst
keeps the running requests' token counts implicit (each exact as of its anchor step, plus one per
step since). Finishes wait in a heap ordered by (step, running order). Crossings are periodic: a
decoding request crosses every block_size steps, so each waits in the bucket of its crossing step
modulo block_size, kept in running order; a step visits one bucket and no heap. So a step costs
O(events) instead of O(running requests). It changes what Scheduler.schedule() and
update_from_output() would change, through the Scheduler's public members; before any step that
needs more (a preemption, a prefill split over steps, a swap, a possible stop token) it declines,
the counts are written back, and the engine takes that step the ordinary way.

The engine half (pricing the step, phases, ITL, recording) is Engine._burst; a decode always
samples, so nothing here guesses. tests/test_fast_forward.py runs randomized simulations both
ways and compares every recorded step and request.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine.outputs import KVBlockEvent
from engine.request import Request, RequestStatus
from engine.scheduler_state import SchedulerState
from engine.step_counts import StepCounts

OrderKey = tuple[float, ...]
_NEVER = 1 << 62  # a step index no run reaches


def _entry_order(entry: list) -> OrderKey:
    return entry[1]


@dataclass(slots=True)
class BurstStep:
    """One burst step, scheduled, priced and sampled (plain data for the engine)."""

    step: int
    counts: StepCounts
    model_time: float  # what the price callback said the step takes
    end: float  # now + model_time: when its tokens were sampled
    admitted: list[Request]  # whole prompts admitted this step (they sample their first token)
    kv_events: list[KVBlockEvent]  # block ownership changes of this step's schedule
    padding_req_ids: tuple[str, ...]  # static batching: finished members holding a slot
    finished: Sequence[Request] = ()  # requests that stopped at this step's token
    first_token_ids: Sequence[str] = ()
    freed: Sequence[KVBlockEvent] = ()  # blocks the finishes freed
    joined: Sequence[Request] = ()  # admitted this step, decoding from the next


class DecodeBurst:
    """Owned by a Scheduler; valid between enter() and leave()."""

    def __init__(self, scheduler: SchedulerState, token: int) -> None:
        self._s = scheduler
        self._token = token  # what every request samples in a burst (the simulator's token)
        policy = scheduler.scheduler_config.policy
        self._sjf = policy == "sjf"
        self._sjf_oracle = policy == "sjf-oracle"
        self._anchor: dict[str, int] = {}  # step from which a request's counts are implicit
        self._order: dict[str, OrderKey] = {}  # running order, constant while decoding (see _order_key)
        # Per step modulo block_size, in running order: [next crossing step, order, last step, request]
        # for every request with a crossing left (one entry each, advanced by block_size as it crosses).
        self._buckets: list[list[list]] = [[] for _ in range(scheduler.block_manager.block_size)]
        self._finishes: list[tuple[int, OrderKey, Request]] = []  # (step of its last token, order, request)
        self._sum_computed = 0  # computed tokens of the running requests at the current step's start
        self._step = 0  # the next step's index while in a burst (the Scheduler's is brought up at leave())
        self._taken = 0
        cfg = scheduler.scheduler_config
        self._max_num_seqs, self._budget = cfg.max_num_seqs, cfg.token_budget
        self._static = scheduler.is_static
        self._pool = scheduler.block_manager.num_gpu_blocks
        self._used_cpu = 0  # constant in a burst: nothing swaps (read at enter)

    # -- entering and leaving -------------------------------------------------------------------
    def _order_key(self, req: Request, step: int) -> OrderKey:
        """The running order: the policy key, except that sjf's (remaining outputs) falls by one per
        step for every decoding request, so remaining + step orders them for good."""
        if self._sjf:
            return (req.remaining_output_tokens + step, req.arrival_time, req.seq_no)
        if self._sjf_oracle:
            return (req.num_tokens_to_stop + step, req.arrival_time, req.seq_no)
        return self._s.policy_key(req)

    def enter(self) -> bool:
        """Whether every running request is decoding and nothing else needs the ordinary step."""
        s = self._s
        running = s.running
        if not running or s.swapped or len(running) + len(s.padding) > s.scheduler_config.token_budget:
            return False
        if s.delay_enabled:
            return False  # the delay clock ticks on every schedule() call, which this path skips
        token = self._token
        for req in running:
            if req.num_computed_tokens != req.num_tokens - 1 or req.num_computed_tokens < req.prefill_target:
                return False  # not decoding (a prefill chunk or a recompute is due)
            if req.is_stop_token(token):
                return False
        step = self._step = s.step_index
        self._taken = 0
        self._used_cpu = s.block_manager.num_used_cpu_blocks
        if self._sjf or self._sjf_oracle:  # what schedule() does at a step's start
            running.sort(key=s.policy_key)
        for req in running:
            self._join(req, step)
            self._sum_computed += req.num_computed_tokens
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
            buckets = self._buckets
            bisect.insort(buckets[crossing % len(buckets)], [crossing, order, last, req], key=_entry_order)

    def leave(self) -> None:
        """Write the implicit counts back into the Request objects; the Scheduler counts the steps."""
        step = self._step
        self._s.advance_step(self._taken)
        token = self._token
        anchor = self._anchor
        for req in self._s.running:
            k = step - anchor[req.request_id]
            if k:
                req.num_computed_tokens += k
                req.output_token_ids.extend([token] * k)
        anchor.clear()
        self._order.clear()
        for bucket in self._buckets:
            bucket.clear()
        self._finishes.clear()
        self._sum_computed = 0

    # -- quiet stretches ------------------------------------------------------------------------
    def quiet_steps(self) -> int:
        """How many steps from the next one are certain to change nothing but counts and times: no
        block crossing, no finish, no admission, nothing pending (0: fewer than two are)."""
        # Crossings and finishes first: at high concurrency one is due almost every step.
        step = self._step
        finishes = self._finishes
        if finishes and finishes[0][0] <= step + 1:
            return 0
        crossing = self._next_crossing()
        if crossing <= step + 1:
            return 0
        s = self._s
        if s.has_pending or (s.waiting and not self._static and len(s.running) < self._max_num_seqs):
            return 0
        finish = finishes[0][0] if finishes else _NEVER
        return (crossing if crossing < finish else finish) - step

    def _next_crossing(self) -> int:
        """The first step from the next one at which some request crosses into a new block."""
        step, buckets = self._step, self._buckets
        size = len(buckets)
        for ahead in range(step, step + size):
            for entry in buckets[ahead % size]:
                if entry[0] == ahead:
                    return ahead
        # Only requests more than a block from their next crossing (blocks reserved ahead) are left.
        return min((entry[0] for bucket in buckets for entry in bucket), default=_NEVER)

    def decode_shape(self) -> tuple[int, int, int, int]:
        """(next step, decodes, context they attend in it, pad rows) of a quiet step."""
        n = len(self._s.running)
        return self._step, n, self._sum_computed + n, len(self._s.padding)

    def skip_quiet(self, num_steps: int) -> None:
        """num_steps quiet steps were taken outside (priced and timed by the engine)."""
        self._sum_computed += len(self._s.running) * num_steps
        self._step += num_steps
        self._taken += num_steps

    # -- one step -------------------------------------------------------------------------------
    def _admissions(self, free_blocks: int, budget: int) -> list[Request] | None:
        """The waiting requests the scheduler would admit now, taken off the queue; None (and the
        queue unchanged) if one of them would get only part of its prompt this step."""
        s = self._s
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

    def step(self, now: float, price: Callable[[StepCounts], float], with_block_events: bool) -> BurstStep | None:
        """One step, as Scheduler.schedule(), the executor and update_from_output() would take it,
        priced by `price`; None if it is not simple (then nothing changed). with_block_events=False
        skips building the crossings' block events (nothing would record them)."""
        s = self._s
        running = s.running
        n = len(running)
        if n == 0:
            return None
        step = self._step
        bm = s.block_manager
        block_size = bm.block_size
        bucket = self._buckets[step % block_size]
        crossing = [entry for entry in bucket if entry[0] == step] if bucket else bucket  # in running order
        free = bm.num_free_gpu_blocks
        if len(crossing) > free:
            return None  # the scheduler preempts here
        admitted: list[Request] = []
        if s.waiting and not self._static and n < self._max_num_seqs:
            maybe = self._admissions(free - len(crossing), self._budget - n)
            if maybe is None:
                return None
            admitted = maybe

        # An abort's frees are reported by the first step after it.
        kv_events = s.take_pending()[0] if s.has_pending else []
        if crossing:
            done_crossing = False
            for entry in crossing:
                req = entry[3]
                rid = req.request_id
                block = bm.append_block(rid)
                if with_block_events:
                    kv_events.append(KVBlockEvent(rid, "allocate", "gpu", (block,)))
                req.kv_capacity += block_size
                entry[0] = step + block_size
                if entry[0] > entry[2]:
                    done_crossing = True  # its last token has a slot now
            if done_crossing:
                bucket[:] = [entry for entry in bucket if entry[0] <= entry[2]]
        prefill_tokens = prefill_pairs = 0
        if admitted:
            prefill_tokens, prefill_pairs = self._start_prefills(admitted, step, now, kv_events)
        padding = s.padding  # static batching's pad rows: one per finished member
        num_pad = len(padding)
        # Positional, in StepCounts' field order: this runs once per simulated step.
        counts = StepCounts(len(s.waiting), len(running), 0, len(admitted), prefill_tokens, n, n + prefill_tokens,
                            num_pad, num_pad, self._sum_computed + n, prefill_pairs, 0, 0, bm.num_used_gpu_blocks,
                            self._pool, self._used_cpu)
        cost = price(counts)
        planned = BurstStep(step, counts, cost, now + cost, admitted, kv_events, tuple(padding) if num_pad else ())
        # Every running request sampled one token at the step's end (its count stays implicit).
        self._sum_computed += n
        done = self._finishes
        if admitted or (done and done[0][0] == step):
            self._finish_and_join(planned)
        self._step = step + 1
        self._taken += 1
        return planned

    def _start_prefills(self, admitted: list[Request], step: int, now: float,
                        kv_events: list[KVBlockEvent]) -> tuple[int, int]:
        """Admitted requests take their blocks and join the running order; (prompt tokens, pairs)."""
        s = self._s
        bm = s.block_manager
        order = self._order
        running = s.running
        prefill_tokens = prefill_pairs = 0
        for req in admitted:
            rid = req.request_id
            target = req.num_tokens
            blocks = bm.grow(rid, target)
            assert blocks is not None, "the free blocks were counted"
            if blocks:
                kv_events.append(KVBlockEvent(rid, "allocate", "gpu", blocks))
            req.kv_capacity = bm.num_gpu_blocks_of(rid) * bm.block_size
            req.status = RequestStatus.RUNNING
            req.prefill_target = target
            if req.first_scheduled_time is None:
                req.first_scheduled_time = now
            order[rid] = self._order_key(req, step)
            bisect.insort(running, req, key=lambda r: order[r.request_id])
            prefill_tokens += target
            prefill_pairs += target * (target + 1) // 2
        return prefill_tokens, prefill_pairs

    def _finish_and_join(self, planned: BurstStep) -> None:
        """After the step's sampling: the requests whose last token it was finish, and the admitted
        ones take their first token and join the decodes (or finish at it)."""
        step, end = planned.step, planned.end
        token = self._token
        anchor = self._anchor
        done = self._finishes
        finished: list[Request] = []
        while done and done[0][0] == step:
            req = heapq.heappop(done)[2]
            k = step + 1 - anchor.pop(req.request_id)
            req.num_computed_tokens += k
            req.output_token_ids.extend([token] * k)
            self._sum_computed -= req.num_computed_tokens
            finished.append(req)
        if planned.admitted:
            first_tokens: list[str] = []
            joined: list[Request] = []
            for req in planned.admitted:
                req.num_computed_tokens = req.prefill_target
                req.output_token_ids.append(token)
                if req.first_token_time is None:
                    req.first_token_time = end
                    first_tokens.append(req.request_id)
                if req.num_tokens_to_stop <= 0:
                    finished.append(req)
                else:
                    self._join(req, step + 1)
                    self._sum_computed += req.num_computed_tokens
                    joined.append(req)
            planned.first_token_ids, planned.joined = first_tokens, joined
        if finished:
            s = self._s
            freed: list[KVBlockEvent] = []
            for req in finished:
                status = req.finish_status(token)
                assert status is not None, "the fast path finishes a request only where it stops"
                s.finish_request(req, status, end, freed)
                s.running.remove(req)
                self._order.pop(req.request_id, None)
            planned.finished, planned.freed = finished, freed
