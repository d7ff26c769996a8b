"""Plain data passed between scheduler, executor and engine loop: ids, ints and tuples only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from engine.sampling_params import SamplingParams
from engine.step_counts import StepCounts
from engine.token_logprobs import TokenLogprobs

KVEventKind = Literal["allocate", "free", "swap_out", "swap_in"]
Device = Literal["gpu", "cpu"]


class ScheduledRequest(NamedTuple):
    """One request's share of a step."""

    request_id: str
    num_tokens: int  # tokens computed this step: a prefill chunk, or 1 for a decode
    start_pos: int  # position of the first of them (= tokens already in the KV cache)
    is_prefill: bool  # prompt (or recompute) tokens rather than one decode token
    do_sample: bool  # this chunk reaches the last known token, so a new token is sampled
    sampling_params: SamplingParams
    token_ids: tuple[int, ...] = ()  # the num_tokens token ids; empty for executors that need none
    block_ids: tuple[int, ...] = ()  # the whole GPU block table; empty for executors that need none
    held_off_token_ids: tuple[int, ...] = ()  # the sampler must not draw these (EOS, stop tokens before min_tokens)


class KVBlockEvent(NamedTuple):
    """Blocks that changed owner: taken by (allocate, swap_in on gpu, swap_out on cpu) or released."""

    request_id: str
    kind: KVEventKind
    device: Device
    block_ids: tuple[int, ...]


class RejectedRequest(NamedTuple):
    request_id: str
    reason: str  # a sentence a user can act on


@dataclass(slots=True)
class SchedulerOutput:
    """What one step computes, decided by Scheduler.schedule()."""

    step: int  # 0-based index of this engine step
    scheduled: tuple[ScheduledRequest, ...]  # running requests first, then newly admitted ones
    # The step's counters, summed while scheduling. counts.num_padding_tokens is also an order to the
    # executor: static batching's pad rows to compute (left-padding to the batch's longest prompt, one
    # row per finished member still holding a slot), counted against max_num_batched_tokens; they
    # belong to no request, and the real executor writes their K/V into a scratch block.
    counts: StepCounts = field(default_factory=StepCounts)
    preempted_req_ids: tuple[str, ...] = ()  # preempted by recompute this step (KV freed)
    swapped_out_req_ids: tuple[str, ...] = ()  # preempted by swap this step (KV to CPU)
    swapped_in_req_ids: tuple[str, ...] = ()  # back from the CPU pool this step
    rejected: tuple[RejectedRequest, ...] = ()  # refused since the last step
    finished_req_ids: tuple[str, ...] = ()  # finished or aborted since the last step (executor drops state)
    blocks_to_swap_out: tuple[tuple[int, int], ...] = ()  # (gpu block, cpu block) copies before the pass
    blocks_to_swap_in: tuple[tuple[int, int], ...] = ()  # (cpu block, gpu block) copies before the pass
    kv_events: tuple[KVBlockEvent, ...] = ()  # block ownership changes made by this schedule() call
    padding_req_ids: tuple[str, ...] = ()  # static batching: finished members still holding a slot

    @property
    def total_num_scheduled_tokens(self) -> int:
        """vLLM's name: tokens of the scheduled requests (pad rows not included)."""
        return self.counts.num_batched_tokens

    @property
    def num_scheduled_tokens(self) -> dict[str, int]:
        """vLLM's view: scheduled token count per request id."""
        return {s.request_id: s.num_tokens for s in self.scheduled}

    @property
    def is_empty(self) -> bool:
        """Nothing to compute: no request's tokens and no pad rows (an empty schedule is not a step)."""
        return not self.scheduled and not self.counts.num_padding_tokens


@dataclass(slots=True)
class ModelRunnerOutput:
    """What the executor returns for one SchedulerOutput."""

    sampled_token_ids: dict[str, int]  # one new token per request whose chunk had do_sample
    model_time_s: float = 0.0  # seconds the step took on the device (measured, or predicted by a cost model)
    num_flops: float = 0.0  # useful model FLOPs of this step (no padding); 0 when not counted
    num_padding_flops: float = 0.0  # FLOPs spent on padding: static pad rows and attention bucket padding
    compute_utilization: float | None = None  # useful FLOP/s over the device's measured peak (not clamped)
    timings: dict[str, float] = field(default_factory=dict)  # breakdown of model_time_s by part, seconds
    logprobs: dict[str, TokenLogprobs] = field(default_factory=dict)  # for requests whose params ask for them


class FinishedRequest(NamedTuple):
    request_id: str
    finish_reason: str  # stopped | length


@dataclass(slots=True)
class SchedulerUpdate:
    """What update_from_output changed (the tokens themselves are on the requests)."""

    num_sampled_tokens: int = 0  # requests that received a token this step
    first_token_req_ids: tuple[str, ...] = ()  # requests whose first token this was
    finished: tuple[FinishedRequest, ...] = ()
    kv_events: tuple[KVBlockEvent, ...] = ()  # blocks freed by the finishes
