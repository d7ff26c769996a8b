"""`python -m engine simulate`: the real scheduler on a virtual clock with a cost model, no torch."""

from __future__ import annotations

import argparse
import json
import sys

from cli.args import (
    DEFAULT_SIM_GPU_BLOCKS,
    add_engine_args,
    add_output_args,
    add_workload_args,
    chosen_cost_model,
    engine_config_from_args,
    positive_int,
    workload_options_from_args,
)
from engine.clock import VirtualClock
from engine.config import ConfigError, EngineConfig
from engine.executors.cost_model import named_cost_model
from engine.executors.simulated import SimulatedExecutor
from engine.snapshot import RunInfo
from engine.workload import resolve_workload
from sessions.recorded import RecordTarget, run_session


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("simulate", help="run the scheduler on a virtual clock with a cost model")
    add_engine_args(p)
    add_workload_args(p)
    p.add_argument("--cost-model", choices=("default", "unit"), default=None,
                   help="default: step time from batch shape (fitted on `tiny`); unit: every step costs 1 "
                        "(with --from-run: the model fitted to that run)")
    p.add_argument("--cost-model-file", default=None, metavar="JSON",
                   help="a cost model written by `python -m engine profile -o` (overrides --cost-model)")
    what_if = p.add_argument_group("what-if")
    what_if.add_argument("--from-run", type=positive_int, metavar="RUN",
                         help="replay run RUN's exact requests with its fitted cost model; engine flags given "
                              "here change its configuration")
    what_if.add_argument("--fit", choices=("run", "pooled"), default="run",
                         help="with --from-run: price steps with the base run's own fit (run), or with one fitted "
                              "to every real run of its model on its device, dtype and thread count except those "
                              "of the predicted configuration (pooled: shapes one run never showed)")
    what_if.add_argument("--validate", action="store_true",
                         help="with --from-run: then run the real engine with the same parameters and record "
                              "the prediction error")
    what_if.add_argument("--model", default=None, help="with --validate: the model for the real run "
                                                      "(default: the base run's, else tiny)")
    add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.from_run is not None:
        from cli.what_if import run_what_if

        return run_what_if(args)
    if args.validate:
        raise ConfigError("--validate needs --from-run RUN")
    if args.fit != "run":
        raise ConfigError("--fit needs --from-run RUN")
    workload_name = args.workload or "mixed"
    config = engine_config_from_args(args, num_gpu_blocks=DEFAULT_SIM_GPU_BLOCKS)
    workload = resolve_workload(workload_name, workload_options_from_args(args))
    executor = SimulatedExecutor(chosen_cost_model(args) or named_cost_model("default"))
    info = RunInfo(
        name=args.name or default_run_name("simulate", workload_name, config),
        mode="simulated",
        batching=config.scheduler.batching,
        config=config.to_dict(),
        model=None,
        workload=workload.description,
    )
    result = run_session(config, executor, VirtualClock(), workload.requests, info,
                         RecordTarget(args.db, enabled=not args.no_record), max_concurrency=args.max_concurrency)
    print_rejections(result.rejections)
    print_summary(result.summary.to_dict() | {"run_id": result.run_id, "status": result.status},
                  result.summary.format(), args.json, result.run_id)
    return 0


def default_run_name(verb: str, workload: str, config: EngineConfig) -> str:
    sched = config.scheduler
    return f"{verb} {workload} ({sched.batching}, {sched.max_num_seqs} seqs)"


MAX_REJECTIONS_SHOWN = 5


def print_rejections(rejections: dict[str, str]) -> None:
    """Why requests were refused (the first few, on stderr): the summary only counts them."""
    for rid, reason in list(rejections.items())[:MAX_REJECTIONS_SHOWN]:
        print(f"rejected {rid}: {reason}", file=sys.stderr)
    if len(rejections) > MAX_REJECTIONS_SHOWN:
        print(f"... and {len(rejections) - MAX_REJECTIONS_SHOWN} more rejected", file=sys.stderr)


def print_summary(data: dict[str, object], text: str, as_json: bool, run_id: int | None) -> None:
    if as_json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    print(text)
    if run_id is not None:
        print(f"recorded as run {run_id}")
