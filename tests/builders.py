"""Small builders for scheduler tests: make_scheduler, make_request, run_step, run_to_completion,
make_engine (a simulation through the engine loop)."""

from __future__ import annotations

from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import UnitCostModel
from engine.executors.simulated import SimulatedExecutor
from engine.outputs import ModelRunnerOutput, SchedulerOutput, SchedulerUpdate
from engine.request import Request
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler

SAMPLED_TOKEN = 7  # what the fake executor samples; never EOS unless a test says so


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_scheduler(
    num_gpu_blocks: int = 1000,
    block_size: int = 16,
    swap_space: int = 0,
    clock: FakeClock | None = None,
    **sched: object,
) -> Scheduler:
    sched.setdefault("max_model_len", 1024)
    sched.setdefault("max_num_batched_tokens", max(int(sched["max_model_len"]), 2048))  # type: ignore[call-overload]
    return Scheduler(
        SchedulerConfig(**sched),  # type: ignore[arg-type]
        CacheConfig(block_size=block_size, num_gpu_blocks=num_gpu_blocks, swap_space=swap_space),
        clock=clock or FakeClock(),
    )


def make_request(
    request_id: str,
    prompt_len: int,
    max_tokens: int = 100,
    arrival_time: float = 0.0,
    priority: int = 0,
    eos_token_id: int | None = None,
    ignore_eos: bool = True,
) -> Request:
    return Request(
        request_id,
        list(range(1, prompt_len + 1)),
        SamplingParams(max_tokens=max_tokens, ignore_eos=ignore_eos),
        arrival_time=arrival_time,
        priority=priority,
        eos_token_id=eos_token_id,
    )


def fake_result(out: SchedulerOutput, token: int = SAMPLED_TOKEN) -> ModelRunnerOutput:
    return ModelRunnerOutput({s.request_id: token for s in out.scheduled if s.do_sample})


def run_step(scheduler: Scheduler, token: int = SAMPLED_TOKEN) -> tuple[SchedulerOutput, SchedulerUpdate]:
    out = scheduler.schedule()
    return out, scheduler.update_from_output(out, fake_result(out, token))


def run_to_completion(scheduler: Scheduler, max_steps: int = 100_000) -> list[SchedulerOutput]:
    outputs = []
    while scheduler.has_unfinished_requests():
        out, _ = run_step(scheduler)
        outputs.append(out)
        assert len(outputs) < max_steps, "scheduler did not finish"
    return outputs


def make_engine(
    num_gpu_blocks: int = 1000,
    block_size: int = 16,
    swap_space: int = 0,
    fast_forward: bool = True,
    executor: SimulatedExecutor | None = None,
    **sched: object,
) -> Engine:
    """A simulation Engine (virtual clock; the unit cost model unless an executor is given)."""
    return Engine(
        EngineConfig(SchedulerConfig(**sched),  # type: ignore[arg-type]
                     CacheConfig(block_size=block_size, num_gpu_blocks=num_gpu_blocks, swap_space=swap_space)),
        executor or SimulatedExecutor(UnitCostModel()),
        VirtualClock(),
        fast_forward=fast_forward,
    )
