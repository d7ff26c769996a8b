"""The simulator's fast path, scheduler half: steps taken without visiting every running request.

While every running request is decoding, a step depends only on counts (how many decode, the
context they attend) and on a few events: a request crossing into a KV block it does not hold yet,
a request sampling its last token, an admission whose whole prompt fits in the step. The burst
keeps the running requests' token counts implicit (each exact as of its anchor step, plus one per
step since) and keeps crossings and finishes in heaps ordered by (step, running order), so a step
costs O(events) instead of O(running requests). It changes what Scheduler.schedule() and
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.outputs import KVBlockEvent
from engine.request import Request, RequestStatus
from engine.step_counts import StepCounts

if TYPE_CHECKING:
    from engine.scheduler import Scheduler

OrderKey = tuple[float, ...]


@dataclass(slots=True)
class BurstStep:
    """What one burst step schedules (plain data for the engine)."""

    step: int
    counts: StepCounts
    admitted: list[Request]  # whole prompts admitted this step (they sample their first token)
    kv_events: list[KVBlockEvent]  # block ownership changes of this step's schedule
    padding_req_ids: tuple[str, ...]  # static batching: finished members holding a slot


@dataclass(slots=True)
class BurstUpdate:
    """What the step changed once sampled: as update_from_output reports it."""

    finished: list[Request] = field(default_factory=list)
    first_token_ids: list[str] = field(default_factory=list)
    freed: list[KVBlockEvent] = field(default_factory=list)  # blocks the finishes freed
    joined: list[Request] = field(default_factory=list)  # admitted this step, decoding from the next


class DecodeBurst:
    """Owned by a Scheduler; valid between enter() and leave()."""

    def __init__(self, scheduler: Scheduler, token: int) -> None:
        self._s = scheduler
        self._token = token  # what every request samples in a burst (the simulator's token)
        policy = scheduler.scheduler_config.policy
        self._sjf = policy == "sjf"
        self._sjf_oracle = policy == "sjf-oracle"
        self._anchor: dict[str, int] = {}  # step from which a request's counts are implicit
        self._order: dict[str, OrderKey] = {}  # running order, constant while decoding (see _order_key)
        self._crossings: list[tuple[int, OrderKey, int, Request]] = []  # (step, order, last step, request)
        self._finishes: list[tuple[int, OrderKey, Request]] = []  # (step of its last token, order, request)
        self._sum_computed = 0  # computed tokens of the running requests at the current step's start
        self._admitted: list[Request] = []  # this step's admissions, between schedule() and update()

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
        step = s.step_index
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
            heapq.heappush(self._crossings, (crossing, order, last, req))

    def leave(self) -> None:
        """Write the implicit counts back into the Request objects."""
        step = self._s.step_index
        token = self._token
        anchor = self._anchor
        for req in self._s.running:
            k = step - anchor[req.request_id]
            if k:
                req.num_computed_tokens += k
                req.output_token_ids.extend([token] * k)
        anchor.clear()
        self._order.clear()
        self._crossings.clear()
        self._finishes.clear()
        self._sum_computed = 0

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

    def schedule(self, now: float, with_block_events: bool) -> BurstStep | None:
        """This step's schedule, as Scheduler.schedule() would make it; None if it is not simple
        (then nothing changed). with_block_events=False skips building the crossings' events
        (nothing would record them)."""
        s = self._s
        running = s.running
        n = len(running)
        if n == 0:
            return None
        step = s.step_index
        bm = s.block_manager
        cfg = s.scheduler_config
        heap = self._crossings
        crossing: list[tuple[int, OrderKey, int, Request]] = []
        while heap and heap[0][0] == step:
            crossing.append(heapq.heappop(heap))
        free = bm.num_free_gpu_blocks
        if len(crossing) > free:
            for entry in crossing:
                heapq.heappush(heap, entry)
            return None  # the scheduler preempts here
        admitted: list[Request] = []
        if s.waiting and not s.is_static and n < cfg.max_num_seqs:
            maybe = self._admissions(free - len(crossing), cfg.token_budget - n)
            if maybe is None:
                for entry in crossing:
                    heapq.heappush(heap, entry)
                return None
            admitted = maybe

        kv_events, _, _ = s.take_pending()  # an abort's frees are reported by the first step after it
        block_size = bm.block_size
        for _, entry_order, last, req in crossing:
            rid = req.request_id
            block = bm.append_block(rid)
            if with_block_events:
                kv_events.append(KVBlockEvent(rid, "allocate", "gpu", (block,)))
            req.kv_capacity += block_size
            if step + block_size <= last:
                heapq.heappush(heap, (step + block_size, entry_order, last, req))
        order = self._order
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
        padding = len(s.padding)  # static batching's pad rows: one per finished member
        counts = StepCounts(
            num_waiting=len(s.waiting), num_running=len(running), num_prefill_seqs=num_adm,
            num_prefill_tokens=prefill_tokens, num_decode_seqs=n, num_batched_tokens=n + prefill_tokens,
            num_padding_seqs=padding, num_padding_tokens=padding, num_context_tokens=self._sum_computed + n,
            num_prefill_pairs=prefill_pairs, num_used_gpu_blocks=bm.num_used_gpu_blocks,
            num_gpu_blocks=bm.num_gpu_blocks, num_used_cpu_blocks=bm.num_used_cpu_blocks,
        )
        self._admitted = admitted
        return BurstStep(step, counts, admitted, kv_events, tuple(s.padding))

    def update(self, step: int, num_decodes: int, end: float) -> BurstUpdate:
        """Every request sampled one token at `end`; some finish where they stop."""
        s = self._s
        token = self._token
        anchor = self._anchor
        update = BurstUpdate()
        self._sum_computed += num_decodes
        done = self._finishes
        while done and done[0][0] == step:
            req = heapq.heappop(done)[2]
            k = step + 1 - anchor.pop(req.request_id)
            req.num_computed_tokens += k
            req.output_token_ids.extend([token] * k)
            self._sum_computed -= req.num_computed_tokens
            update.finished.append(req)
        for req in self._admitted:
            req.num_computed_tokens = req.prefill_target
            req.output_token_ids.append(token)
            if req.first_token_time is None:
                req.first_token_time = end
                update.first_token_ids.append(req.request_id)
            if req.num_tokens_to_stop <= 0:
                update.finished.append(req)
            else:
                self._join(req, step + 1)
                self._sum_computed += req.num_computed_tokens
                update.joined.append(req)
        self._admitted = []
        for req in update.finished:
            status = req.finish_status(token)
            assert status is not None, "the fast path finishes a request only where it stops"
            s.finish_request(req, status, end, update.freed)
            s.running.remove(req)
            self._order.pop(req.request_id, None)
        s.advance_step()
        return update
