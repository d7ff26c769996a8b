"""ITL as `vllm bench serve` defines it: each request's gaps between consecutive output tokens, pooled.

Checked against a brute-force count: an executor wrapper and an on_step hook record which requests
sampled in every step and when the step ended; every request's token-time gaps are then computed one
by one and compared, exactly, with engine.itl.pooled()."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from engine.engine_loop import Engine
from engine.executors.cost_model import DEFAULT_COST_MODEL, CostModel, UnitCostModel
from engine.executors.simulated import SimulatedExecutor
from engine.outputs import ModelRunnerOutput, SchedulerOutput
from engine.snapshot import StepSnapshot
from engine.workload.generators import synthetic_workload
from engine.workload.spec import RequestSpec
from tests.builders import make_engine


class RecordingExecutor(SimulatedExecutor):
    """The simulated executor, noting which requests it sampled for in each step it ran."""

    def __init__(self, cost_model: CostModel) -> None:
        super().__init__(cost_model)
        self.sampled: dict[int, list[str]] = {}

    def execute_model(self, out: SchedulerOutput) -> ModelRunnerOutput:
        result = super().execute_model(out)
        if out.scheduled:
            self.sampled[out.step] = list(result.sampled_token_ids)
        return result


def _token_times(engine: Engine, executor: RecordingExecutor, specs: list[RequestSpec]) -> dict[str, list[float]]:
    """Run; every request's output token times. Steps the fast path took never reach the executor:
    there every running request decodes, so the samplers are the running requests after the step plus
    those it finished."""
    times: dict[str, list[float]] = defaultdict(list)

    def on_step(snap: StepSnapshot) -> None:
        if snap.step in executor.sampled:
            rids = executor.sampled[snap.step]
        else:
            rids = [r.request_id for r in engine.scheduler.running]
            rids += [f.request_id for f in snap.finishes if f.finish_reason in ("length", "stopped")]
        assert len(rids) == snap.num_output_tokens
        for rid in rids:
            times[rid].append(snap.end_time)

    engine.run(specs, on_step=on_step)
    for rid, req in engine.requests.items():
        assert len(times.get(rid, [])) == len(req.output_token_ids), rid  # every token seen once
    return times


def _brute_force_gaps(times: dict[str, list[float]]) -> list[float]:
    return sorted(t[i] - t[i - 1] for t in times.values() for i in range(1, len(t)))


CONFIGS: dict[str, dict[str, Any]] = {
    "recompute": dict(num_gpu_blocks=40, block_size=4, max_num_seqs=8, max_model_len=160),
    "swap": dict(num_gpu_blocks=40, block_size=4, max_num_seqs=8, max_model_len=160, preemption_mode="swap",
                 swap_space=16, policy="priority"),
    "chunked": dict(num_gpu_blocks=60, block_size=4, max_num_seqs=6, max_model_len=160,
                    enable_chunked_prefill=True, max_num_batched_tokens=32, policy="sjf"),
    "static": dict(num_gpu_blocks=120, block_size=4, max_num_seqs=5, max_model_len=160, batching="static",
                   enable_chunked_prefill=True, max_num_batched_tokens=48),
    "roomy": dict(num_gpu_blocks=500, block_size=16, max_num_seqs=16, max_model_len=160),
}


@pytest.mark.parametrize("fast_forward", [False, True])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_pooled_itl_equals_brute_force_gaps(name: str, fast_forward: bool) -> None:
    cfg = dict(CONFIGS[name])
    executor = RecordingExecutor(DEFAULT_COST_MODEL)
    engine = make_engine(executor=executor, fast_forward=fast_forward, **cfg)
    workload = synthetic_workload("mixed", 40, prompt_lens=(4, 60), request_rate=30.0, priority_levels=3, seed=7)
    times = _token_times(engine, executor, list(workload.requests))
    expected = _brute_force_gaps(times)
    pooled = engine.itl.pooled()
    assert len(expected) == sum(len(r.output_token_ids) - 1 for r in engine.requests.values())
    assert sorted(pooled.tolist()) == expected
    if name in ("recompute", "swap"):
        assert engine.stats.num_preemptions > 0  # the case has gaps that span a preemption
    if fast_forward:
        assert len(executor.sampled) < engine.stats.num_steps  # the fast path took some steps


def test_itl_gaps_by_hand_including_one_that_spans_a_preemption() -> None:
    # Unit cost: step k ends at k + 1. Block size 4, 3 blocks. A and B (prompt 4, 6 outputs) prefill
    # in step 0. In step 1 A takes the last free block and B, needing one too, preempts itself. A
    # decodes until step 5 and frees its 3 blocks; B recomputes prompt + 1 output in step 6, then
    # decodes in steps 7-10. A's gaps: 1 x 5; B's: 7 - 1 = 6 (across the preemption), then 1 x 4.
    for fast_forward in (False, True):
        engine = make_engine(num_gpu_blocks=3, block_size=4, max_model_len=64, max_num_batched_tokens=64,
                             fast_forward=fast_forward)
        summary = engine.run([RequestSpec(rid, 0.0, max_tokens=6, prompt_len=4) for rid in ("A", "B")])
        assert engine.requests["B"].num_preemptions == 1
        assert sorted(engine.itl.pooled().tolist()) == [1.0] * 9 + [6.0]
        assert summary.itl_s.mean == 15.0 / 10
        assert summary.itl_s.p50 == 1.0


def test_itl_gap_of_a_member_that_waits_for_the_rest_of_a_static_batch_to_prefill() -> None:
    # Static, chunked budget 8: A (prompt 8) prefills and samples in step 0, B (prompt 8) in step 1;
    # both decode in steps 2 and 3. A's gaps: 3 - 1 = 2, then 1; B's: 1, 1.
    engine = make_engine(batching="static", max_num_seqs=2, enable_chunked_prefill=True, max_num_batched_tokens=8,
                         max_model_len=64)
    engine.run([RequestSpec(rid, 0.0, max_tokens=3, prompt_len=8) for rid in ("A", "B")])
    assert sorted(engine.itl.pooled().tolist()) == [1.0, 1.0, 1.0, 2.0]


def test_itl_is_empty_when_every_request_has_one_token() -> None:
    engine = make_engine(executor=SimulatedExecutor(UnitCostModel()))
    summary = engine.run([RequestSpec(f"r{i}", float(i), max_tokens=1, prompt_len=8) for i in range(3)])
    assert engine.itl.pooled().size == 0
    assert summary.itl_s.mean is None
    assert np.array_equal(engine.itl.pooled(), np.array([]))
