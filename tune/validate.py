"""`tune --validate`: the recommended point, materialized as a recorded simulated run, then served
for real with the same requests and configuration (engine/cli/real_session.py, as what-if
validation does); the prediction's error is stored with the simulated run (storage.run_meta) and
in the search's report. Both runs belong to the search (storage.searches.grouped_runs).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from sqlalchemy import Engine

from engine.config import EngineConfig
from sessions.real import run_real_session
from storage.queries import run_requests
from storage.run_meta import Comparison, ValidationNote, write_validation
from storage.searches import update_report
from tune.materialize import materialize
from tune.slo import SLO, SLO_KEYS
from tune.source import workload_from_source
from whatif.base_run import percent_errors, summary_metrics

FIGURES = ("output_tokens_per_s", "ttft_p50", "ttft_p99", "e2e_p50", "e2e_p99")


def figures_of_summary(summary: dict[str, Any]) -> dict[str, float | None]:
    """What a what-if compares (whatif.base_run.COMPARED_METRICS) from a stored RunSummary."""
    return {"output_tokens_per_s": summary.get("output_tokens_per_s"),
            "ttft_p50": (summary.get("ttft_s") or {}).get("p50"), "ttft_p99": (summary.get("ttft_s") or {}).get("p99"),
            "e2e_p50": (summary.get("e2e_s") or {}).get("p50"), "e2e_p99": (summary.get("e2e_s") or {}).get("p99")}


def recorded_goodput(db: Engine, run_id: int, slo: SLO) -> tuple[float, float]:
    """(goodput, attainment) of a recorded run, judged as tune judges a simulation (tune.slo)."""
    reqs = run_requests(db, run_id)
    if reqs.empty:
        return 0.0, 0.0
    done = reqs["finish_reason"].isin(["stopped", "length"]).to_numpy()
    good = done.copy()
    columns = {"ttft": reqs["ttft"], "tpot": reqs["tpot"].fillna(0.0), "e2e": reqs["e2e"]}  # tpot NULL: one token
    for key, limit in slo.thresholds().items():
        assert key in SLO_KEYS
        good &= (columns[key].to_numpy(float) <= limit)
    duration = float(np.nanmax(reqs["finish_time"].to_numpy(float))) if done.any() else 0.0
    n_good = int(good.sum())
    return (n_good / duration if duration > 0 else 0.0), n_good / len(reqs)


def validate_point(args: argparse.Namespace, writer: Engine, search_id: int, point: int, slo: SLO,
                   predicted: dict[str, Any]) -> dict[str, Any]:
    """predicted: the point's result (tune.evaluate.PointResult.to_dict())."""
    materialized = materialize(writer, search_id, point)
    from storage.searches import get_point, get_search

    search = get_search(writer, search_id)
    row = get_point(writer, search_id, point)
    assert search is not None and row is not None
    workload, base = workload_from_source(writer, search["workload_source"])
    model = args.model or (base.model if base is not None else None) or "tiny"
    result = run_real_session(args, EngineConfig.from_dict(row["config"]), workload,
                              name=f"validation of search {search_id} point {point}", model=model,
                              base_run_id=base.run_id if base is not None else None, source="validation",
                              validates_run_id=materialized.run_id)
    simulated = figures_of_summary(materialized.summary)
    real = summary_metrics(result.summary)
    errors = percent_errors(simulated, real)
    if result.run_id is not None:
        write_validation(writer, materialized.run_id, ValidationNote(result.run_id, model,
                                                                     Comparison(simulated, real, errors)))
    report: dict[str, Any] = {"point": point, "simulated_run_id": materialized.run_id, "real_run_id": result.run_id,
                              "model": model, "predicted": simulated, "real": real, "error_pct": errors}
    if result.run_id is not None:
        goodput, attainment = recorded_goodput(writer, result.run_id, slo)
        report |= {"predicted_goodput": predicted.get("goodput"), "real_goodput": goodput,
                   "predicted_attainment": predicted.get("attainment"), "real_attainment": attainment,
                   "real_meets_slo": attainment >= slo.needed(len(workload)) / max(len(workload), 1)}
        update_report(writer, search_id, validation=report)
    return report
