"""What the engine needs from an executor: run one SchedulerOutput, return sampled tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from engine.outputs import ModelRunnerOutput, SchedulerOutput
from engine.step_counts import StepCounts


class Executor(Protocol):
    mode: str  # "real" (a torch model) or "simulated" (a cost model on a virtual clock)
    include_token_ids: bool  # whether ScheduledRequest must carry token and block ids
    eos_token_id: int | None
    extra_eos_token_ids: tuple[int, ...]  # the model's other EOS ids; requests stop on them (with_model_eos)
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


class StepTimePredictor(Protocol):
    """What an executor may offer on top: a step's time from its counts alone (the simulator's cost
    model). With a virtual clock the engine then takes decode bursts, steps whose requests it does
    not visit one by one, every request sampling burst_token."""

    burst_token: int

    def predict_step_time(self, counts: StepCounts) -> float: ...

    def decode_step_time(self, num_decodes: int, num_padding: int) -> Callable[[int], float]:
        """The time of a step of num_decodes decodes (and pad rows) as a function of its context,
        the same floats as predict_step_time."""
        ...
