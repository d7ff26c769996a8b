"""The step record is defined once (engine/step_counts.py): the steps table, the rollups and the cost
features are derived from it and cannot drift."""

from __future__ import annotations

import random
from dataclasses import fields

import numpy as np
import pytest

from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import DEFAULT_COST_MODEL, FEATURE_SOURCES, FEATURES, cost_features
from engine.executors.simulated import SimulatedExecutor
from engine.snapshot import RunInfo, StepSnapshot
from engine.step_counts import ROLLUP_SUM_FIELDS, STEP_COUNT_FIELDS, StepCounts
from engine.workload.generators import synthetic_workload
from storage import queries, run_facts
from storage.database import open_for_read, open_for_write
from storage.recorder import Recorder
from storage.schema import ROLLUP_COLUMNS, STEP_COLUMNS, StepRollupRow, StepRow, table_of


def test_the_steps_table_holds_exactly_the_step_counts_plus_times_and_results() -> None:
    columns = {c.name for c in table_of(StepRow).columns}
    assert columns == set(STEP_COLUMNS)
    assert set(STEP_COUNT_FIELDS) <= columns
    assert len(STEP_COLUMNS) == len(set(STEP_COLUMNS))


def test_the_rollups_sum_step_counts_fields() -> None:
    columns = [c.name for c in table_of(StepRollupRow).columns]
    assert set(columns) == set(ROLLUP_COLUMNS)
    assert set(ROLLUP_SUM_FIELDS) <= set(STEP_COUNT_FIELDS)
    assert {f"sum_{f}" for f in ROLLUP_SUM_FIELDS} <= set(columns)


def test_cost_features_are_sums_of_step_counts_fields() -> None:
    assert list(FEATURE_SOURCES) == list(FEATURES)
    assert all(set(cols) <= set(STEP_COUNT_FIELDS) for cols in FEATURE_SOURCES.values())
    rng = random.Random(0)
    for _ in range(50):
        counts = StepCounts(**{f.name: rng.randrange(0, 1000) for f in fields(StepCounts)})
        expected = tuple(float(sum(getattr(counts, c) for c in cols)) if cols else 1.0
                         for cols in FEATURE_SOURCES.values())
        assert cost_features(counts) == expected


@pytest.mark.parametrize("batching", ["continuous", "static"])
def test_recorded_steps_and_their_features_read_back_as_the_engine_counted_them(tmp_path, batching: str) -> None:  # type: ignore[no-untyped-def]
    """Every StepCounts field goes into its column and comes back; the features a fit reads from the
    database equal the ones the simulator priced each step with."""
    config = EngineConfig(SchedulerConfig(max_num_seqs=6, max_num_batched_tokens=64, max_model_len=160,
                                          enable_chunked_prefill=True, batching=batching),  # type: ignore[arg-type]
                          CacheConfig(block_size=4, num_gpu_blocks=60, swap_space=0))
    db = str(tmp_path / "s.db")
    workload = synthetic_workload("mixed", 40, prompt_lens=(4, 60), request_rate=20.0, seed=3)
    recorder = Recorder(open_for_write(db), RunInfo("schema", "simulated", batching, config.to_dict()))
    snapshots: list[StepSnapshot] = []
    Engine(config, SimulatedExecutor(DEFAULT_COST_MODEL), VirtualClock(), recorder).run(
        workload.requests, on_step=snapshots.append)
    recorder.finish("finished")
    reader = open_for_read(db)
    steps = queries.steps_window(reader, recorder.run_id, 0, 10**9)
    assert len(steps) == len(snapshots) > 20
    for name in STEP_COUNT_FIELDS:
        assert list(steps[name]) == [getattr(s.counts, name) for s in snapshots], name
    frame = run_facts.step_features(reader, recorder.run_id)
    from_db = np.column_stack([np.ones(len(frame))] + [frame[f].to_numpy(float) for f in FEATURES[1:]])
    assert (from_db == np.array([cost_features(s.counts) for s in snapshots])).all()
