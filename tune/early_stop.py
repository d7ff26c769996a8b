"""Sound early stopping: a simulation ends as soon as its point provably cannot meet the SLOs.

A point meets the SLOs when at most `allowed` = N - ceil(attainment x N) requests miss. While it
simulates, some misses are already certain, and never undone:

- TTFT: a request that arrived more than the TTFT threshold ago and has no first token yet gets
  one no earlier than now (the virtual clock only moves forward), so its TTFT exceeds the
  threshold; one with a first token has its final TTFT.
- E2E: the same with the finish time.
- any threshold: a finished request's latencies are final (rejected and aborted ones never complete).
- TPOT: a running request with its first token, that may still sample at most max_tokens in all,
  ends with TPOT >= (now - first token) / (max_tokens - 1): finishing later or with fewer tokens
  only raises it (and once it has outlived its first step it samples at least twice).

Each rule flags a request (a request is counted once, whichever rules flag it), so the count is a
lower bound of the run's final misses. When it exceeds `allowed` the run is stopped: the point
could only have missed the SLOs, so no point that meets them is ever stopped, and the best point
is never lost. Requests are visited by cursors in arrival order, so a check costs what the cursors
advance plus the running batch (only with a TPOT threshold), every CHECK_EVERY steps.

The object is handed to Engine.run as its `stop` event: the engine asks it before every step and
aborts what is left once it answers yes, so no engine code changes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.request import RequestStatus
from engine.workload.spec import RequestSpec
from tune.slo import SLO, request_latencies

if TYPE_CHECKING:
    from engine.engine_loop import Engine

CHECK_EVERY = 16  # engine steps between checks (each is O(what the cursors advance))
_COMPLETED = (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH)


def _margin(t: float) -> float:
    """A rounding allowance: a miss is certain only when it is certain in floating point too."""
    return 1e-9 * (1.0 + abs(t))


class EarlyStop(threading.Event):
    """Engine.run's `stop`: set once the certain misses exceed `allowed`."""

    def __init__(self, specs: Sequence[RequestSpec], slo: SLO, allowed: int, beat: float | None = None,
                 check_every: int = CHECK_EVERY) -> None:
        """beat: a goodput this point must be able to reach (the best found so far), or None."""
        super().__init__()
        order = sorted(specs, key=lambda s: s.arrival_time)  # the engine's own arrival order
        self._ids = [s.request_id for s in order]
        self._arrivals = [s.arrival_time for s in order]
        self._index = {rid: i for i, rid in enumerate(self._ids)}
        self._slo = slo
        self._limits = slo.thresholds()
        self._allowed = allowed
        self._beat = beat
        self._last_arrival = order[-1].arrival_time if order else 0.0
        self.cannot_beat = False  # stopped by the goodput bound (else by the misses)
        self._check_every = check_every
        self._missed = bytearray(len(order))
        self.certain_misses = 0
        self.tripped_at: float | None = None  # virtual time it stopped the run
        self._calls = 0
        self._ttft_i = self._e2e_i = self._fin_i = 0
        self._engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def tripped(self) -> bool:
        return self.tripped_at is not None

    def is_set(self) -> bool:
        if self.tripped_at is not None:
            return True
        self._calls += 1
        if self._calls % self._check_every or self._engine is None:
            return False
        misses = self.count()
        if misses > self._allowed or self._below_beat(misses):
            self.tripped_at = self._engine.clock.now()
            self.cannot_beat = misses <= self._allowed
            self.set()
            return True
        return False

    def upper_bound(self, misses: int) -> float:
        """Goodput this run can still reach: at most N - misses good requests, over a duration of at
        least now (unfinished requests finish later) and at least the last arrival (every request
        finishes, or is refused, no earlier than it arrives)."""
        assert self._engine is not None
        duration = max(self._engine.clock.now(), self._last_arrival)
        good = len(self._ids) - misses
        return good / duration if duration > 0 else float("inf")

    def _below_beat(self, misses: int) -> bool:
        return self._beat is not None and self._beat > 0 and self.upper_bound(misses) < self._beat

    def flagged(self) -> set[str]:
        """The requests counted as certain misses so far."""
        return {rid for rid, m in zip(self._ids, self._missed, strict=True) if m}

    def _mark(self, i: int) -> None:
        if not self._missed[i]:
            self._missed[i] = 1
            self.certain_misses += 1

    def count(self) -> int:
        """Advance the cursors to now; the misses certain so far."""
        engine = self._engine
        assert engine is not None
        now = engine.clock.now()
        requests = engine.requests
        ids, arrivals, n = self._ids, self._arrivals, len(self._ids)
        ttft, tpot, e2e = self._limits.get("ttft"), self._limits.get("tpot"), self._limits.get("e2e")
        if ttft is not None:
            horizon = now - ttft - _margin(now)
            i = self._ttft_i
            while i < n and arrivals[i] < horizon:
                req = requests.get(ids[i])  # None: due but not handed to the scheduler yet
                if req is None or req.first_token_time is None or req.first_token_time - req.arrival_time > ttft:
                    self._mark(i)
                i += 1
            self._ttft_i = i
        if e2e is not None:
            horizon = now - e2e - _margin(now)
            i = self._e2e_i
            while i < n and arrivals[i] < horizon:
                req = requests.get(ids[i])
                if (req is None or req.status not in _COMPLETED or req.finish_time is None
                        or req.finish_time - req.arrival_time > e2e):
                    self._mark(i)
                i += 1
            self._e2e_i = i
        i = self._fin_i
        while i < n:  # finished requests, in arrival order, up to the first unfinished one
            req = requests.get(ids[i])
            if req is None or not req.status.is_finished:
                break
            latencies = request_latencies(req)
            if latencies is None or any(latencies[k] > self._limits[key]
                                        for k, key in enumerate(("ttft", "tpot", "e2e")) if key in self._limits):
                self._mark(i)
            i += 1
        self._fin_i = i
        if tpot is not None:
            for req in engine.scheduler.running:
                first, n_max = req.first_token_time, req.sampling_params.max_tokens
                if first is not None and n_max > 1 and (now - first) / (n_max - 1) > tpot + _margin(tpot):
                    self._mark(self._index[req.request_id])
        return self.certain_misses
