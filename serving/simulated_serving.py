"""Simulated serving: the real scheduler on the wall clock, a cost model instead of weights.

Each step lasts what the cost model predicts for it: the executor sleeps the rest of the predicted
time after the (fast) simulated step, so clients see a server with the same schedule a simulation
would predict, for testing routers, autoscalers and clients without a GPU. Tokens are
SIMULATED_TOKEN_ID and read as serving.detokenizer.SIMULATED_TOKEN_TEXT, so nobody mistakes the
output for a model's. The step's recorded model time is the predicted one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from engine.executors.cost_model import CostModel
from engine.executors.simulated import SimulatedExecutor
from engine.outputs import ModelRunnerOutput, SchedulerOutput


class SleepingExecutor:
    """A SimulatedExecutor whose steps take their predicted time on the wall clock."""

    mode = "simulated"

    def __init__(self, cost_model: CostModel, sleep: Any = time.sleep) -> None:
        self.inner = SimulatedExecutor(cost_model)
        self.include_token_ids = self.inner.include_token_ids
        self.eos_token_id = self.inner.eos_token_id
        self.vocab_size = self.inner.vocab_size
        self._sleep = sleep

    def execute_model(self, out: SchedulerOutput) -> ModelRunnerOutput:
        start = time.perf_counter()
        result = self.inner.execute_model(out)
        if out.scheduled:
            left = result.model_time_s - (time.perf_counter() - start)
            if left > 0:
                self._sleep(left)
        return result

    def encode(self, text: str) -> Sequence[int]:
        return self.inner.encode(text)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe() | {"wall_clock": "each step sleeps its predicted time (serve --simulate)"}

    def shutdown(self) -> None:
        self.inner.shutdown()
