"""The executor and the recorder as the online loop (engine.online) wraps them, on its thread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.executors.base import Executor
from engine.outputs import KVBlockEvent, ModelRunnerOutput, SchedulerOutput
from engine.phases import PhaseChange
from engine.snapshot import RequestArrival, RequestFinish, StepRecorder, StepSnapshot


class TrackingExecutor:
    """The executor, noting which requests each step computed (to route tokens, and to fail exactly
    the requests of a step whose forward pass raised)."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.mode = inner.mode
        self.include_token_ids = inner.include_token_ids
        self.eos_token_id = inner.eos_token_id
        self.vocab_size = inner.vocab_size
        self.sampled: list[str] = []
        self.in_flight: tuple[str, ...] = ()

    def begin(self) -> None:
        self.sampled = []
        self.in_flight = ()

    def execute_model(self, out: SchedulerOutput) -> ModelRunnerOutput:
        if out.scheduled:
            self.in_flight = tuple(s.request_id for s in out.scheduled)
        result = self.inner.execute_model(out)
        self.sampled = list(result.sampled_token_ids)
        self.in_flight = ()
        return result

    def encode(self, text: str) -> Sequence[int]:
        return self.inner.encode(text)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def shutdown(self) -> None:
        self.inner.shutdown()


class FinishReasonRecorder:
    """The recorder, one step behind: a step is written once the loop has seen its outputs, so a
    request stopped by the server (a stop string) is recorded as stopped, not aborted or length."""

    def __init__(self, inner: StepRecorder) -> None:
        self.inner = inner
        self.overrides: dict[str, str] = {}  # request id -> recorded finish reason, until written
        self._pending: StepSnapshot | None = None

    def record(self, snapshot: StepSnapshot) -> None:
        self.commit()
        self._pending = snapshot

    def commit(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.finishes = self._rewrite(pending.finishes)
            self.inner.record(pending)

    def record_tail(self, step: int, arrivals: tuple[RequestArrival, ...], finishes: tuple[RequestFinish, ...],
                    phase_changes: tuple[PhaseChange, ...], kv_events: tuple[KVBlockEvent, ...]) -> None:
        self.commit()
        self.inner.record_tail(step, arrivals, self._rewrite(finishes), phase_changes, kv_events)

    def _rewrite(self, finishes: tuple[RequestFinish, ...]) -> tuple[RequestFinish, ...]:
        if not self.overrides:
            return finishes
        out = []
        for f in finishes:
            reason = self.overrides.pop(f.request_id, None)
            out.append(f if reason is None else f._replace(finish_reason=reason))
        return tuple(out)
