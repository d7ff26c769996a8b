"""`python -m engine run`: the scheduler driving a real torch model on a wall clock, recorded.

Same flags as `simulate`, plus the model and where it runs. torch is imported only when this
command runs, so `python -m engine --help` stays fast.
"""

from __future__ import annotations

import argparse

from cli.args import (
    add_engine_args,
    add_model_args,
    add_output_args,
    add_workload_args,
    engine_config_from_args,
    workload_options_from_args,
)
from cli.simulate import print_rejections, print_summary
from engine.workload import resolve_workload
from sessions.real import run_real_session


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("run", help="serve a workload with a real model (torch), recorded step by step")
    add_model_args(p, model_default="tiny")
    add_engine_args(p)
    add_workload_args(p)
    add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    engine_config_from_args(args)  # bad flags fail here, before a model is loaded
    workload = resolve_workload(args.workload, workload_options_from_args(args))
    sched = f"{args.batching or 'continuous'}, {args.max_num_seqs or 64} seqs"
    name = args.name or f"run {args.workload or 'mixed'} on {args.model} ({sched})"
    result = run_real_session(args, None, workload, name=name)
    print_rejections(result.rejections)
    print_summary(result.summary.to_dict() | {"run_id": result.run_id, "status": result.status},
                  result.summary.format(), args.json, result.run_id)
    return 0
