"""The simulator's fast path (decode bursts: engine/decode_burst.py, engine/burst_steps.py) records exactly
what step-by-step execution records."""

from __future__ import annotations

import dataclasses
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import DEFAULT_COST_MODEL, UnitCostModel
from engine.executors.simulated import SimulatedExecutor
from engine.snapshot import StepSnapshot
from engine.workload.generators import synthetic_workload
from engine.workload.spec import declare_max_tokens

configs = st.fixed_dictionaries({
    "max_num_seqs": st.integers(1, 12),
    "block_size": st.sampled_from([1, 4, 16]),
    "num_gpu_blocks": st.integers(12, 120),
    "enable_chunked_prefill": st.booleans(),
    "policy": st.sampled_from(["fcfs", "priority", "sjf", "sjf-oracle"]),
    "preemption_mode": st.sampled_from(["recompute", "swap"]),
    "batching": st.sampled_from(["continuous", "static"]),
    "unit_cost": st.booleans(),
    "max_tokens_cap": st.none() | st.integers(15, 120),  # declared max_tokens above where requests stop
    "idle_wake": st.booleans(),  # arrivals that wake the idle engine start their step later
    "delay_factor": st.sampled_from([0.0, 0.0, 0.5]),  # V0's delay: the fast path must not skip its ticks
})


def _run(cfg: dict, seed: int, rate: float, fast: bool, abort_at: int | None = None,
         stop_at: int | None = None) -> tuple[list[StepSnapshot], Engine]:
    """abort_at: after that step, abort the request arrived third; stop_at: after that step, stop the run."""
    chunked = cfg["enable_chunked_prefill"]
    delay = cfg.get("delay_factor", 0.0) if cfg["batching"] == "continuous" else 0.0  # static refuses a delay
    config = EngineConfig(
        SchedulerConfig(max_num_seqs=cfg["max_num_seqs"], max_model_len=160,
                        max_num_batched_tokens=64 if chunked else 160, enable_chunked_prefill=chunked,
                        policy=cfg["policy"], preemption_mode=cfg["preemption_mode"], batching=cfg["batching"],
                        scheduler_delay_factor=delay),
        CacheConfig(block_size=cfg["block_size"], num_gpu_blocks=cfg["num_gpu_blocks"],
                    swap_space=32 if cfg["preemption_mode"] == "swap" else 0),
    )
    cost = UnitCostModel() if cfg["unit_cost"] else DEFAULT_COST_MODEL
    if cfg.get("idle_wake") and not cfg["unit_cost"]:
        cost = dataclasses.replace(DEFAULT_COST_MODEL, idle_wake_s=0.003)
    workload = synthetic_workload("mixed", 30, prompt_lens=(4, 60), request_rate=rate, priority_levels=3, seed=seed)
    if cfg.get("max_tokens_cap") is not None:
        workload = declare_max_tokens(workload, cfg["max_tokens_cap"])
    engine = Engine(config, SimulatedExecutor(cost), VirtualClock(), fast_forward=fast)
    snapshots: list[StepSnapshot] = []
    stop = threading.Event()

    def on_step(snapshot: StepSnapshot) -> None:
        snapshots.append(snapshot)
        if snapshot.step == abort_at:
            engine.abort_request(workload.requests[2].request_id)
        if snapshot.step == stop_at:
            stop.set()

    engine.run(workload.requests, on_step=on_step, stop=stop)
    return snapshots, engine


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, seed=st.integers(0, 10_000), rate=st.sampled_from([5.0, 50.0, 1e9]))
def test_fast_path_records_exactly_what_stepping_records(cfg: dict, seed: int, rate: float) -> None:
    _assert_same(cfg, seed, rate)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, seed=st.integers(0, 10_000), abort_at=st.integers(0, 60), stop_at=st.none() | st.integers(0, 120))
def test_fast_path_hands_aborts_and_stops_over_at_the_same_step(cfg: dict, seed: int, abort_at: int,
                                                                   stop_at: int | None) -> None:
    _assert_same(cfg, seed, 20.0, abort_at, stop_at)


def _assert_same(cfg: dict, seed: int, rate: float, abort_at: int | None = None, stop_at: int | None = None) -> None:
    stepped, slow = _run(cfg, seed, rate, False, abort_at, stop_at)
    fast_steps, fast = _run(cfg, seed, rate, True, abort_at, stop_at)
    assert len(fast_steps) == len(stepped)
    for a, b in zip(stepped, fast_steps, strict=True):
        assert a == b, f"step {a.step} differs"
    for rid, req in slow.requests.items():
        other = fast.requests[rid]
        assert (req.status, req.output_token_ids, req.first_token_time, req.finish_time, req.num_preemptions) == (
            other.status, other.output_token_ids, other.first_token_time, other.finish_time, other.num_preemptions)
    assert sorted(slow.itl.pooled()) == sorted(fast.itl.pooled())  # every inter-token gap, exactly
    assert slow.stats == fast.stats


def test_fast_path_takes_most_steps_including_admissions_and_finishes() -> None:
    from engine.decode_burst import DecodeBurst

    fast_steps: set[int] = set()
    original = DecodeBurst.step

    def spy(self, now, price, with_block_events):  # type: ignore[no-untyped-def]
        planned = original(self, now, price, with_block_events)
        if planned is not None:
            fast_steps.add(planned.step)
        return planned

    DecodeBurst.step = spy  # type: ignore[method-assign]
    try:
        cfg = {"max_num_seqs": 8, "block_size": 16, "num_gpu_blocks": 200, "enable_chunked_prefill": False,
               "policy": "fcfs", "preemption_mode": "recompute", "batching": "continuous", "unit_cost": False}
        snapshots, _ = _run(cfg, seed=1, rate=1e9, fast=True)
    finally:
        DecodeBurst.step = original  # type: ignore[method-assign]
    fast = [s for s in snapshots if s.step in fast_steps]
    assert len(fast) > len(snapshots) * 0.8  # nearly every step of a decode-heavy run
    assert any(s.finishes for s in fast)  # steps that finish requests,
    # and steps that admit while others decode
    assert any(s.counts.num_prefill_seqs and s.counts.num_decode_seqs for s in fast)
    assert any(s.first_tokens for s in fast)


def test_unrecorded_fast_path_summarizes_like_stepping() -> None:
    """Without a recorder or on_step the fast path skips building block events; nothing else changes."""
    config = EngineConfig(SchedulerConfig(max_num_seqs=6, max_model_len=160, max_num_batched_tokens=64,
                                          enable_chunked_prefill=True),
                          CacheConfig(block_size=4, num_gpu_blocks=60))
    workload = synthetic_workload("mixed", 60, prompt_lens=(4, 60), request_rate=20.0, seed=3)
    summaries, engines = [], []
    for fast in (False, True):
        engine = Engine(config, SimulatedExecutor(DEFAULT_COST_MODEL), VirtualClock(), fast_forward=fast)
        summaries.append(engine.run(workload.requests))
        engines.append(engine)
    assert summaries[0] == summaries[1]
    assert engines[0].stats == engines[1].stats
    assert summaries[1].num_preemptions > 0  # the run also leaves the fast path for preemptions


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, seed=st.integers(0, 10_000), rate=st.sampled_from([5.0, 50.0, 1e9]))
def test_an_unwatched_fast_path_ends_exactly_where_stepping_does(cfg: dict, seed: int, rate: float) -> None:
    """With no recorder and no on_step the fast path also folds quiet stretches (decode-only steps that
    change nothing but times) into a tight loop: every request's times, the totals, the clock and
    every inter-token gap come out bit for bit as stepping gives them."""
    engines = []
    for fast in (False, True):
        chunked = cfg["enable_chunked_prefill"]
        config = EngineConfig(
            SchedulerConfig(max_num_seqs=cfg["max_num_seqs"], max_model_len=160,
                            max_num_batched_tokens=64 if chunked else 160, enable_chunked_prefill=chunked,
                            policy=cfg["policy"], preemption_mode=cfg["preemption_mode"], batching=cfg["batching"]),
            CacheConfig(block_size=cfg["block_size"], num_gpu_blocks=cfg["num_gpu_blocks"],
                        swap_space=32 if cfg["preemption_mode"] == "swap" else 0),
        )
        workload = synthetic_workload("mixed", 30, prompt_lens=(4, 60), request_rate=rate, priority_levels=3,
                                      seed=seed)
        if cfg.get("max_tokens_cap") is not None:
            workload = declare_max_tokens(workload, cfg["max_tokens_cap"])
        engine = Engine(config, SimulatedExecutor(UnitCostModel() if cfg["unit_cost"] else DEFAULT_COST_MODEL),
                        VirtualClock(), fast_forward=fast)
        engine.run(workload.requests)
        engines.append(engine)
    slow, fast_engine = engines
    assert slow.stats == fast_engine.stats and slow.clock.now() == fast_engine.clock.now()
    for rid, req in slow.requests.items():
        other = fast_engine.requests[rid]
        assert (req.status, len(req.output_token_ids), req.first_token_time, req.finish_time, req.num_preemptions) == (
            other.status, len(other.output_token_ids), other.first_token_time, other.finish_time, other.num_preemptions)
    assert sorted(slow.itl.pooled()) == sorted(fast_engine.itl.pooled())
