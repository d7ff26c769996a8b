"""The Scheduler's state and bookkeeping: its queues, the block manager, requests coming and going,
and the public members its helpers (static batching, the decode burst) work through. The
decisions (what each step computes) are the Scheduler's, in engine/scheduler.py."""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.block_manager import BlockManager
from engine.config import CacheConfig, SchedulerConfig
from engine.delay_clock import DelayClock
from engine.outputs import KVBlockEvent, RejectedRequest, ScheduledRequest, SchedulerOutput
from engine.policy import RequestQueue, policy_key
from engine.request import Request, RequestStatus
from engine.step_counts import StepCounts


class SchedulerState:
    def __init__(
        self,
        scheduler_config: SchedulerConfig,
        cache_config: CacheConfig,
        clock: Callable[[], float] = time.monotonic,
        include_token_ids: bool = True,
    ) -> None:
        """include_token_ids=False leaves token and block ids out of ScheduledRequest, for
        executors that only need counts (the simulator): it saves copying them every step."""
        self.scheduler_config = scheduler_config
        self._include_ids = include_token_ids
        self.cache_config = cache_config
        self.block_manager = BlockManager(cache_config.pool_blocks, cache_config.swap_space, cache_config.block_size)
        self._clock = clock
        self.policy_key = policy_key(scheduler_config.policy)  # running order; victims come from the end
        self._resort_running = scheduler_config.policy in ("sjf", "sjf-oracle")  # keys change as tokens come
        self._static = scheduler_config.batching == "static"
        self._swap = scheduler_config.preemption_mode == "swap"
        self._chunked = scheduler_config.enable_chunked_prefill
        self._pool_tokens = cache_config.pool_blocks * cache_config.block_size
        self.waiting = RequestQueue(self.policy_key)  # new and recompute-preempted requests
        self.swapped = RequestQueue(self.policy_key)  # KV in the CPU pool
        self.running: list[Request] = []  # sorted by policy key; victims come from the end
        self.requests: dict[str, Request] = {}  # every unfinished request by id
        self.padding: list[str] = []  # static batching: finished members of the current batch
        self._step = 0
        self._next_seq_no = 0
        self._pending_rejected: list[RejectedRequest] = []
        self._pending_finished: list[str] = []
        self._pending_kv_events: list[KVBlockEvent] = []
        self._delay = DelayClock(scheduler_config.scheduler_delay_factor, clock)

    # -- what the Scheduler's helpers (static batching, the decode burst) work through ------------
    @property
    def step_index(self) -> int:
        """The index the next step will have."""
        return self._step

    def now(self) -> float:
        return self._clock()

    @property
    def is_static(self) -> bool:
        return self._static

    @property
    def delay_enabled(self) -> bool:
        return self._delay.enabled

    @property
    def has_pending(self) -> bool:
        """Whether take_pending() would return anything."""
        return bool(self._pending_kv_events or self._pending_finished or self._pending_rejected)

    def take_pending(self) -> tuple[list[KVBlockEvent], tuple[str, ...], tuple[RejectedRequest, ...]]:
        """Block events, finished and rejected ids since the last step (the next output reports them)."""
        kv, self._pending_kv_events = self._pending_kv_events, []
        finished, self._pending_finished = tuple(self._pending_finished), []
        rejected, self._pending_rejected = tuple(self._pending_rejected), []
        return kv, finished, rejected

    def output(self, scheduled: list[ScheduledRequest], counts: StepCounts, kv_events: list[KVBlockEvent], *,
               preempted: tuple[str, ...] = (), swapped_out: tuple[str, ...] = (), swapped_in: tuple[str, ...] = (),
               swap_out_pairs: tuple[tuple[int, int], ...] = (), swap_in_pairs: tuple[tuple[int, int], ...] = (),
               padding_req_ids: tuple[str, ...] = ()) -> SchedulerOutput:
        """This step's SchedulerOutput: the queue and pool counters filled in, the pending finished
        and rejected ids reported; the step counts as one when it computes anything."""
        bm = self.block_manager
        counts.num_waiting, counts.num_running = len(self.waiting), len(self.running)
        counts.num_swapped = len(self.swapped)
        counts.num_used_gpu_blocks, counts.num_gpu_blocks = bm.num_used_gpu_blocks, bm.num_gpu_blocks
        counts.num_used_cpu_blocks = bm.num_used_cpu_blocks
        rejected, self._pending_rejected = tuple(self._pending_rejected), []
        finished, self._pending_finished = tuple(self._pending_finished), []
        out = SchedulerOutput(step=self._step, scheduled=tuple(scheduled), counts=counts,
                              preempted_req_ids=preempted, swapped_out_req_ids=swapped_out,
                              swapped_in_req_ids=swapped_in, rejected=rejected, finished_req_ids=finished,
                              blocks_to_swap_out=swap_out_pairs, blocks_to_swap_in=swap_in_pairs,
                              kv_events=tuple(kv_events), padding_req_ids=padding_req_ids)
        if scheduled or counts.num_padding_tokens:
            self._step += 1  # an empty schedule is not a step
        return out

    def advance_step(self, num_steps: int = 1) -> None:
        """Steps taken by the decode burst."""
        self._step += num_steps

    # -- requests in and out ------------------------------------------------------------------
    def add_request(self, req: Request, reject_reason: str | None = None) -> None:
        """Queue a request, or reject it now (reported in the next SchedulerOutput).

        reject_reason: a reason found by the caller (the engine checks token ids against the
        model's vocabulary, which the scheduler does not know)."""
        if req.request_id in self.requests:
            raise ValueError(f"request id {req.request_id!r} is already in the scheduler")
        req.seq_no = self._next_seq_no
        self._next_seq_no += 1
        reason = reject_reason or self._reject_reason(req)
        if reason is not None:
            req.status = RequestStatus.FINISHED_REJECTED
            req.reject_reason = reason
            req.finish_time = self._clock()
            self._pending_rejected.append(RejectedRequest(req.request_id, reason))
            return
        # The last sampled token needs no KV slot, so a lone request can reach pool + 1 tokens.
        req.max_total_tokens = min(
            req.num_prompt_tokens + req.sampling_params.max_tokens,
            self.scheduler_config.max_model_len,
            self._pool_tokens + 1,
        )
        req.status = RequestStatus.WAITING
        self.requests[req.request_id] = req
        self.waiting.add(req)

    def abort_request(self, request_id: str, status: RequestStatus = RequestStatus.FINISHED_ABORTED) -> bool:
        """Finish a request now wherever it is and free its blocks; False if unknown or done.

        status: FINISHED_STOPPED for a stop the engine cannot see in token ids (a server's stop
        string, complete only once detokenized)."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return False
        bm = self.block_manager
        if req.status == RequestStatus.RUNNING:
            self.running.remove(req)
            self._add_event(self._pending_kv_events, request_id, "free", "gpu", bm.free(request_id))
            if self._static:  # a member of the batch: it holds its slot as padding, as a finished one does
                self.padding.append(request_id)
        elif req.status == RequestStatus.SWAPPED:
            self.swapped.remove(req)
            self._add_event(self._pending_kv_events, request_id, "free", "cpu", bm.free_cpu(request_id))
        else:
            self.waiting.remove(req)
        req.status = status
        req.finish_time = self._clock()
        self._pending_finished.append(request_id)
        return True

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def get_num_unfinished_requests(self) -> int:
        return len(self.requests)

    def _reject_reason(self, req: Request) -> str | None:
        n = req.num_prompt_tokens
        max_len = self.scheduler_config.max_model_len
        if n == 0:
            return "the prompt is empty"
        if n >= max_len:
            return f"the prompt has {n} tokens, leaving no room for output under max_model_len={max_len}"
        need = self.block_manager.blocks_needed(n)
        pool = self.block_manager.num_gpu_blocks
        if need > pool:
            return (
                f"the prompt needs {need} KV blocks of {self.cache_config.block_size} tokens but the whole "
                f"pool has {pool}; raise num_gpu_blocks"
            )
        return None

    def make_scheduled(self, req: Request, num_new: int) -> ScheduledRequest:
        """req's share of this step: num_new tokens from its computed ones on."""
        start = req.num_computed_tokens
        end = start + num_new
        do_sample = end == req.num_prompt_tokens + len(req.output_token_ids)
        if not self._include_ids:  # the simulator: no tokens are sampled, so none is held off
            return ScheduledRequest(req.request_id, num_new, start, start < req.prefill_target, do_sample,
                                    req.sampling_params)
        return ScheduledRequest(req.request_id, num_new, start, start < req.prefill_target, do_sample,
                                req.sampling_params, req.token_ids(start, end),
                                tuple(self.block_manager.block_table(req.request_id)),
                                req.held_off_token_ids() if do_sample else ())

    def finish_request(self, req: Request, status: RequestStatus, now: float, kv_events: list[KVBlockEvent]) -> None:
        """req stopped (by length, EOS, a stop token): free its blocks (events into kv_events), report it
        in the next output; under static batching it holds its slot as padding until the batch ends.
        The caller takes it out of `running`."""
        req.status = status
        req.finish_time = now
        rid = req.request_id
        self._add_event(kv_events, rid, "free", "gpu", self.block_manager.free(rid))
        del self.requests[rid]
        self._pending_finished.append(rid)
        if self._static:
            self.padding.append(rid)

    @staticmethod
    def _add_event(
        events: list[KVBlockEvent], request_id: str, kind: str, device: str, blocks: tuple[int, ...]
    ) -> None:
        if blocks:
            events.append(KVBlockEvent(request_id, kind, device, blocks))  # type: ignore[arg-type]
