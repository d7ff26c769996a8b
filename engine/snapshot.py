"""What the engine hands to a recorder: plain data about one step, never live objects.

storage/ turns these into rows; the engine never imports storage. Times are seconds since the
run started.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from engine.outputs import KVBlockEvent
from engine.phases import PhaseChange
from engine.request import Request
from engine.step_counts import StepCounts


class RequestArrival(NamedTuple):
    request_id: str
    arrival_time: float
    prompt_len: int
    max_tokens: int
    priority: int


class RequestFinish(NamedTuple):
    request_id: str
    first_scheduled_time: float | None
    first_token_time: float | None
    finish_time: float
    finish_reason: str  # stopped | length | aborted | rejected
    output_len: int
    num_preemptions: int
    reject_reason: str | None  # why a rejected request was refused


class FirstToken(NamedTuple):
    request_id: str
    first_scheduled_time: float | None
    first_token_time: float


@dataclass(slots=True)
class StepSnapshot:
    step: int  # 0-based engine step
    start_time: float
    end_time: float
    counts: StepCounts  # queues, batch shape, padding, pool: what the scheduler summed for this step
    num_output_tokens: int  # tokens sampled this step (decodes + prefills that completed)
    model_time: float  # seconds the executor took (measured, or predicted by a cost model)
    model_flops: float | None = None  # real runs: useful FLOPs of the forward pass
    compute_utilization: float | None = None  # real runs: useful FLOP/s over the device's measured peak
    arrivals: tuple[RequestArrival, ...] = ()  # requests that arrived since the last step
    first_tokens: tuple[FirstToken, ...] = ()  # requests whose first token came this step
    finishes: tuple[RequestFinish, ...] = ()  # requests that finished (or were refused) by this step
    phase_changes: tuple[PhaseChange, ...] = ()
    kv_events: tuple[KVBlockEvent, ...] = ()  # ownership changes in effect from this step on


@dataclass(frozen=True)
class SweepTag:
    """A run of a sweep: runs of one sweep share the id, each has one value of the parameter."""

    id: str
    param: str
    value: str


RUN_SOURCES = ("workload", "served", "what-if", "validation")


@dataclass(frozen=True)
class RunInfo:
    """What describes a run before its first step."""

    name: str
    mode: str  # real | simulated
    batching: str  # continuous | static
    config: dict[str, Any]  # EngineConfig.to_dict() plus executor facts (model, device, dtype)
    model: str | None = None
    workload: str = ""  # a one-line description of the workload
    source: str = "workload"  # workload (file or generator) | served (HTTP) | what-if | validation
    base_run_id: int | None = None  # what-if and validation: the recorded run this one re-plays
    sweep: SweepTag | None = None
    pid: int | None = None  # the process recording it (lets the dashboard stop it)
    served_url: str | None = None  # served runs: where the server listens
    previous_run_id: int | None = None  # a rotated recording: the part before this one
    lengths_declared: bool | None = None  # every request declared its true length as max_tokens
    validates_run_id: int | None = None  # a validation: the prediction it checks

    def __post_init__(self) -> None:
        if self.source not in RUN_SOURCES:
            raise ValueError(f"unknown run source {self.source!r}; one of {', '.join(RUN_SOURCES)}")


class StepRecorder(Protocol):
    """Where the engine sends what happened; storage.Recorder is the real one."""

    def record(self, snapshot: StepSnapshot) -> None: ...

    def record_tail(
        self,
        step: int,
        arrivals: tuple[RequestArrival, ...],
        finishes: tuple[RequestFinish, ...],
        phase_changes: tuple[PhaseChange, ...],
        kv_events: tuple[KVBlockEvent, ...],
    ) -> None:
        """What happened after the last step (aborts, run end): no step row of its own."""


class RunRecorder(StepRecorder, Protocol):
    """A recorder that owns a whole run: it has an id, and the run ends through it."""

    run_id: int

    def finish(self, status: str = "finished", summary: dict[str, Any] | None = None,
               error: str | None = None) -> None:
        """Write what is left and mark the run finished | aborted | failed."""


def finish_record(req: Request) -> RequestFinish:
    """The record of a request that has finished (or was refused)."""
    reason = req.status.finish_reason
    assert reason is not None and req.finish_time is not None
    return RequestFinish(req.request_id, req.first_scheduled_time, req.first_token_time, req.finish_time, reason,
                         len(req.output_token_ids), req.num_preemptions, req.reject_reason)
