"""A request as the scheduler sees it: tokens so far, tokens computed, status, timings."""

from __future__ import annotations

import enum
from collections.abc import Sequence

from engine.sampling_params import SamplingParams
from engine.token_logprobs import TokenLogprobs


class RequestStatus(enum.IntEnum):
    """Ordered like vLLM V1's: every status from FINISHED_STOPPED on is final."""

    WAITING = 0
    RUNNING = 1
    SWAPPED = 2  # KV blocks in the CPU swap pool
    PREEMPTED = 3  # KV freed; waiting to be recomputed
    FINISHED_STOPPED = 4  # EOS or a stop token
    FINISHED_LENGTH = 5  # max_tokens, max_model_len or the KV pool's capacity
    FINISHED_ABORTED = 6
    FINISHED_REJECTED = 7  # never scheduled: too long for max_model_len or the pool

    @property
    def is_finished(self) -> bool:
        return self >= RequestStatus.FINISHED_STOPPED

    @property
    def finish_reason(self) -> str | None:
        """The recorded finish reason: stopped | length | aborted | rejected."""
        return _FINISH_REASONS.get(self)


_FINISH_REASONS = {
    RequestStatus.FINISHED_STOPPED: "stopped",
    RequestStatus.FINISHED_LENGTH: "length",
    RequestStatus.FINISHED_ABORTED: "aborted",
    RequestStatus.FINISHED_REJECTED: "rejected",
}


class Request:
    """Mutable scheduler state of one request; only the Scheduler changes it."""

    __slots__ = (
        "arrival_time",
        "eos_token_id",
        "finish_time",
        "first_scheduled_time",
        "first_token_time",
        "kv_capacity",
        "max_total_tokens",
        "num_computed_tokens",
        "num_preemptions",
        "num_prompt_tokens",
        "output_logprobs",
        "output_token_ids",
        "pad_tokens_left",
        "prefill_target",
        "priority",
        "prompt_token_ids",
        "reject_reason",
        "request_id",
        "sampling_params",
        "seq_no",
        "status",
        "true_output_len",
    )

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: Sequence[int],
        sampling_params: SamplingParams,
        arrival_time: float = 0.0,
        priority: int = 0,
        eos_token_id: int | None = None,
        true_output_len: int | None = None,
    ) -> None:
        """true_output_len: where this request really stops, when the workload knows it (a replay of
        a recorded run, a trace): it stops there as at the EOS the model produced. Only the
        sjf-oracle policy reads it; every other policy sees the declared max_tokens, as a real
        scheduler does."""
        self.request_id = request_id
        self.prompt_token_ids = prompt_token_ids
        self.sampling_params = sampling_params
        self.arrival_time = arrival_time
        self.priority = priority  # lower value runs first under the priority policy
        self.eos_token_id = eos_token_id
        self.true_output_len = true_output_len
        self.output_token_ids: list[int] = []
        self.output_logprobs: list[TokenLogprobs] = []  # one per output token when sampling_params.logprobs is set
        self.num_prompt_tokens = len(prompt_token_ids)
        self.num_computed_tokens = 0  # tokens whose KV is in the cache
        self.prefill_target = 0  # tokens to compute before decoding (prompt, or all on recompute)
        self.pad_tokens_left = 0  # static batching: left-padding still to compute before its prompt
        self.max_total_tokens = 0  # prompt + output cap, set by the scheduler on admission
        self.kv_capacity = 0  # token slots in the request's GPU blocks (the scheduler's cache of it)
        self.status = RequestStatus.WAITING
        self.num_preemptions = 0
        self.first_scheduled_time: float | None = None
        self.first_token_time: float | None = None
        self.finish_time: float | None = None
        self.reject_reason: str | None = None
        self.seq_no = 0  # order of arrival at the scheduler; breaks ties

    @property
    def num_tokens(self) -> int:
        """Prompt plus output tokens so far."""
        return self.num_prompt_tokens + len(self.output_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def remaining_output_tokens(self) -> int:
        """Output tokens the declared max_tokens still allows (what sjf orders by: all a real
        scheduler knows)."""
        return self.sampling_params.max_tokens - len(self.output_token_ids)

    @property
    def num_tokens_to_stop(self) -> int:
        """Tokens it will still sample before it stops by length or at its true output length (what
        sjf-oracle orders by, and how far the simulator's fast path can look ahead)."""
        left = self.num_tokens_left
        if self.true_output_len is not None:
            left = min(left, self.true_output_len - len(self.output_token_ids))
        return left

    @property
    def num_tokens_left(self) -> int:
        """Tokens it may still sample: max_tokens, or max_model_len / the pool (max_total_tokens);
        0 means it finished by length."""
        n_out = len(self.output_token_ids)
        return min(self.sampling_params.max_tokens - n_out, self.max_total_tokens - self.num_prompt_tokens - n_out)

    def held_off_token_ids(self) -> tuple[int, ...]:
        """Tokens its next sample must not be, as vLLM's min_tokens masks them: EOS (unless ignored)
        and its stop tokens while it has fewer than min_tokens outputs; () after."""
        params = self.sampling_params
        if len(self.output_token_ids) >= params.min_tokens:
            return ()
        eos = () if params.ignore_eos or self.eos_token_id is None else (self.eos_token_id,)
        return (*eos, *params.stop_token_ids)

    def stops_on(self, token: int) -> bool:
        """Whether sampling `token` ends it: EOS (unless ignored) or one of its stop tokens, once it has
        min_tokens outputs. A real executor's sampler never draws them before (held_off_token_ids);
        the simulator, which draws no tokens, keeps its placeholder tokens there as ordinary ones."""
        min_tokens = self.sampling_params.min_tokens
        if min_tokens and len(self.output_token_ids) <= min_tokens:
            return False
        return self.is_stop_token(token)

    def is_stop_token(self, token: int) -> bool:
        """EOS (unless ignored) or one of its stop tokens, whatever min_tokens says."""
        params = self.sampling_params
        return (token == self.eos_token_id and not params.ignore_eos) or token in params.stop_token_ids

    def finish_status(self, token: int) -> RequestStatus | None:
        """How the token just appended ends the request, if it does. vLLM's order: length caps
        (max_tokens, max_model_len, the pool) first, then EOS and stop tokens; reaching the true
        output length counts as the EOS the model produced there."""
        if self.num_tokens_left <= 0:
            return RequestStatus.FINISHED_LENGTH
        if self.true_output_len is not None and len(self.output_token_ids) >= self.true_output_len:
            return RequestStatus.FINISHED_STOPPED
        if self.stops_on(token):
            return RequestStatus.FINISHED_STOPPED
        return None

    @property
    def is_finished(self) -> bool:
        return self.status >= RequestStatus.FINISHED_STOPPED

    def token_ids(self, start: int, stop: int) -> tuple[int, ...]:
        """Tokens [start, stop) of prompt + output, copied (plain data for the executor)."""
        n_prompt = self.num_prompt_tokens
        if stop <= n_prompt:
            return tuple(self.prompt_token_ids[start:stop])
        if start >= n_prompt:
            return tuple(self.output_token_ids[start - n_prompt : stop - n_prompt])
        return tuple(self.prompt_token_ids[start:]) + tuple(self.output_token_ids[: stop - n_prompt])

    def __repr__(self) -> str:
        return (
            f"Request({self.request_id!r}, status={self.status.name}, prompt={self.num_prompt_tokens}, "
            f"output={len(self.output_token_ids)}, computed={self.num_computed_tokens})"
        )
