"""Decode bursts (the simulator's fast path) give exactly the steps a step-by-step run gives."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import DEFAULT_COST_MODEL, UnitCostModel
from engine.executors.simulated import SimulatedExecutor
from engine.snapshot import StepSnapshot
from engine.workload.generators import synthetic_workload

configs = st.fixed_dictionaries({
    "max_num_seqs": st.integers(1, 12),
    "block_size": st.sampled_from([1, 4, 16]),
    "num_gpu_blocks": st.integers(12, 120),
    "enable_chunked_prefill": st.booleans(),
    "policy": st.sampled_from(["fcfs", "priority", "sjf"]),
    "preemption_mode": st.sampled_from(["recompute", "swap"]),
    "batching": st.sampled_from(["continuous", "static"]),
    "unit_cost": st.booleans(),
})


def _run(cfg: dict, seed: int, rate: float, bursts: bool) -> tuple[list[StepSnapshot], Engine]:
    chunked = cfg["enable_chunked_prefill"]
    config = EngineConfig(
        SchedulerConfig(max_num_seqs=cfg["max_num_seqs"], max_model_len=160,
                        max_num_batched_tokens=64 if chunked else 160, enable_chunked_prefill=chunked,
                        policy=cfg["policy"], preemption_mode=cfg["preemption_mode"], batching=cfg["batching"]),
        CacheConfig(block_size=cfg["block_size"], num_gpu_blocks=cfg["num_gpu_blocks"],
                    swap_space=32 if cfg["preemption_mode"] == "swap" else 0),
    )
    cost = UnitCostModel() if cfg["unit_cost"] else DEFAULT_COST_MODEL
    workload = synthetic_workload("mixed", 30, prompt_lens=(4, 60), request_rate=rate, priority_levels=3, seed=seed)
    engine = Engine(config, SimulatedExecutor(cost), VirtualClock(), decode_bursts=bursts)
    snapshots: list[StepSnapshot] = []
    engine.run(workload.requests, on_step=snapshots.append)
    return snapshots, engine


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, seed=st.integers(0, 10_000), rate=st.sampled_from([5.0, 50.0, 1e9]))
def test_bursts_record_exactly_what_stepping_records(cfg: dict, seed: int, rate: float) -> None:
    stepped, slow = _run(cfg, seed, rate, bursts=False)
    burst, fast = _run(cfg, seed, rate, bursts=True)
    assert len(burst) == len(stepped)
    for a, b in zip(stepped, burst, strict=True):
        assert a == b, f"step {a.step} differs"
    for rid, req in slow.requests.items():
        other = fast.requests[rid]
        assert (req.status, req.output_token_ids, req.first_token_time, req.finish_time, req.num_preemptions) == (
            other.status, other.output_token_ids, other.first_token_time, other.finish_time, other.num_preemptions)
    assert slow.stats == fast.stats


def test_bursts_do_happen_on_a_decode_heavy_workload() -> None:
    import engine.decode_burst as decode_burst

    calls: list[int] = []
    last_steps: set[int] = set()
    original = decode_burst.advance

    def spy(scheduler, num_steps, token):  # type: ignore[no-untyped-def]
        calls.append(num_steps)
        last_steps.add(scheduler._step + num_steps - 1)
        return original(scheduler, num_steps, token)

    decode_burst.advance = spy  # type: ignore[assignment]
    try:
        cfg = {"max_num_seqs": 8, "block_size": 16, "num_gpu_blocks": 200, "enable_chunked_prefill": False,
               "policy": "fcfs", "preemption_mode": "recompute", "batching": "continuous", "unit_cost": False}
        snapshots, _ = _run(cfg, seed=1, rate=1e9, bursts=True)
    finally:
        decode_burst.advance = original  # type: ignore[assignment]
    assert sum(calls) > len(snapshots) // 2  # most steps of a decode-heavy run come from bursts
    # Bursts run up to and including the step that samples a request's last token.
    assert any(s.finishes for s in snapshots if s.step in last_steps)
