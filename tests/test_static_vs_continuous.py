"""Static batching vs continuous batching on the textbook example, through the Engine loop."""

from __future__ import annotations

import pytest

from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import UnitCostModel
from engine.executors.simulated import SimulatedExecutor
from engine.workload.spec import RequestSpec

OUTPUTS = [10, 20, 15, 100, 25, 30, 15, 50, 40, 10]


def _run(batching: str) -> Engine:
    config = EngineConfig(
        SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=512, max_model_len=512, batching=batching),  # type: ignore[arg-type]
        CacheConfig(block_size=16, num_gpu_blocks=1000),
    )
    engine = Engine(config, SimulatedExecutor(UnitCostModel()), VirtualClock())
    specs = [RequestSpec(f"r{i}", 0.0, max_tokens=n, prompt_len=8) for i, n in enumerate(OUTPUTS)]
    engine.run(specs)
    return engine


@pytest.mark.parametrize(("batching", "steps"), [("static", 190), ("continuous", 100)])
def test_step_counts(batching: str, steps: int) -> None:
    engine = _run(batching)
    assert engine.stats.num_steps == steps
    assert engine.clock.now() == float(steps)  # unit cost: one time unit per step
    assert [len(engine.requests[f"r{i}"].output_token_ids) for i in range(10)] == OUTPUTS


def test_static_batches_wait_for_their_longest_member() -> None:
    engine = _run("static")
    # Batch 1 (outputs 10, 20, 15, 100) ends at step 100; batch 2 starts right after.
    first_scheduled = [engine.requests[f"r{i}"].first_scheduled_time for i in range(10)]
    assert first_scheduled == [0.0] * 4 + [100.0] * 4 + [150.0] * 2


def test_static_padding_slots_are_counted() -> None:
    config = EngineConfig(
        SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=512, max_model_len=512, batching="static"),
        CacheConfig(block_size=16, num_gpu_blocks=1000),
    )
    engine = Engine(config, SimulatedExecutor(UnitCostModel()), VirtualClock())
    snapshots = []
    engine.run([RequestSpec(f"r{i}", 0.0, max_tokens=n, prompt_len=8) for i, n in enumerate(OUTPUTS[:4])],
               on_step=snapshots.append)
    # Outputs 10, 20, 15, 100: padding slots are 0 for 10 steps, then 1, 2 (step 15 on), 3 (step 20 on).
    padding = [s.counts.num_padding_seqs for s in snapshots]
    assert padding[:10] == [0] * 10
    assert padding[10:15] == [1] * 5
    assert padding[15:20] == [2] * 5
    assert padding[20:] == [3] * 80
    assert sum(padding) == (100 - 10) + (100 - 20) + (100 - 15)


def test_only_lockstep_decode_steps_compute_finished_members_pad_rows() -> None:
    """A member finishing at its prefill (max_tokens 1) holds its slot while the others still
    prefill, but computes no row there; once the batch decodes it is a pad row with logits
    (num_padding_seqs), what the executor and the cost model's padding_seqs act on."""
    config = EngineConfig(
        SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=16, max_model_len=512, batching="static",
                        enable_chunked_prefill=True),
        CacheConfig(block_size=16, num_gpu_blocks=1000),
    )
    engine = Engine(config, SimulatedExecutor(UnitCostModel()), VirtualClock())
    snapshots = []
    engine.run([RequestSpec("short", 0.0, max_tokens=1, prompt_len=8),
                RequestSpec("long", 0.0, max_tokens=5, prompt_len=40)], on_step=snapshots.append)
    steps = [(s.counts.num_prefill_tokens, s.counts.num_padding_tokens, s.counts.num_padding_seqs) for s in snapshots]
    # short: 32 pad tokens then its 8; long: 40 prompt tokens, 16 a step; then long's 4 decodes.
    assert steps == [(0, 16, 0), (0, 16, 0), (16, 0, 0), (16, 0, 0), (16, 0, 0)] + [(0, 1, 1)] * 4
