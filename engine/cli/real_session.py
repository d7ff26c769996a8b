"""A recorded real run from already-parsed flags: load the model, size the KV pool, serve, record.

`run`, sweeps (--real) and what-if validation all build real runs here, the same way.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.args import engine_config_from_args
from engine.cli.session import RecordTarget, SessionResult, run_session
from engine.clock import WallClock
from engine.config import EngineConfig
from engine.snapshot import RunInfo
from engine.workload import Workload

DEFAULT_CPU_MEMORY_GIB = 4.0  # mirrors kv_pool_sizing (not imported at module level: it imports torch)
DEFAULT_MAX_MODEL_LEN = 2048  # unless the model has fewer positions


def run_real_session(args: argparse.Namespace, config: EngineConfig | None, workload: Workload, name: str,
                     model: str | None = None, sweep_id: str | None = None, base_run_id: int | None = None,
                     extra: dict[str, Any] | None = None, progress: bool = True) -> SessionResult:
    """Serve `workload` with a real model. config None: from the flags, with max_model_len fitted to
    the model's positions when not given; num_gpu_blocks None: sized from memory (printed)."""
    from engine.executors.kv_pool_sizing import choose_kv_pool
    from engine.executors.model_loading import load_model
    from engine.executors.torch_executor import TorchExecutor

    model = model or getattr(args, "model", None) or "tiny"
    loaded = load_model(model, getattr(args, "device", None), getattr(args, "dtype", None))
    if config is None:
        given_len = getattr(args, "max_model_len", None)
        if given_len is None:  # the default, fitted to the model's positions and attention window
            caps = (loaded.max_position_embeddings, loaded.sliding_window)
            args.max_model_len = min([DEFAULT_MAX_MODEL_LEN, *(c for c in caps if c)])
        config = engine_config_from_args(args)
    if config.cache.num_gpu_blocks is None:
        pool = choose_kv_pool(loaded, config.scheduler, config.cache,
                              getattr(args, "cpu_memory_gib", None) or DEFAULT_CPU_MEMORY_GIB)
        print(pool.describe(), file=sys.stderr)
        if pool.warning():
            print(f"warning: {pool.warning()}", file=sys.stderr)
        config = config.replace(num_gpu_blocks=pool.num_gpu_blocks)
    executor = TorchExecutor(loaded, config, seed=getattr(args, "seed", 0) or 0)
    facts = executor.describe()
    print(f"model: {model} ({loaded.architecture}, {loaded.num_params / 1e6:.1f}M params) on {facts['device']} "
          f"{facts['dtype']}, peak {facts['peak_flops'] / 1e9:,.0f} GFLOP/s", file=sys.stderr)
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
