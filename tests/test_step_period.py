"""A fitted step costs its period: its own time plus the engine loop's gap to the next step, since a
simulated step starts the moment the previous one ends. Idle waits for arrivals are not a cost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import DEFAULT_COST_MODEL
from engine.executors.simulated import SimulatedExecutor
from engine.snapshot import RunInfo
from engine.workload.generators import synthetic_workload
from storage import run_facts
from storage.database import open_for_read, open_for_write
from storage.recorder import Recorder

LOOP_GAP = 0.0004  # what the loop spends between two steps
IDLE_GAP = 0.5  # an idle wait for the next arrival


def test_a_steps_duration_includes_the_loops_gap_to_the_next_step_but_not_an_idle_wait(tmp_path: Path) -> None:
    db = str(tmp_path / "p.db")
    config = EngineConfig(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=2048), CacheConfig(num_gpu_blocks=64))
    recorder = Recorder(open_for_write(db), RunInfo("gaps", "simulated", "continuous", config.to_dict()))
    Engine(config, SimulatedExecutor(DEFAULT_COST_MODEL), VirtualClock(), recorder).run(
        synthetic_workload("mixed", 12, request_rate=1000.0, seed=1).requests)
    recorder.finish("finished")
    with sqlite3.connect(db) as conn:  # the simulated steps abut; space them as a real loop would
        steps = conn.execute("SELECT step, start_time, end_time FROM steps ORDER BY step").fetchall()
        assert len(steps) > 10
        idle_after = len(steps) // 2  # the engine waits for an arrival after this step
        shift = 0.0
        for step, start, end in steps:
            conn.execute("UPDATE steps SET start_time = ?, end_time = ? WHERE step = ?",
                         (start + shift, end + shift, step))
            shift += IDLE_GAP if step == steps[idle_after][0] else LOOP_GAP
    own = np.array([end - start for _, start, end in steps])
    frame = run_facts.step_features(open_for_read(db), 1)
    assert frame["duration"].to_numpy() == pytest.approx(own + LOOP_GAP)  # the idle step and the last: the median gap
    assert "start_time" not in frame and "end_time" not in frame  # only what a fit reads
