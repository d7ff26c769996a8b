"""The continuous-batching scheduler shared by real runs and simulations (no torch here).

Each step: running requests first (a decode token, or the next prefill chunk), then swapped
requests, then waiting ones, while sequences <= max_num_seqs and tokens <=
max_num_batched_tokens. Every request's computed tokens catch up to its total tokens under one
token budget, so chunked prefill, decodes and recompute share one code path. Static batching is
a mode of the same scheduler (engine/static_batching.py), the delay factor is V0's clock
(engine/delay_clock.py), and the simulator's fast path is the Scheduler's own decode burst
(engine/decode_burst.py): each a helper the Scheduler owns, working through its public members.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable

from engine.config import CacheConfig, SchedulerConfig
from engine.decode_burst import DecodeBurst
from engine.outputs import (
    FinishedRequest,
    KVBlockEvent,
    ModelRunnerOutput,
    ScheduledRequest,
    SchedulerOutput,
    SchedulerUpdate,
)
from engine.request import Request, RequestStatus
from engine.scheduler_state import SchedulerState
from engine.static_batching import StaticBatcher
from engine.step_counts import StepCounts


class Scheduler(SchedulerState):
    """The decisions: each step's work under the caps and the pool, and how a step's results advance
    the requests. Its state and bookkeeping are SchedulerState's."""

    def __init__(self, scheduler_config: SchedulerConfig, cache_config: CacheConfig,
                 clock: Callable[[], float] = time.monotonic, include_token_ids: bool = True) -> None:
        super().__init__(scheduler_config, cache_config, clock, include_token_ids)
        self._static_batcher = StaticBatcher(self) if self._static else None
        self._burst: DecodeBurst | None = None
        self._burst_token = 0

    # -- the simulator's fast path (engine/decode_burst.py) --------------------------------------
    def begin_burst(self, token: int) -> DecodeBurst | None:
        """Enter a decode burst where every request samples `token`: the burst, whose schedule() and
        update() take its steps (until one returns None) and leave() ends it; None if the next step
        is not simple (then nothing changed)."""
        if self._burst is None or self._burst_token != token:
            self._burst, self._burst_token = DecodeBurst(self, token), token
        return self._burst if self._burst.enter() else None

    # -- one step -----------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        """Decide this step's work; changes queues and block tables, never request tokens."""
        cfg = self.scheduler_config
        budget = cfg.token_budget
        scheduled: list[ScheduledRequest] = []
        kv_events, self._pending_kv_events = self._pending_kv_events, []
        preempted: list[str] = []
        swapped_out: list[str] = []
        swapped_in: list[str] = []
        swap_out_pairs: list[tuple[int, int]] = []
        swap_in_pairs: list[tuple[int, int]] = []

        if self._resort_running:
            self.running.sort(key=self.policy_key)
        if self._static_batcher is not None:
            return self._static_batcher.schedule(kv_events)
        ticked = not self.swapped
        if ticked:
            self._delay.tick()  # before the running pass, as V0 ticks it before its prompts

        # 1. Running requests: a decode token, or the next prefill chunk.
        budget, decode_seqs, context_tokens, prefill_seqs, prefill_tokens, prefill_pairs = self._schedule_running(
            budget, scheduled, kv_events, preempted, swapped_out, swap_out_pairs)
        num_from_running = len(scheduled)

        if not preempted and not swapped_out:
            # 2. Swapped requests come back before anything new is admitted.
            budget = self._swap_in(budget, scheduled, kv_events, swapped_in, swap_in_pairs)
            # 3. Waiting requests, in policy order, stopping at the first that does not fit. The
            # delay clock ticks on every schedule call without swapped requests, as in vLLM V0.
            if not self.swapped:
                if not ticked:  # the swapped requests came back this step: prompts are considered now
                    self._delay.tick()
                if self.waiting:
                    budget = self._admit(budget, scheduled, kv_events)

        for s in scheduled[num_from_running:]:  # what swap-in and admission added
            if s.is_prefill:
                n = s.num_tokens
                prefill_seqs += 1
                prefill_tokens += n
                prefill_pairs += n * s.start_pos + n * (n + 1) // 2
            else:
                decode_seqs += 1
                context_tokens += s.start_pos + 1
        counts = StepCounts(
            num_prefill_seqs=prefill_seqs, num_prefill_tokens=prefill_tokens, num_decode_seqs=decode_seqs,
            num_batched_tokens=cfg.token_budget - budget, num_context_tokens=context_tokens,
            num_prefill_pairs=prefill_pairs, num_swap_blocks=len(swap_in_pairs) + len(swap_out_pairs),
            num_preemptions=len(preempted) + len(swapped_out),
        )
        return self.output(scheduled, counts, kv_events, preempted=tuple(preempted), swapped_out=tuple(swapped_out),
                           swapped_in=tuple(swapped_in), swap_out_pairs=tuple(swap_out_pairs),
                           swap_in_pairs=tuple(swap_in_pairs))

    def _schedule_running(
        self,
        budget: int,
        scheduled: list[ScheduledRequest],
        kv_events: list[KVBlockEvent],
        preempted: list[str],
        swapped_out: list[str],
        swap_out_pairs: list[tuple[int, int]],
    ) -> tuple[int, int, int, int, int, int]:
        """The running pass, in policy order: each request's decode token or next prefill chunk, a
        block taken where it crosses into one, the policy's last preempted while none is free.
        Returns the budget left and the step's decode seqs, context tokens, prefill seqs, prefill
        tokens and prefill pairs so far (kept in locals: this loop runs once per request per step)."""
        bm = self.block_manager
        running = self.running
        block_size = bm.block_size
        include_ids = self._include_ids
        decode_seqs = context_tokens = prefill_seqs = prefill_tokens = prefill_pairs = 0
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            computed = req.num_computed_tokens
            num_new = req.num_prompt_tokens + len(req.output_token_ids) - computed
            if num_new > budget:
                num_new = budget
            if computed + num_new > req.kv_capacity:  # crosses into a block it does not hold yet
                new_blocks = bm.grow(req.request_id, computed + num_new)
                while new_blocks is None:
                    victim = running[-1]  # the policy's last: fcfs' latest arrival, lowest priority
                    self._preempt(victim, kv_events, preempted, swapped_out, swap_out_pairs)
                    if victim is req:
                        break
                    new_blocks = bm.grow(req.request_id, computed + num_new)
                if new_blocks is None:
                    break  # req preempted itself; it was the last running request
                if new_blocks:
                    kv_events.append(KVBlockEvent(req.request_id, "allocate", "gpu", new_blocks))
                req.kv_capacity = bm.num_gpu_blocks_of(req.request_id) * block_size
            if computed >= req.prefill_target:
                decode_seqs += 1
                context_tokens += computed + 1
                if include_ids:
                    scheduled.append(self.make_scheduled(req, 1))
                else:  # the simulator's hot path: a decode always samples
                    scheduled.append(ScheduledRequest(req.request_id, 1, computed, False, True, req.sampling_params))
            else:
                prefill_seqs += 1
                prefill_tokens += num_new
                prefill_pairs += num_new * computed + num_new * (num_new + 1) // 2
                scheduled.append(self.make_scheduled(req, num_new))
            budget -= num_new
            i += 1
        return budget, decode_seqs, context_tokens, prefill_seqs, prefill_tokens, prefill_pairs

    def _swap_in(
        self,
        budget: int,
        scheduled: list[ScheduledRequest],
        kv_events: list[KVBlockEvent],
        swapped_in: list[str],
        swap_in_pairs: list[tuple[int, int]],
    ) -> int:
        bm = self.block_manager
        while self.swapped and len(self.running) < self.scheduler_config.max_num_seqs and budget > 0:
            req = self.swapped.peek()
            num_new = min(req.num_tokens - req.num_computed_tokens, budget)
            if not bm.can_swap_in(req.request_id, req.num_computed_tokens + num_new):
                break
            self.swapped.pop()
            pairs = bm.swap_in(req.request_id)
            assert pairs is not None  # can_swap_in said there is room
            swap_in_pairs.extend(pairs)
            kv_events.append(KVBlockEvent(req.request_id, "swap_in", "cpu", tuple(c for c, _ in pairs)))
            kv_events.append(KVBlockEvent(req.request_id, "swap_in", "gpu", tuple(g for _, g in pairs)))
            new_blocks = bm.grow(req.request_id, req.num_computed_tokens + num_new)
            assert new_blocks is not None
            if new_blocks:
                kv_events.append(KVBlockEvent(req.request_id, "allocate", "gpu", new_blocks))
            req.kv_capacity = bm.num_gpu_blocks_of(req.request_id) * bm.block_size
            req.status = RequestStatus.RUNNING
            bisect.insort(self.running, req, key=self.policy_key)
            swapped_in.append(req.request_id)
            scheduled.append(self.make_scheduled(req, num_new))
            budget -= num_new
        return budget

    def _admit(self, budget: int, scheduled: list[ScheduledRequest], kv_events: list[KVBlockEvent]) -> int:
        bm = self.block_manager
        max_num_seqs = self.scheduler_config.max_num_seqs
        any_prefill = False
        delayed = self._delay.enabled
        had_running = bool(self.running)  # V0 compares with the queue as it was before this step
        while self.waiting and len(self.running) < max_num_seqs and budget > 0:
            if delayed and not self._delay.passed(self.waiting.earliest_arrival(), had_running):
                break
            req = self.waiting.peek()
            target = req.num_tokens  # the prompt, or prompt + output when recomputing
            if not self._chunked and target > budget:
                break  # strict order: nothing behind it jumps ahead
            new_blocks = bm.grow(req.request_id, target)  # the whole prompt must fit (vLLM's default)
            if new_blocks is None:
                break
            self.waiting.pop()
            if new_blocks:
                kv_events.append(KVBlockEvent(req.request_id, "allocate", "gpu", new_blocks))
            num_new = min(target, budget)
            req.kv_capacity = bm.num_gpu_blocks_of(req.request_id) * bm.block_size
            req.status = RequestStatus.RUNNING
            req.prefill_target = target
            if req.first_scheduled_time is None:
                req.first_scheduled_time = self._clock()
            bisect.insort(self.running, req, key=self.policy_key)
            scheduled.append(self.make_scheduled(req, num_new))
            budget -= num_new
            any_prefill = True
        self._delay.admitted(any_prefill)
        return budget

    def _preempt(
        self,
        req: Request,
        kv_events: list[KVBlockEvent],
        preempted: list[str],
        swapped_out: list[str],
        swap_out_pairs: list[tuple[int, int]],
    ) -> None:
        self.running.remove(req)
        req.num_preemptions += 1
        req.kv_capacity = 0
        rid = req.request_id
        pairs = self.block_manager.swap_out(rid) if self._swap else None
        if pairs is not None:
            swap_out_pairs.extend(pairs)
            kv_events.append(KVBlockEvent(rid, "swap_out", "gpu", tuple(g for g, _ in pairs)))
            kv_events.append(KVBlockEvent(rid, "swap_out", "cpu", tuple(c for _, c in pairs)))
            req.status = RequestStatus.SWAPPED
            self.swapped.add(req)
            swapped_out.append(rid)
            return
        # Recompute (or swap with a full CPU pool, as vLLM falls back): drop the KV, start over.
        self._add_event(kv_events, rid, "free", "gpu", self.block_manager.free(rid))
        req.num_computed_tokens = 0
        req.status = RequestStatus.PREEMPTED
        self.waiting.add(req)
        preempted.append(rid)

    # -- after the executor ran ---------------------------------------------------------------
    def update_from_output(self, out: SchedulerOutput, result: ModelRunnerOutput) -> SchedulerUpdate:
        """Advance computed tokens, append sampled tokens, finish requests that stop."""
        now = self._clock()
        sampled = result.sampled_token_ids
        logprobs = result.logprobs
        requests = self.requests
        running_status = RequestStatus.RUNNING
        first_tokens: list[str] = []
        finished: list[FinishedRequest] = []
        kv_events: list[KVBlockEvent] = []
        num_sampled = 0
        for s in out.scheduled:
            req = requests.get(s.request_id)
            if req is None or req.status != running_status:
                continue  # aborted between schedule() and now
            req.num_computed_tokens += s.num_tokens
            if not s.do_sample:
                continue
            try:
                token = sampled[s.request_id]
            except KeyError:
                raise RuntimeError(f"executor returned no token for {s.request_id!r}, which had do_sample") from None
            output = req.output_token_ids
            output.append(token)
            if logprobs and s.request_id in logprobs:
                req.output_logprobs.append(logprobs[s.request_id])
            num_sampled += 1
            if req.first_token_time is None:
                req.first_token_time = now
                first_tokens.append(s.request_id)
            status = req.finish_status(token)
            if status is None:
                continue
            self.finish_request(req, status, now, kv_events)
            finished.append(FinishedRequest(s.request_id, status.finish_reason))  # type: ignore[arg-type]
        if finished:
            self.running = [r for r in self.running if r.status == running_status]
        return SchedulerUpdate(num_sampled_tokens=num_sampled, first_token_req_ids=tuple(first_tokens),
                               finished=tuple(finished), kv_events=tuple(kv_events))
