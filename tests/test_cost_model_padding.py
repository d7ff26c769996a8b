"""The cost model charges static batching's padding: a run's simulated time grows with the pad
rows it computes, by the padding coefficients times the pad rows each step counts, on the
ordinary step path and in the simulator's decode bursts alike."""

from __future__ import annotations

import dataclasses

import pytest

from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import DEFAULT_COST_MODEL, LinearCostModel
from engine.executors.simulated import SimulatedExecutor
from engine.snapshot import StepSnapshot
from engine.workload.spec import RequestSpec

# Prompts of different lengths (prefill pad tokens) and outputs of different lengths (finished
# members decoding pad rows), two static batches of four.
PROMPTS = [8, 40, 17, 64, 23, 5, 50, 31]
OUTPUTS = [10, 60, 3, 25, 40, 7, 18, 33]


def _run(model: LinearCostModel, fast_forward: bool, observed: bool = True) -> tuple[float, list[StepSnapshot]]:
    config = EngineConfig(
        SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=512, max_model_len=512, batching="static"),
        CacheConfig(block_size=16, num_gpu_blocks=1000),
    )
    engine = Engine(config, SimulatedExecutor(model), VirtualClock(), fast_forward=fast_forward)
    snapshots: list[StepSnapshot] = []
    engine.run([RequestSpec(f"r{i}", 0.0, max_tokens=n, prompt_len=p)
                for i, (p, n) in enumerate(zip(PROMPTS, OUTPUTS, strict=True))],
               on_step=snapshots.append if observed else None)
    return engine.clock.now(), snapshots


# Step by step; in decode bursts (each step observed); and unobserved, where a continuous run's bursts
# fold quiet stretches (a static batch's pad slots keep its bursts step by step, burst_steps.py).
@pytest.mark.parametrize(("fast_forward", "observed"), [(False, True), (True, True), (True, False)])
def test_padding_is_charged_at_its_coefficients(fast_forward: bool, observed: bool) -> None:
    _, snapshots = _run(DEFAULT_COST_MODEL, fast_forward=False)
    charged, _ = _run(DEFAULT_COST_MODEL, fast_forward, observed)
    free = dataclasses.replace(DEFAULT_COST_MODEL, coefficients={
        **DEFAULT_COST_MODEL.coefficients, "padding_tokens": 0.0, "padding_seqs": 0.0})
    uncharged, _ = _run(free, fast_forward, observed)
    _, free_snapshots = _run(free, fast_forward=False)
    pad_tokens = sum(s.counts.num_padding_tokens for s in snapshots)
    pad_seqs = sum(s.counts.num_padding_seqs for s in snapshots)
    # The schedule does not depend on time here (all arrive at 0), so both runs take the same steps.
    assert [s.counts for s in free_snapshots] == [s.counts for s in snapshots]
    # Prefill padding: prompts padded to each batch's longest; decode padding: finished members.
    assert pad_tokens > sum(max(PROMPTS[:4]) - p for p in PROMPTS[:4])
    assert pad_seqs == sum(max(OUTPUTS[b:b + 4]) - n for b in (0, 4) for n in OUTPUTS[b:b + 4])
    c = DEFAULT_COST_MODEL.coefficients
    assert charged - uncharged == pytest.approx(c["padding_tokens"] * pad_tokens + c["padding_seqs"] * pad_seqs,
                                                rel=1e-9)


@pytest.mark.parametrize("row_factors", [{}, {7: 1.3, 9: 0.8}])
def test_a_decode_stretch_prices_its_pad_rows_as_a_step_does(row_factors: dict[int, float]) -> None:
    """decode_time_fn, the price of a decode-only step from its context (the simulator's fast path),
    agrees with step_time on the same step, pad rows included (each one pad token and one pad row)."""
    from engine.step_counts import StepCounts

    model = dataclasses.replace(DEFAULT_COST_MODEL, row_factors=row_factors)
    for decodes, padding, context in [(5, 2, 300), (9, 0, 1200), (4, 5, 64)]:
        counts = StepCounts(num_decode_seqs=decodes, num_batched_tokens=decodes, num_padding_seqs=padding,
                            num_padding_tokens=padding, num_context_tokens=context)
        assert model.decode_time_fn(decodes, padding)(context) == pytest.approx(model.step_time(counts), rel=1e-12)
    assert model.decode_time_fn(5, 2)(300) > model.decode_time_fn(5, 0)(300)
