"""The simulated executor: no model, a cost model says how long each step takes."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from engine.executors.cost_model import CostModel
from engine.outputs import ModelRunnerOutput, SchedulerOutput
from engine.workload.synthetic import SyntheticPrompt

SIMULATED_TOKEN_ID = 0  # every sampled token; simulated requests stop by length, never by EOS


class SimulatedExecutor:
    mode = "simulated"
    include_token_ids = False
    eos_token_id: int | None = None
    extra_eos_token_ids: tuple[int, ...] = ()
    vocab_size = 32_000
    burst_token = SIMULATED_TOKEN_ID  # what every request samples in a decode burst (engine/decode_burst.py)

    def __init__(self, cost_model: CostModel) -> None:
        self.cost_model = cost_model
        self.predict_step_time = cost_model.step_time  # a step's time from its counts alone
        self.decode_step_time = cost_model.decode_time_fn  # ... and a decode-only step's, from its context
        # An arrival that wakes an idle engine starts its step this much later (engine_loop.Engine.run).
        self.idle_wake_s = float(getattr(cost_model, "idle_wake_s", 0.0))

    def execute_model(self, out: SchedulerOutput) -> ModelRunnerOutput:
        if not out.scheduled:
            return ModelRunnerOutput(sampled_token_ids={})
        sampled = {s.request_id: SIMULATED_TOKEN_ID for s in out.scheduled if s.do_sample}
        return ModelRunnerOutput(sampled_token_ids=sampled, model_time_s=self.predict_step_time(out.counts))


    def encode(self, text: str) -> Sequence[int]:
        """No tokenizer here: about four characters per token, the usual rule of thumb."""
        return SyntheticPrompt(max(1, round(len(text) / 4)), zlib.crc32(text.encode()), self.vocab_size)

    def describe(self) -> dict[str, Any]:
        return {"executor": "simulated", "cost_model": self.cost_model.to_dict()}

    def shutdown(self) -> None:
        pass
