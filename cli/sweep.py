"""`python -m engine sweep --param max_num_seqs --values 1,2,4,8`: one recorded run per value.

Every run of a sweep shares a sweep id, so the Curves page can draw throughput against latency
with one point per value. Any numeric engine parameter, the categorical ones (batching static vs
continuous, policy, preemption mode, chunked prefill), or the workload's request rate.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import uuid
from dataclasses import replace
from typing import Any

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
from engine.config import BATCHING_MODES, POLICIES, PREEMPTION_MODES, ConfigError, EngineConfig
from engine.executors.cost_model import CostModel, named_cost_model
from engine.executors.simulated import SimulatedExecutor
from engine.metrics import RunSummary
from engine.snapshot import RunInfo, SweepTag
from engine.workload import Workload, resolve_workload
from sessions.recorded import RecordTarget, run_session

INT_PARAMS = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "block_size", "num_gpu_blocks",
              "swap_space")
FLOAT_PARAMS = ("scheduler_delay_factor", "request_rate")
CHOICE_PARAMS: dict[str, tuple[str, ...]] = {
    "batching": BATCHING_MODES, "policy": POLICIES, "preemption_mode": PREEMPTION_MODES,
    "enable_chunked_prefill": ("false", "true"),
}
SWEEPABLE = INT_PARAMS + FLOAT_PARAMS + tuple(CHOICE_PARAMS)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("sweep", help="record one run per value of a parameter (for the Curves page)")
    p.add_argument("--param", required=True, choices=SWEEPABLE, help="the parameter to vary")
    p.add_argument("--values", required=True, help="comma-separated values, e.g. 1,2,4,8,16 or static,continuous")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--simulate", dest="real", action="store_false", help="simulated runs (default)")
    mode.add_argument("--real", dest="real", action="store_true", help="real runs with a model")
    p.add_argument("--model", default="tiny", help="with --real: the model (tiny)")
    p.add_argument("--device", default=None, help="with --real: cuda or cpu (default: cuda when present)")
    p.add_argument("--cost-model", choices=("default", "unit"), default=None, help="simulated: the cost model")
    p.add_argument("--cost-model-file", default=None, metavar="JSON", help="simulated: a profiled cost model")
    p.add_argument("--from-run", type=positive_int, metavar="RUN",
                   help="sweep over run RUN's recorded requests and configuration (simulated with its fitted model)")
    add_engine_args(p)
    add_workload_args(p)
    add_output_args(p)
    p.set_defaults(func=run, real=False)


def parse_values(param: str, text: str) -> list[Any]:
    raw = [v.strip() for v in text.split(",") if v.strip()]
    if not raw:
        raise ConfigError("--values needs at least one value")
    values: list[Any] = []
    for item in raw:
        if param in INT_PARAMS:
            try:
                values.append(int(item))
            except ValueError:
                raise ConfigError(f"--values for {param} must be whole numbers, got {item!r}") from None
        elif param in FLOAT_PARAMS:
            try:
                values.append(float(item))
            except ValueError:
                raise ConfigError(f"--values for {param} must be numbers, got {item!r}") from None
        else:
            if item not in CHOICE_PARAMS[param]:
                raise ConfigError(f"--values for {param} must be among {', '.join(CHOICE_PARAMS[param])}, "
                                  f"got {item!r}")
            values.append(item == "true" if param == "enable_chunked_prefill" else item)
    return values


def run(args: argparse.Namespace) -> int:
    values = parse_values(args.param, args.values)
    if args.param == "request_rate":
        if args.from_run is not None:
            raise ConfigError("request_rate cannot be swept over a recorded workload (its arrivals are fixed)")
        if any(math.isnan(v) or v <= 0 for v in values):
            raise ConfigError(f"request_rate values must be > 0, got {args.values!r}")
    base_config, workload, cost_model, model = _base(args)
    # Every value builds its configuration before any run starts: a bad value records nothing.
    configs = [base_config if args.param == "request_rate" else _with_value(base_config, args.param, value)
               for value in values]
    sweep_id = uuid.uuid4().hex[:12]
    rows = []
    for value, config in zip(values, configs, strict=True):
        run_workload = workload
        if args.param == "request_rate":
            run_workload = resolve_workload(args.workload, replace(workload_options_from_args(args),
                                                                   request_rate=value))
        summary, run_id, status = _one_run(args, config, run_workload, cost_model, model, sweep_id, value)
        rows.append({"value": value, "run_id": run_id, **_metrics(summary)})
        if not args.json:
            print(f"{args.param}={value}: {summary.output_tokens_per_s:.1f} tok/s, "
                  f"E2E p50 {_ms(summary.e2e_s.p50)} p99 {_ms(summary.e2e_s.p99)} ms, run {run_id}", flush=True)
        if status == "aborted":  # SIGINT/SIGTERM stops the sweep, not only its current run
            print(f"sweep stopped by a signal after {len(rows)} of {len(values)} runs", file=sys.stderr)
            break
    if args.json:
        json.dump({"sweep_id": sweep_id, "param": args.param, "runs": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"sweep {sweep_id}: {len(rows)} runs of {args.param}")
    return 0


def _with_value(config: EngineConfig, param: str, value: Any) -> EngineConfig:
    try:
        return config.replace(**{param: value})
    except ConfigError as exc:
        raise ConfigError(f"--values: {param}={value} is not a valid configuration, so no run was started: "
                          f"{exc}") from None


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1e3:.1f}"


def _metrics(summary: RunSummary) -> dict[str, Any]:
    return {"output_tokens_per_s": summary.output_tokens_per_s, "e2e_mean": summary.e2e_s.mean,
            "e2e_p99": summary.e2e_s.p99, "ttft_p50": summary.ttft_s.p50, "ttft_p99": summary.ttft_s.p99,
            "preemptions": summary.num_preemptions}


def _base(args: argparse.Namespace) -> tuple[EngineConfig, Workload, CostModel | None, str | None]:
    """The configuration, workload and (simulated) cost model every run of the sweep starts from."""
    if args.from_run is not None:
        if args.real:
            raise ConfigError("--from-run sweeps are simulated; drop --real")
        from storage.database import open_for_write
        from whatif.base_run import load_base_run

        base = load_base_run(open_for_write(args.db, create=False), args.from_run)
        cost = chosen_cost_model(args) or base.cost_model
        return engine_config_from_args(args, base=base.config), base.workload, cost, base.model
    workload = resolve_workload(args.workload, workload_options_from_args(args))
    if args.real:
        return engine_config_from_args(args), workload, None, args.model
    config = engine_config_from_args(args, num_gpu_blocks=DEFAULT_SIM_GPU_BLOCKS)
    return config, workload, chosen_cost_model(args) or named_cost_model("default"), None


def _one_run(args: argparse.Namespace, config: EngineConfig, workload: Workload, cost_model: CostModel | None,
             model: str | None, sweep_id: str, value: Any) -> tuple[RunSummary, int | None, str]:
    name = args.name or "sweep"
    sweep = SweepTag(sweep_id, args.param, str(value))
    if cost_model is not None:
        info = RunInfo(name=f"{name} {args.param}={value}", mode="simulated", batching=config.scheduler.batching,
                       config=config.to_dict(), model=model, workload=workload.description,
                       source="what-if" if args.from_run is not None else "workload", base_run_id=args.from_run,
                       sweep=sweep)
        result = run_session(config, SimulatedExecutor(cost_model), VirtualClock(), workload.requests, info,
                             RecordTarget(args.db, enabled=not args.no_record))
        return result.summary, result.run_id, result.status
    from sessions.real import run_real_session

    result = run_real_session(args, config, workload, name=f"{name} {args.param}={value}", model=model,
                              sweep=sweep, progress=False)
    return result.summary, result.run_id, result.status
