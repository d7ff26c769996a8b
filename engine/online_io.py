"""What goes in and out of the online engine loop (engine.online): requests, per-step outputs, the
sinks they go to, recorded runs and metrics reports. Plain data and protocols."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.metrics import RunSummary
from engine.sampling_params import SamplingParams
from engine.snapshot import StepRecorder
from engine.token_logprobs import TokenLogprobs


class NotAcceptingError(RuntimeError):
    """The loop is draining, stopped or failed: it takes no new requests."""


class QueueFullError(NotAcceptingError):
    """More requests are waiting than the caller allows (submit's max_waiting)."""


@dataclass
class OnlineRequest:
    request_id: str
    prompt_token_ids: Sequence[int]
    sampling_params: SamplingParams  # what the client asked for, min_tokens included
    priority: int = 0
    received_at: float | None = None  # time.perf_counter() when the server received it; None: at submit()


@dataclass(frozen=True, slots=True)
class RequestOutput:
    """What one step did for one request (or how it ended without a step)."""

    request_id: str
    new_token_ids: tuple[int, ...]
    num_output_tokens: int  # output tokens so far, these included
    finish_reason: str | None = None  # None while it runs; else stopped | length | aborted | error
    error: str | None = None  # with finish_reason "error": what failed
    new_logprobs: tuple[TokenLogprobs, ...] = ()  # one per new token when its params ask for logprobs


class OutputSink(Protocol):
    """Where one request's results go. Called on the engine thread: must return at once."""

    def admitted(self, run_id: int | None, reject_reason: str | None) -> None:
        """The engine took the request into run `run_id`, or refused it (reject_reason)."""

    def output(self, out: RequestOutput) -> bool:
        """New tokens, or the end. True asks the loop to stop the request now, as finished by a
        stop condition the sink checks (a stop string); False otherwise."""
        ...


class RunRecording(Protocol):
    """One recorded run, opened by the application (the loop knows no storage)."""

    @property
    def run_id(self) -> int | None: ...

    @property
    def recorder(self) -> StepRecorder: ...

    def flush(self) -> None:
        """Write what is buffered (the loop went idle: readers should see every step)."""

    def finish(self, status: str, summary: RunSummary, error: str | None) -> None: ...


RecordingFactory = Callable[[int], RunRecording | None]  # segment index -> a new run (None: not recorded)


@dataclass(frozen=True)
class Rotation:
    """Start a new recorded run after this many steps or seconds (whichever is set and comes first)."""

    every_steps: int | None = None
    every_seconds: float | None = None


@dataclass(frozen=True)
class FinishedStats:
    """A finished request's latencies, in seconds (for metrics; the recording has its own)."""

    request_id: str
    finish_reason: str  # stopped | length | aborted | error
    prompt_len: int
    output_len: int
    max_tokens: int
    num_preemptions: int
    e2e: float
    queue: float | None  # arrival to first scheduled
    prefill: float | None  # first scheduled to first token
    decode: float | None  # first token to finish
    inference: float | None  # first scheduled to finish


@dataclass(frozen=True)
class StepReport:
    """What happened in one step (stepped) or the state at going idle, for metrics."""

    stepped: bool
    num_running: int
    num_waiting: int  # the engine's waiting queue plus requests handed in but not yet admitted
    num_swapped: int
    gpu_cache_usage: float  # 0..1
    cpu_cache_usage: float  # 0..1 (0 without a swap pool)
    num_batched_tokens: int = 0
    num_preemptions: int = 0
    prompt_tokens: int = 0  # prompt lengths of the requests whose first token came this step (vLLM's count)
    generation_tokens: int = 0
    time_to_first_tokens: tuple[float, ...] = ()
    inter_token_latencies: tuple[float, ...] = ()
    finished: tuple[FinishedStats, ...] = ()


StepObserver = Callable[[StepReport], None]
