"""The engine thread lets other threads run once a step's first tokens are handed out (so the HTTP
thread sends them before the next step is scheduled), once per such step and not after steps that
only decode. Sinks and the yield both run on the engine thread, so their order is the loop's."""

from __future__ import annotations

import threading

import pytest

import engine.online_loop as online_loop
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.executors.cost_model import LinearCostModel
from engine.executors.simulated import SimulatedExecutor
from engine.online import OnlineEngine, OnlineRequest, RequestOutput
from engine.sampling_params import SamplingParams

CONFIG = EngineConfig(SchedulerConfig(max_model_len=256), CacheConfig(num_gpu_blocks=64))


class LoggingSink:
    def __init__(self, events: list[tuple[str, ...]]) -> None:
        self.events = events
        self.done = threading.Event()

    def admitted(self, run_id: int | None, reject_reason: str | None) -> None:
        pass

    def output(self, out: RequestOutput) -> bool:
        self.events.append(("out", out.request_id, str(out.num_output_tokens)))
        if out.finish_reason is not None:
            self.done.set()
        return False


def test_the_engine_thread_yields_once_after_each_step_that_hands_out_first_tokens(
        monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, ...]] = []
    monkeypatch.setattr(online_loop, "let_other_threads_run", lambda: events.append(("yield",)))
    loop = OnlineEngine(CONFIG, SimulatedExecutor(LinearCostModel(coefficients={"intercept": 0.001})), None)
    loop.start()
    sink = LoggingSink(events)
    loop.submit(OnlineRequest("a", list(range(1000, 1010)), SamplingParams(max_tokens=4)), sink)
    assert sink.done.wait(30)
    loop.close()
    assert events == [("out", "a", "1"), ("yield",), ("out", "a", "2"), ("out", "a", "3"), ("out", "a", "4")]
