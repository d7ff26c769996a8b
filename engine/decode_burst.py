"""The simulator's fast path: many decode-only steps at once, exactly as if stepped one by one.

When every running request is decoding, nothing waiting or swapped can get in, no request can
finish before the last of the steps, and the blocks the decodes will need are free, the next k
steps are fully determined: each running request gains one token per step and takes a block
whenever it crosses a block boundary, in running order. plan() finds k; advance() applies k such
steps to the Scheduler's state in O(n + k) instead of O(n * k); a burst may end on the step that
samples some requests' last allowed token, and finish_at_length() then finishes them as
update_from_output() would. The engine loop turns all this into the same step records a
step-by-step run writes. A test runs randomized simulations both ways and compares every recorded
step.

This module is part of the Scheduler (it reads and changes its state directly) and never decides
anything the Scheduler would decide differently: when in doubt, plan() answers NO_BURST.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from engine.outputs import FinishedRequest, KVBlockEvent, SchedulerUpdate
from engine.request import Request, RequestStatus
from engine.scheduler import Scheduler

MIN_BURST = 1  # a burst may be a single step: it still skips building per-request records


@dataclass(frozen=True)
class DecodeBurst:
    first_step: int  # index of the burst's first step
    num_steps: int
    num_seqs: int  # running requests, all decoding every step
    base_context: int  # sum of their computed tokens before the burst; step j attends base + num_seqs * j
    allocations: tuple[tuple[KVBlockEvent, ...], ...]  # per step: ownership changes (frees of aborts first)
    used_blocks: tuple[int, ...]  # per step: GPU blocks in use after its allocations


def _blocks_to_take(requests: list[Request], steps: int, block_size: int) -> int:
    """Blocks the running decodes take over the next `steps` steps."""
    total = 0
    for req in requests:
        short = req.num_computed_tokens + steps - req.kv_capacity
        if short > 0:
            total += -(-short // block_size)
    return total


class BurstPlan(NamedTuple):
    steps: int  # how many upcoming steps are certain to be plain decodes of the running set (0: none)
    base_context: int  # the running requests' computed tokens before the burst
    last_step: int  # the step on which `finishing` sample their last allowed token
    finishing: tuple[Request, ...]  # in running order


NO_BURST = BurstPlan(0, 0, 0, ())


def plan(scheduler: Scheduler, token: int, max_steps: int) -> BurstPlan:
    """The longest burst the scheduler is certain of, and who finishes at its end if it runs that long."""
    s = scheduler
    running = s.running
    if not running or s.swapped or (s.scheduler_config.scheduler_delay_factor > 0 and s.waiting):
        return NO_BURST
    bm = s.block_manager
    cfg = s.scheduler_config
    n = len(running)
    if s.waiting and not s._static:  # static batching admits nothing while a batch runs
        head = s.waiting.peek()
        budget_left = cfg.token_budget - n
        blocked = (n >= cfg.max_num_seqs or budget_left <= 0
                   or (not cfg.enable_chunked_prefill and head.num_tokens > budget_left)
                   or not bm.can_allocate(head.num_tokens))  # free blocks only shrink during a burst
        if not blocked:
            return NO_BURST
    min_left = max_steps + 1
    finishing: list[Request] = []
    base_context = 0
    for req in running:
        params = req.sampling_params
        num_output = len(req.output_token_ids)
        computed = req.num_computed_tokens
        if computed != req.num_prompt_tokens + num_output - 1 or computed < req.prefill_target:
            return NO_BURST  # not decoding (a prefill chunk or a recompute is due)
        if (token == req.eos_token_id and not params.ignore_eos) or token in params.stop_token_ids:
            return NO_BURST  # the sampled token would end it
        base_context += computed
        # It finishes on the step that samples its last allowed token: the burst may end there.
        left = params.max_tokens - num_output
        room = req.max_total_tokens - req.num_prompt_tokens - num_output
        if room < left:
            left = room
        if left < min_left:
            min_left = left
            finishing = [req]
        elif left == min_left:
            finishing.append(req)
    steps = min(max_steps, min_left)
    free = bm.num_free_gpu_blocks
    if _blocks_to_take(running, steps, bm.block_size) > free:
        lo, hi = 0, steps  # the longest burst whose block growth fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _blocks_to_take(running, mid, bm.block_size) <= free:
                lo = mid
            else:
                hi = mid - 1
        steps = lo
    if steps < MIN_BURST:
        return NO_BURST
    return BurstPlan(steps, base_context, min_left, tuple(finishing))


def advance(scheduler: Scheduler, num_steps: int, token: int) -> DecodeBurst:
    """Apply num_steps decode steps (num_steps <= limit(...)) and say what they were."""
    s = scheduler
    bm = s.block_manager
    block_size = bm.block_size
    running = s.running
    # One pass: where each request crosses into a block it does not hold (a step-by-step run
    # allocates in (step, running order)), and its tokens and computed count after the burst.
    crossings: list[tuple[int, int, int]] = []  # (step, running index, computed before the burst)
    base_context = 0
    tokens = [token] * num_steps
    for index, req in enumerate(running):
        computed = req.num_computed_tokens
        step = req.kv_capacity - computed + 1  # first step whose token has no slot yet
        while step <= num_steps:
            crossings.append((max(step, 1), index, computed))
            step += block_size
        base_context += computed
        req.output_token_ids.extend(tokens)
        req.num_computed_tokens = computed + num_steps
    crossings.sort()
    allocations: list[list[KVBlockEvent]] = [[] for _ in range(num_steps)]
    # What schedule() would have reported on its first step (the executor of a simulation keeps no
    # per-request state, so finished and rejected ids only need clearing; aborts' frees are recorded).
    allocations[0].extend(s._pending_kv_events)
    s._pending_kv_events, s._pending_finished, s._pending_rejected = [], [], []
    used: list[int] = []
    used_now = bm.num_used_gpu_blocks
    cursor = 0
    for step in range(1, num_steps + 1):
        while cursor < len(crossings) and crossings[cursor][0] == step:
            _, index, computed = crossings[cursor]
            req = running[index]
            new_blocks = bm.grow(req.request_id, computed + step)
            assert new_blocks, "limit() promised these blocks were free"
            allocations[step - 1].append(KVBlockEvent(req.request_id, "allocate", "gpu", new_blocks))
            req.kv_capacity += block_size * len(new_blocks)
            used_now += len(new_blocks)
            cursor += 1
        used.append(used_now)
    first = s._step
    s._step += num_steps
    return DecodeBurst(first, num_steps, len(running), base_context,
                       tuple(tuple(a) for a in allocations), tuple(used))


def finish_at_length(scheduler: Scheduler, finishing: tuple[Request, ...], num_sampled: int,
                     now: float) -> SchedulerUpdate:
    """After a burst that ran to its plan's last_step: finish the requests that sampled their last
    allowed token on it, in running order, exactly as update_from_output() does for a step of
    num_sampled decodes."""
    s = scheduler
    kv_events: list[KVBlockEvent] = []
    reason = RequestStatus.FINISHED_LENGTH.finish_reason
    assert reason is not None
    for req in finishing:
        s._finish(req, RequestStatus.FINISHED_LENGTH, now, kv_events)
    s.running = [r for r in s.running if r.status == RequestStatus.RUNNING]
    return SchedulerUpdate(num_sampled_tokens=num_sampled, first_token_req_ids=(),
                           finished=tuple(FinishedRequest(r.request_id, reason) for r in finishing),
                           kv_events=tuple(kv_events))
