"""A recorded real run from already-parsed flags: load the model, size the KV pool, serve, record.

`run`, sweeps (--real) and what-if validation all build real runs here, the same way.
"""

from __future__ import annotations

import argparse
import sys

from engine.clock import WallClock
from engine.config import EngineConfig
from engine.engine_args import EngineArgs, build_real_engine
from engine.snapshot import RunInfo, SweepTag
from engine.workload import Workload
from sessions.recorded import RecordTarget, SessionResult, run_session


def run_real_session(args: argparse.Namespace, config: EngineConfig | None, workload: Workload, name: str,
                     model: str | None = None, base_run_id: int | None = None, sweep: SweepTag | None = None,
                     source: str = "workload", validates_run_id: int | None = None,
                     progress: bool = True) -> SessionResult:
    """Serve `workload` with a real model built from the flags (EngineArgs). config: run under this
    config instead (what-if validation, sweeps); num_gpu_blocks None: sized from memory (printed)."""
    engine_args = EngineArgs.from_values(vars(args) | {"model": model or getattr(args, "model", None) or "tiny"})
    real = build_real_engine(engine_args, config)
    for line in real.describe():
        print(line, file=sys.stderr)
    if config is None or config.cache.num_gpu_blocks is None:
        warning = real.kv_pool.warning()
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    info = RunInfo(name=name, mode="real", batching=real.config.scheduler.batching, config=real.record_config(),
                   model=engine_args.model, workload=workload.description, source=source, base_run_id=base_run_id,
                   sweep=sweep, validates_run_id=validates_run_id)
    try:
        return run_session(real.config, real.executor, WallClock(), workload.requests, info,
                           RecordTarget(getattr(args, "db", None), enabled=not getattr(args, "no_record", False)),
                           progress=progress, max_concurrency=getattr(args, "max_concurrency", None))
    finally:
        real.executor.shutdown()
