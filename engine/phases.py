"""Which phase each request is in, as changes only: the Gantt's one row per phase change.

A change at the start of step k has step=k and the step's start time; a finish at the end of
step k has step=k+1 and the step's end time, so intervals are half-open in steps.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from engine.outputs import SchedulerOutput, SchedulerUpdate

Phase = Literal["queued", "prefill", "decode", "preempted", "swapped", "padding"]
PHASES: tuple[str, ...] = ("queued", "prefill", "decode", "preempted", "swapped", "padding")


class PhaseChange(NamedTuple):
    request_id: str
    phase: Phase | None  # None: the request left the engine (finished, aborted, rejected)
    step: int  # first step in the new phase (exclusive end of the previous one)
    time: float  # seconds since the run started


class PhaseTracker:
    def __init__(self) -> None:
        self._phase: dict[str, str] = {}
        self._padding: set[str] = set()

    def current(self, request_id: str) -> str | None:
        return self._phase.get(request_id)

    def arrived(self, request_id: str, step: int, time: float) -> PhaseChange:
        self._phase[request_id] = "queued"
        return PhaseChange(request_id, "queued", step, time)

    def left(self, request_id: str, step: int, time: float) -> PhaseChange | None:
        """The request is gone (rejected, aborted); None if it was not tracked."""
        self._padding.discard(request_id)
        if self._phase.pop(request_id, None) is None:
            return None
        return PhaseChange(request_id, None, step, time)

    def scheduled(self, out: SchedulerOutput, time: float) -> list[PhaseChange]:
        """Changes at the start of step out.step."""
        step = out.step
        phases = self._phase
        changes: list[PhaseChange] = []
        for rid in out.preempted_req_ids:
            phases[rid] = "preempted"
            changes.append(PhaseChange(rid, "preempted", step, time))
        for rid in out.swapped_out_req_ids:
            phases[rid] = "swapped"
            changes.append(PhaseChange(rid, "swapped", step, time))
        for s in out.scheduled:
            phase = "prefill" if s.is_prefill else "decode"
            if phases.get(s.request_id) != phase:
                phases[s.request_id] = phase
                changes.append(PhaseChange(s.request_id, phase, step, time))  # type: ignore[arg-type]
        if out.padding_req_ids or self._padding:
            changes.extend(self.padding(out.padding_req_ids, step, time))
        return changes

    def padding(self, padding: tuple[str, ...], step: int, time: float) -> list[PhaseChange]:
        """Static batching: finished members that now hold a slot, and slots freed by a batch's end."""
        phases = self._phase
        changes = []
        now_padding = set(padding)
        for rid in self._padding - now_padding:
            if phases.pop(rid, None) is not None:
                changes.append(PhaseChange(rid, None, step, time))
        for rid in padding:
            if rid not in self._padding:
                phases[rid] = "padding"
                changes.append(PhaseChange(rid, "padding", step, time))
        self._padding = now_padding
        return changes

    def enter(self, request_id: str, phase: Phase, step: int, time: float) -> PhaseChange | None:
        """The request is in `phase` from the start of `step` (the simulator's fast path; None if
        it already was), as scheduled() records it."""
        if self._phase.get(request_id) == phase:
            return None
        self._phase[request_id] = phase
        return PhaseChange(request_id, phase, step, time)

    def updated(self, step: int, update: SchedulerUpdate, time: float) -> list[PhaseChange]:
        """Finishes at the end of step `step`. Under static batching a finished member's row
        continues as padding, which scheduled() opens at the next step if its batch goes on."""
        changes: list[PhaseChange] = []
        for f in update.finished:
            if self._phase.pop(f.request_id, None) is not None:
                changes.append(PhaseChange(f.request_id, None, step + 1, time))
        return changes

    def close_all(self, step: int, time: float) -> list[PhaseChange]:
        """End every open phase (run end)."""
        changes = [PhaseChange(rid, None, step, time) for rid in self._phase]
        self._phase.clear()
        self._padding.clear()
        return changes
