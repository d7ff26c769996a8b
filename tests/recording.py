"""Helpers for storage and what-if tests: record a simulated run into a database file, or a
"pretend real" one (mode real, its step times from a known cost model, so a fit has a truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import DEFAULT_COST_MODEL, CostModel
from engine.executors.simulated import SimulatedExecutor
from engine.metrics import RunSummary
from engine.snapshot import RunInfo
from engine.workload.generators import synthetic_workload
from engine.workload.spec import Workload
from storage.database import open_for_write
from storage.recorder import Recorder


def record_simulation(
    db: Path | str,
    num_requests: int = 40,
    seed: int = 0,
    request_rate: float = 50.0,
    flush_every_steps: int = 16,
    **config: Any,
) -> tuple[int, Engine, RunSummary]:
    sched_keys = set(SchedulerConfig.__dataclass_fields__)
    sched = {k: v for k, v in config.items() if k in sched_keys}
    cache = {k: v for k, v in config.items() if k not in sched_keys}
    cache.setdefault("num_gpu_blocks", 200)
    engine_config = EngineConfig(SchedulerConfig(**sched), CacheConfig(**cache))
    workload = synthetic_workload("mixed", num_requests, prompt_lens=(16, 128), request_rate=request_rate, seed=seed)
    executor = SimulatedExecutor(DEFAULT_COST_MODEL)
    info = RunInfo(name="test run", mode="simulated", batching=engine_config.scheduler.batching,
                   config=engine_config.to_dict(), workload=workload.description)
    recorder = Recorder(open_for_write(str(db)), info, executor.describe(), flush_every_steps=flush_every_steps)
    engine = Engine(engine_config, executor, VirtualClock(), recorder)
    summary = engine.run(workload.requests)
    recorder.finish("finished", summary=summary.to_dict())
    recorder.db.dispose()  # the last connection checkpoints the WAL into the file
    return recorder.run_id, engine, summary


def record_pretend_real(db: Path | str, config: EngineConfig, workload: Workload, device: CostModel,
                        facts: dict[str, Any], name: str = "pretend real") -> int:
    """A run recorded as mode=real whose steps take what `device` says; facts: what its executor
    recorded (device, dtype, torch threads ...)."""
    info = RunInfo(name=name, mode="real", batching=config.scheduler.batching, config=config.to_dict(),
                   model="tiny", workload=workload.description)
    recorder = Recorder(open_for_write(str(db)), info, facts)
    summary = Engine(config, SimulatedExecutor(device), VirtualClock(), recorder).run(workload.requests)
    recorder.finish("finished", summary=summary.to_dict())
    return recorder.run_id
