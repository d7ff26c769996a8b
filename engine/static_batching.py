"""Static batching, as HF generate does it, as a mode of the Scheduler.

A batch of min(max_num_seqs, waiting) requests forms only when the previous one has fully
finished, whatever the token budget, as many as the pool can reserve every member's full length
for (so nothing is ever preempted). It prefills, prompts left-padded to its longest, under the
token budget over as many steps as that takes; then decodes in lockstep, each finished member
computing a pad row every step until the last member finishes, logits included, as HF generate
keeps decoding finished rows. Pad rows count against max_num_batched_tokens; the executor computes
them and the cost model charges them (prompt pads by padding_tokens, a finished member's logits
by padding_seqs).
"""

from __future__ import annotations

import bisect

from engine.outputs import KVBlockEvent, ScheduledRequest, SchedulerOutput
from engine.request import Request, RequestStatus
from engine.scheduler_state import SchedulerState
from engine.step_counts import StepCounts


class StaticBatcher:
    """The static half of a Scheduler: it works through the Scheduler's public members only."""

    def __init__(self, scheduler: SchedulerState) -> None:
        self._s = scheduler

    def schedule(self, kv_events: list[KVBlockEvent]) -> SchedulerOutput:
        s = self._s
        if not s.running:
            s.padding.clear()  # the previous batch is done: its slots are free again
            self._form_batch(kv_events)
        budget = s.scheduler_config.token_budget
        scheduled: list[ScheduledRequest] = []
        num_padding = 0
        num_padding_seqs = 0  # finished members decoding a pad row: in lockstep decode only
        prefilling = [r for r in s.running if r.num_computed_tokens < r.prefill_target]
        if prefilling:
            chunked = s.scheduler_config.enable_chunked_prefill
            now = s.now()
            for req in prefilling:
                if budget <= 0:
                    break
                pad = req.pad_tokens_left
                remaining = req.prefill_target - req.num_computed_tokens
                if not chunked and pad + remaining > budget:
                    continue  # the whole padded prompt goes in one step; another member may fit
                take_pad = min(pad, budget)
                num_new = min(remaining, budget - take_pad)
                req.pad_tokens_left -= take_pad
                num_padding += take_pad
                budget -= take_pad + num_new
                if req.first_scheduled_time is None:
                    req.first_scheduled_time = now
                if num_new:
                    scheduled.append(s.make_scheduled(req, num_new))
        else:  # lockstep decode: every live member one token, every finished one a pad row
            num_padding = num_padding_seqs = len(s.padding)
            scheduled = [s.make_scheduled(req, 1) for req in s.running]
        counts = StepCounts(num_padding_seqs=num_padding_seqs, num_padding_tokens=num_padding)
        for entry in scheduled:
            n = entry.num_tokens
            counts.num_batched_tokens += n
            if entry.is_prefill:
                counts.num_prefill_seqs += 1
                counts.num_prefill_tokens += n
                counts.num_prefill_pairs += n * entry.start_pos + n * (n + 1) // 2
            else:
                counts.num_decode_seqs += 1
                counts.num_context_tokens += entry.start_pos + 1
        return s.output(scheduled, counts, kv_events, padding_req_ids=tuple(s.padding))

    def _form_batch(self, kv_events: list[KVBlockEvent]) -> None:
        """Up to max_num_seqs waiting requests in policy order, as many as the pool can reserve
        every member's full length for (prompt + max_tokens, capped by max_model_len)."""
        s = self._s
        bm = s.block_manager
        members: list[Request] = []
        while s.waiting and len(members) < s.scheduler_config.max_num_seqs:
            req = s.waiting.peek()
            new_blocks = bm.grow(req.request_id, req.max_total_tokens - 1)  # the last token needs no slot
            if new_blocks is None:
                break
            s.waiting.pop()
            if new_blocks:
                kv_events.append(KVBlockEvent(req.request_id, "allocate", "gpu", new_blocks))
            req.kv_capacity = bm.num_gpu_blocks_of(req.request_id) * bm.block_size
            req.status = RequestStatus.RUNNING
            req.prefill_target = req.num_tokens
            bisect.insort(s.running, req, key=s.policy_key)
            members.append(req)
        longest = max((r.prefill_target for r in members), default=0)
        for req in members:
            req.pad_tokens_left = longest - req.prefill_target
