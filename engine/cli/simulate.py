"""`python -m engine simulate`: the real scheduler on a virtual clock with a cost model, no torch."""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli.args import (
    DEFAULT_SIM_GPU_BLOCKS,
    add_engine_args,
    add_output_args,
    add_workload_args,
    engine_config_from_args,
    workload_options_from_args,
)
from engine.cli.session import RecordTarget, run_session
from engine.clock import VirtualClock
from engine.config import EngineConfig
from engine.executors.cost_model import named_cost_model
from engine.executors.simulated import SimulatedExecutor
from engine.snapshot import RunInfo
from engine.workload import resolve_workload


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("simulate", help="run the scheduler on a virtual clock with a cost model")
    add_engine_args(p)
    add_workload_args(p)
    p.add_argument("--cost-model", choices=("default", "unit"), default="default",
                   help="default: step time from batch shape (fitted on `tiny`); unit: every step costs 1")
    add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = engine_config_from_args(args, num_gpu_blocks=args.num_gpu_blocks or DEFAULT_SIM_GPU_BLOCKS)
    workload = resolve_workload(args.workload, workload_options_from_args(args))
    executor = SimulatedExecutor(named_cost_model(args.cost_model))
    info = RunInfo(
        name=args.name or default_run_name("simulate", args.workload, config),
        mode="simulated",
        batching=config.scheduler.batching,
        config=config.to_dict(),
        model=None,
        workload=workload.description,
    )
    result = run_session(config, executor, VirtualClock(), workload.requests, info,
                         RecordTarget(args.db, enabled=not args.no_record))
    print_summary(result.summary.to_dict() | {"run_id": result.run_id, "status": result.status},
                  result.summary.format(), args.json, result.run_id)
    return 0


def default_run_name(verb: str, workload: str, config: EngineConfig) -> str:
    sched = config.scheduler
    return f"{verb} {workload} ({sched.batching}, {sched.max_num_seqs} seqs)"


def print_summary(data: dict[str, object], text: str, as_json: bool, run_id: int | None) -> None:
    if as_json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    print(text)
    if run_id is not None:
        print(f"recorded as run {run_id}")
