"""`python -m engine simulate --from-run RUN [changes]`: what if run RUN had other parameters?

The trust figures come first, all out of sample (whatif/trust.py): the step-time fit on held-out
steps, a warning for every change outside what the base run exercised, and the track record of
predicting real runs of the same workload, beside the "nothing changes" answer. Then the
prediction, recorded as a run linked to its base.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from sqlalchemy import Engine as SqlEngine

from cli.args import chosen_cost_model, engine_config_from_args, given_engine_flags
from engine.clock import VirtualClock
from engine.config import ConfigError
from engine.executors.cost_model import LinearCostModel, idle_wake_note
from engine.executors.simulated import SimulatedExecutor
from engine.snapshot import RunInfo
from sessions.recorded import RecordTarget, run_session
from storage.database import open_for_write
from storage.run_meta import Trust, WhatIfNote, write_what_if
from whatif.base_run import BaseRun, load_base_run, percent_errors, summary_metrics
from whatif.pooled_fit import PooledFit
from whatif.predict import prepare

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
    try:
        return _what_if(args, writer)
    finally:
        writer.dispose()


def _what_if(args: argparse.Namespace, writer: SqlEngine) -> int:
    base = load_base_run(writer, args.from_run)
    changes = given_engine_flags(args)
    config = engine_config_from_args(args, base=base.config)
    prepared = prepare(writer, base, config, chosen_cost_model(args), fit=args.fit)
    cost_model = prepared.priced.model
    if not args.json:
        wake = idle_wake_note(cost_model.fit) if isinstance(cost_model, LinearCostModel) else None
        print_trust(base, prepared.trust, prepared.priced.borrowed + ([wake] if wake else []), cost_model.name,
                    prepared.pooled)
    info = RunInfo(
        name=args.name or f"what-if of run {base.run_id}: {describe_changes(changes)}",
        mode="simulated", batching=config.scheduler.batching, config=config.to_dict(), model=base.model,
        workload=base.workload.description, source="what-if", base_run_id=base.run_id,
    )
    result = run_session(config, SimulatedExecutor(cost_model), VirtualClock(), base.workload.requests, info,
                         RecordTarget(args.db, enabled=not args.no_record))
    if result.run_id is not None:
        write_what_if(writer, result.run_id, WhatIfNote(base.run_id, changes, prepared.trust, cost_model.name, args.fit,
                                                         list(prepared.pooled.run_ids) if prepared.pooled else []))
    predicted = summary_metrics(result.summary)
    report: dict[str, Any] = {
        "base_run_id": base.run_id, "run_id": result.run_id, "changes": changes,
        "trust": asdict(prepared.trust), "borrowed_costs": prepared.priced.borrowed,
        "recorded": base.recorded, "predicted": predicted,
        "change_pct": percent_errors(predicted, base.recorded),
        "fit": args.fit,
        "pooled_runs": list(prepared.pooled.run_ids) if prepared.pooled else None,
        "left_out_runs": list(prepared.pooled.left_out) if prepared.pooled else None,
        "cost_model": (chosen_cost_model(args) or (prepared.pooled.model if prepared.pooled else base.cost_model)
                       ).to_dict(),  # as fitted (the run's own fit is stored with the base)
        "prediction_cost_model": cost_model.to_dict(),  # what the prediction ran on: the fit plus borrowed costs
    }
    if args.validate:
        from whatif.validate import validate_prediction

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


def print_trust(base: BaseRun, trust: Trust, borrowed: list[str], cost_model: str,
                pooled: PooledFit | None = None) -> None:
    """What the prediction below rests on, before it."""
    print(f"trust: run {base.run_id} ({base.mode}), cost model: {cost_model}")
    if pooled is not None:
        left_out = ", ".join(map(str, pooled.left_out))
        print(f"  pooled fit: the steps of runs {', '.join(map(str, pooled.run_ids))}"
              + (f"; left out, as runs of the predicted configuration: {left_out}" if left_out else ""))
    held = trust.holdout
    if held.get("folds"):
        print(f"  step-time fit on held-out steps ({held['folds']} contiguous blocks): R² {held['r2']:.2f}, "
              f"median error {held['median_abs_pct_error']:.1f}%, p90 {held['p90_abs_pct_error']:.1f}%")
    else:
        print(f"  no held-out fit figures: {held.get('reason', 'none recorded')}")
    for line in borrowed:
        print(f"  cost: {line}")
    for line in trust.warnings:
        print(f"  warning: {line}")
    if trust.track_record:
        print(f"  track record: predicting {len(trust.track_record)} real run(s) of the same requests from this base")
        print(f"    {'run':>5} {'changes':<34}" + "".join(f"{k:>15}" for k in ("tok/s", "TTFT p50", "E2E p50",
                                                                             "E2E p99")) + f"{'step times':>12}")
        keys = ("output_tokens_per_s", "ttft_p50", "e2e_p50", "e2e_p99")
        for entry in trust.track_record:
            cells = "".join(f"{_pct(entry.simulated.error_pct.get(k)):>8}/{_pct(entry.null_error_pct.get(k)):>7}"
                            for k in keys)
            print(f"    {entry.real_run_id:>5} {describe_changes(entry.changes)[:34]:<34}{cells}"
                  f"{_pct(entry.step_time_error_pct):>12}")
        print("    (simulator error / \"nothing changes\" error, each against the real run; step times: the cost model"
              " on that run's own recorded steps, what of the error is step times rather than the schedule)")
    else:
        print("  track record: no real run of these requests under another configuration yet (--validate adds one)")
    check = trust.consistency
    if check is not None:
        worst = max((abs(v) for v in check.error_pct.values() if v is not None), default=0.0)
        print(f"  consistency check (in sample, not an accuracy figure): the replay of run {base.run_id} under its "
              f"own configuration is within {worst:.1f}% of what it recorded")
    print()


def print_report(base: BaseRun, report: dict[str, Any]) -> None:
    print(f"what-if: {describe_changes(report['changes'])}")
    print(f"  {'metric':<18}{'recorded':>12}{'predicted':>12}{'change':>9}")
    for key, label in LABELS.items():
        print(f"  {label:<18}{_fmt(key, report['recorded'][key]):>12}{_fmt(key, report['predicted'][key]):>12}"
              f"{_pct(report['change_pct'][key]):>9}")
    if report.get("run_id") is not None:
        print(f"\nrecorded as run {report['run_id']} (based on run {base.run_id})")
    validation = report.get("validation")
    if validation:
        print(f"\nvalidation: real run {validation['real_run_id']}")
        print_validation_table(validation["predicted"], validation["real"], validation["error_pct"])


def print_validation_table(predicted: dict[str, Any], real: dict[str, Any], error_pct: dict[str, Any]) -> None:
    """Predicted vs real, metric by metric, and the prediction's error."""
    print(f"  {'metric':<18}{'predicted':>12}{'real':>12}{'error':>9}")
    for key, label in LABELS.items():
        print(f"  {label:<18}{_fmt(key, predicted[key]):>12}{_fmt(key, real[key]):>12}{_pct(error_pct[key]):>9}")
