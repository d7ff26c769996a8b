"""Inter-token latency as `vllm bench serve` defines it: the gaps between each request's
consecutive output tokens, pooled over every request.

A request that sampled in step k-1 and samples again in step k has the gap end(k) - end(k-1),
the same for every such request, so each step adds one (gap, count) pair instead of one value per
token; only gaps that span steps a request sat out (a preemption, a budget that ran out) are kept
one by one. The simulator's fast path adds whole steps the same way without visiting requests.
"""

from __future__ import annotations

from array import array

import numpy as np


class InterTokenLatency:
    def __init__(self) -> None:
        self._gaps = array("d")  # distinct gaps...
        self._counts = array("q")  # ...and how many tokens had each
        self._last: dict[str, tuple[int, float]] = {}  # request -> (step, end time) of its last token
        self._prev_step = -1
        self._prev_end = 0.0

    def sampled(self, request_id: str, step: int, end: float) -> bool:
        """A request got a token in `step` (ending at `end`); True if its last one was in step - 1
        (the caller counts those and adds them with step_gaps; other gaps are kept here)."""
        last = self._last.get(request_id)
        self._last[request_id] = (step, end)
        if last is None or last[0] == step - 1:
            return last is not None
        self._gaps.append(end - last[1])
        self._counts.append(1)
        return False

    def step_done(self, step: int, end: float, num_consecutive: int) -> None:
        """Step `step` ended at `end`; num_consecutive requests sampled in it and in the step before."""
        if num_consecutive and self._prev_step == step - 1:
            self._gaps.append(end - self._prev_end)
            self._counts.append(num_consecutive)
        self._prev_step, self._prev_end = step, end

    def decode_run(self, first_step: int, ends: list[float], num_consecutive: int) -> None:
        """step_done for consecutive steps first_step, first_step + 1, ... ending at `ends`, each with
        the same num_consecutive requests (the simulator's quiet stretches)."""
        for i, end in enumerate(ends):
            self.step_done(first_step + i, end, num_consecutive)

    def last_token(self, request_id: str) -> tuple[int, float] | None:
        """(step, end time) of the request's last token, if it has one."""
        return self._last.get(request_id)

    def set_last_token(self, request_id: str, step: int, end: float) -> None:
        """What sampled() would have left (the fast path writes its implicit steps back)."""
        self._last[request_id] = (step, end)

    def forget(self, request_id: str) -> None:
        """The request finished: it has no next token."""
        self._last.pop(request_id, None)

    def pooled(self) -> np.ndarray:
        """Every gap, one per token after each request's first, in seconds."""
        return np.repeat(np.frombuffer(self._gaps, dtype=float), np.frombuffer(self._counts, dtype=np.int64))
