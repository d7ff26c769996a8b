"""Simulated serving: the real scheduler on the wall clock, a cost model instead of weights.

Each step lasts what the cost model predicts for it: the executor sleeps the rest of the predicted
time after the (fast) simulated step, so clients see a server with the same schedule a simulation
would predict, for testing routers, autoscalers and clients without a GPU. Tokens are
SIMULATED_TOKEN_ID and read as engine.detokenizer.SIMULATED_TOKEN_TEXT, so nobody mistakes the
output for a model's. The step's recorded model time is the predicted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from engine.executors.cost_model import CostModel
from engine.executors.simulated import SimulatedExecutor
from engine.outputs import ModelRunnerOutput, SchedulerOutput


class SleepingExecutor:
    """A SimulatedExecutor whose steps take their predicted time on the wall clock.

    Offline, a busy engine's steps follow each other with no gap. Online, the loop spends time
    between steps (delivering tokens, recording, taking requests), so a step that slept its whole
    predicted time would end late by that much and the served schedule would fall behind the
    offline one step by step. When a request of this step also ran in the previous one, the engine
    was busy since that step's end, and this step ends at that end plus its predicted time (the
    loop's time in between absorbed); otherwise (the engine may have been idle) it ends its
    predicted time after it starts. A step that cannot end in time ends when it can.
    """

    mode = "simulated"

    def __init__(self, cost_model: CostModel, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.inner = SimulatedExecutor(cost_model)
        self.include_token_ids = self.inner.include_token_ids
        self.eos_token_id = self.inner.eos_token_id
        self.extra_eos_token_ids = self.inner.extra_eos_token_ids
        self.vocab_size = self.inner.vocab_size
        self._sleep = sleep
        self._clock = clock
        self._last_end: float | None = None  # when the previous step ended (on schedule, or late)
        self._last_ids: frozenset[str] = frozenset()

    def execute_model(self, out: SchedulerOutput) -> ModelRunnerOutput:
        start = self._clock()
        result = self.inner.execute_model(out)
        if out.scheduled:
            ids = frozenset(s.request_id for s in out.scheduled)
            busy_since = self._last_end if not ids.isdisjoint(self._last_ids) else None
            end = (busy_since if busy_since is not None else start) + result.model_time_s
            left = end - self._clock()
            if left > 0:
                self._sleep(left)
            self._last_end = end if left > 0 else self._clock()
            self._last_ids = ids
        return result

    def encode(self, text: str) -> Sequence[int]:
        return self.inner.encode(text)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe() | {"wall_clock": "each step sleeps its predicted time (serve --simulate)"}

    def shutdown(self) -> None:
        self.inner.shutdown()
