"""`python -m engine simulate --from-run RUN [changes]`: what if run RUN had other parameters?

The self-check comes first: the simulator replays the base run under its own configuration,
and its error against what was recorded says how far to trust the prediction.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.cli.args import engine_config_from_args, given_engine_flags
from engine.cli.base_run import BaseRun, load_base_run, percent_errors, self_check, summary_metrics
from engine.cli.session import RecordTarget, run_session
from engine.cli.simulate import chosen_cost_model
from engine.clock import VirtualClock
from engine.config import ConfigError
from engine.executors.simulated import SimulatedExecutor
from engine.snapshot import RunInfo
from storage.database import open_for_write
from storage.run_meta import Comparison, Trust, WhatIfNote, write_what_if

LABELS = {
    "output_tokens_per_s": "output tokens/s",
    "ttft_p50": "TTFT p50 (ms)", "ttft_p99": "TTFT p99 (ms)",
    "e2e_p50": "E2E p50 (ms)", "e2e_p99": "E2E p99 (ms)",
}


def describe_changes(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in changes.items()) or "no changes"


def run_what_if(args: argparse.Namespace) -> int:
    if args.workload is not None:
        raise ConfigError("--from-run replays the recorded requests; drop --workload")
    writer = open_for_write(args.db)
    base = load_base_run(writer, args.from_run)
    changes = given_engine_flags(args)
    config = engine_config_from_args(args, base=base.config)
    check = self_check(base)
    cost_model = chosen_cost_model(args) or base.cost_model
    info = RunInfo(
        name=args.name or f"what-if of run {base.run_id}: {describe_changes(changes)}",
        mode="simulated",
        batching=config.scheduler.batching,
        config=config.to_dict(),
        model=base.model,
        workload=base.workload.description,
        source="what-if",
        base_run_id=base.run_id,
    )
    result = run_session(config, SimulatedExecutor(cost_model), VirtualClock(), base.workload.requests, info,
                         RecordTarget(args.db, enabled=not args.no_record))
    if result.run_id is not None:
        consistency = Comparison(check["predicted"], check["recorded"], check["error_pct"])
        holdout = dict(getattr(cost_model, "fit", {}).get("holdout") or {})
        write_what_if(writer, result.run_id, WhatIfNote(base.run_id, changes, Trust(holdout, [], [], consistency),
                                                         cost_model.name))
    predicted = summary_metrics(result.summary)
    report: dict[str, Any] = {
        "base_run_id": base.run_id, "run_id": result.run_id, "changes": changes, "self_check": check,
        "recorded": base.recorded, "predicted": predicted,
        "change_pct": percent_errors(predicted, base.recorded),
        "cost_model": cost_model.to_dict(),
    }
    if args.validate:
        from engine.cli.validate import validate_prediction

        report["validation"] = validate_prediction(args, base, config, result.run_id, predicted)
    if args.json:
        json.dump(report, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print_report(base, report)
    return 0


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if key == "output_tokens_per_s" else f"{value * 1e3:.1f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def print_report(base: BaseRun, report: dict[str, Any]) -> None:
    check = report["self_check"]
    print(f"self-check: the simulator on run {base.run_id}'s own configuration ({base.mode} run, "
          f"cost model: {report['cost_model']['name']})")
    print(f"  {'metric':<18}{'recorded':>12}{'simulated':>12}{'error':>9}")
    for key, label in LABELS.items():
        print(f"  {label:<18}{_fmt(key, check['recorded'][key]):>12}{_fmt(key, check['predicted'][key]):>12}"
              f"{_pct(check['error_pct'][key]):>9}")
    print(f"\nwhat-if: {describe_changes(report['changes'])}")
    print(f"  {'metric':<18}{'recorded':>12}{'predicted':>12}{'change':>9}")
    for key, label in LABELS.items():
        print(f"  {label:<18}{_fmt(key, report['recorded'][key]):>12}{_fmt(key, report['predicted'][key]):>12}"
              f"{_pct(report['change_pct'][key]):>9}")
    if report.get("run_id") is not None:
        print(f"\nrecorded as run {report['run_id']} (based on run {base.run_id})")
    validation = report.get("validation")
    if validation:
        print(f"\nvalidation: real run {validation['real_run_id']}")
        print(f"  {'metric':<18}{'predicted':>12}{'real':>12}{'error':>9}")
        for key, label in LABELS.items():
            print(f"  {label:<18}{_fmt(key, validation['predicted'][key]):>12}{_fmt(key, validation['real'][key]):>12}"
                  f"{_pct(validation['error_pct'][key]):>9}")
