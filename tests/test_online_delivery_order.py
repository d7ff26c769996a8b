"""After a step the online loop hands out first tokens before the others' next tokens: a step's
outputs reach the clients one after another, and a request waiting for its first token should not
queue behind the whole batch. Driven step by step on a virtual clock, no threads."""

from __future__ import annotations

from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import UnitCostModel
from engine.executors.simulated import SimulatedExecutor
from engine.online_io import RequestOutput
from engine.online_outputs import Deliveries
from engine.request import Request
from engine.sampling_params import SamplingParams


class OrderSink:
    def __init__(self, log: list[tuple[str, int]]) -> None:
        self._log = log

    def admitted(self, run_id: int | None, reject_reason: str | None) -> None:
        pass

    def output(self, out: RequestOutput) -> bool:
        self._log.append((out.request_id, out.num_output_tokens))
        return False


def test_first_tokens_are_delivered_before_the_running_batchs_next_tokens() -> None:
    config = EngineConfig(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=256, max_model_len=256),
                          CacheConfig(block_size=16, num_gpu_blocks=64))
    engine = Engine(config, SimulatedExecutor(UnitCostModel()), VirtualClock())
    deliveries = Deliveries()
    log: list[tuple[str, int]] = []

    def add(rid: str) -> None:
        engine.add_request(Request(rid, list(range(100, 110)), SamplingParams(max_tokens=20)))
        deliveries.track(rid, OrderSink(log))

    for rid in ("a", "b", "c"):
        add(rid)
    for _ in range(3):
        deliveries.after_step(engine, engine.step())
    log.clear()
    add("new")  # joins the running batch, behind a, b and c in its order
    deliveries.after_step(engine, engine.step())
    assert log == [("new", 1), ("a", 4), ("b", 4), ("c", 4)]
