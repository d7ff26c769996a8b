"""What the engine needs from an executor: run one SchedulerOutput, return sampled tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from engine.outputs import ModelRunnerOutput, SchedulerOutput


class Executor(Protocol):
    mode: str  # "real" (a torch model) or "simulated" (a cost model on a virtual clock)
    include_token_ids: bool  # whether ScheduledRequest must carry token and block ids
    eos_token_id: int | None
    vocab_size: int

    def execute_model(self, out: SchedulerOutput) -> ModelRunnerOutput:
        """Compute out.scheduled; an empty output only drops state of out.finished_req_ids."""
        ...

    def encode(self, text: str) -> Sequence[int]:
        """Prompt text to token ids."""
        ...

    def describe(self) -> dict[str, Any]:
        """Facts recorded with the run: model, device, dtype, peak FLOP/s, cost model."""
        ...

    def shutdown(self) -> None: ...
