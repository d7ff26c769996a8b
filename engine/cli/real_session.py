"""A recorded real run from already-parsed flags: load the model, size the KV pool, serve, record.

`run` is the command for it; sweeps (--real) and what-if validation use the same path so every
real run is built the same way.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.session import RecordTarget, SessionResult, run_session
from engine.clock import WallClock
from engine.config import EngineConfig
from engine.snapshot import RunInfo
from engine.workload import Workload

DEFAULT_CPU_MEMORY_GIB = 4.0


def run_real_session(args: argparse.Namespace, config: EngineConfig, workload: Workload, name: str,
                     model: str | None = None, sweep_id: str | None = None, base_run_id: int | None = None,
                     extra: dict[str, Any] | None = None, progress: bool = True) -> SessionResult:
    """Serve `workload` with a real model under `config` (num_gpu_blocks None: sized from memory)."""
    from engine.executors.kv_pool_sizing import choose_kv_pool
    from engine.executors.model_loading import load_model
    from engine.executors.torch_executor import TorchExecutor

    model = model or getattr(args, "model", None) or "tiny"
    loaded = load_model(model, getattr(args, "device", None), getattr(args, "dtype", None))
    if config.cache.num_gpu_blocks is None:
        pool = choose_kv_pool(loaded, config.scheduler, config.cache,
                              getattr(args, "cpu_memory_gib", None) or DEFAULT_CPU_MEMORY_GIB)
        print(pool.describe(), file=sys.stderr)
        config = config.replace(num_gpu_blocks=pool.num_gpu_blocks)
    executor = TorchExecutor(loaded, config, seed=getattr(args, "seed", 0) or 0)
    facts = executor.describe()
    info = RunInfo(
        name=name, mode="real", batching=config.scheduler.batching,
        config=config.to_dict() | {"model": model, "device": facts["device"], "dtype": facts["dtype"]},
        model=model, workload=workload.description, base_run_id=base_run_id, sweep_id=sweep_id, extra=extra or {},
    )
    try:
        return run_session(config, executor, WallClock(), workload.requests, info,
                           RecordTarget(getattr(args, "db", None), enabled=not getattr(args, "no_record", False)),
                           progress=progress)
    finally:
        executor.shutdown()
