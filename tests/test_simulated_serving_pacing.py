"""serve --simulate keeps to the offline schedule: the loop's own time between a busy engine's steps
is absorbed into the next step's predicted time, idle time is not. A fake clock, no sleeping."""

from __future__ import annotations

import pytest

from engine.executors.cost_model import LinearCostModel
from engine.outputs import ScheduledRequest, SchedulerOutput
from engine.sampling_params import SamplingParams
from engine.step_counts import StepCounts
from serving.simulated_serving import SleepingExecutor

STEP_S = 0.005
LOOP_S = 0.0004  # the online loop's work between two steps: delivery, recording, taking requests


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.t += seconds


def _decodes(*rids: str, step: int) -> SchedulerOutput:
    scheduled = tuple(ScheduledRequest(r, 1, 10 + step, False, True, SamplingParams(max_tokens=99), (), (0,))
                      for r in rids)
    return SchedulerOutput(step=step, scheduled=scheduled, counts=StepCounts(num_decode_seqs=len(rids),
                                                                              num_batched_tokens=len(rids)))


def _executor(clock: FakeClock) -> SleepingExecutor:
    return SleepingExecutor(LinearCostModel(coefficients={"intercept": STEP_S}), sleep=clock.sleep, clock=clock)


def test_a_busy_engines_steps_end_on_the_offline_schedule() -> None:
    clock = FakeClock()
    executor = _executor(clock)
    ends = []
    for step in range(5):
        executor.execute_model(_decodes("a", "b", step=step))
        ends.append(clock.t)
        clock.t += LOOP_S  # the loop's work before the next step
    # Offline the steps end at 5, 10, 15 ... ms; sleeping the whole step each time would give 5, 10.4, 15.8 ...
    assert ends == pytest.approx([STEP_S * (k + 1) for k in range(5)])


def test_after_an_idle_wait_a_step_takes_its_time_from_its_start() -> None:
    clock = FakeClock()
    executor = _executor(clock)
    executor.execute_model(_decodes("a", step=0))
    clock.t += 0.1  # a finished, the engine sat idle until b arrived
    executor.execute_model(_decodes("b", step=1))
    assert clock.t == pytest.approx(0.1 + 2 * STEP_S)


def test_a_step_that_cannot_keep_up_ends_late_and_the_next_counts_from_there() -> None:
    clock = FakeClock()
    executor = _executor(clock)
    executor.execute_model(_decodes("a", step=0))
    clock.t += 3 * STEP_S  # the loop fell far behind (a stall): no sleeping catches that up
    executor.execute_model(_decodes("a", step=1))
    late = clock.t
    assert late == pytest.approx(4 * STEP_S)  # no sleep: it is already past its scheduled end
    executor.execute_model(_decodes("a", step=2))
    assert clock.t == pytest.approx(late + STEP_S)  # no burst of short steps to catch up
