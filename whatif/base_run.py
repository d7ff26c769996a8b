"""A recorded run as the base of a what-if: its config, its exact workload, its cost model.

The workload is the recorded requests themselves (arrival times, prompt lengths, priorities)
with each finished request forced to the output length it really produced, so a replay sends
the same work. The cost model is fitted once to a real run's step times and stored with it; a
simulated run already carries the model that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, update

from engine.clock import VirtualClock
from engine.config import EngineConfig
from engine.engine_loop import Engine as ServingEngine
from engine.executors.cost_fit import FIT_VERSION, fit_cost_model, holdout_quality, with_idle_wake
from engine.executors.cost_model import FEATURES, CostModel, cost_model_from_dict
from engine.executors.simulated import SimulatedExecutor
from engine.metrics import RunSummary
from engine.workload.spec import RequestSpec, Workload
from storage.database import StorageError
from storage.queries import get_run, latency_percentiles, run_requests
from storage.run_facts import exercised, step_features
from storage.run_meta import RunMeta, run_meta
from storage.schema import Run, table_of

# What a what-if reports, and how it is read from a RunSummary.
COMPARED_METRICS = ("output_tokens_per_s", "ttft_p50", "ttft_p99", "e2e_p50", "e2e_p99")


@dataclass(frozen=True)
class BaseRun:
    run_id: int
    name: str
    mode: str
    model: str | None
    config: EngineConfig
    workload: Workload
    cost_model: CostModel  # fitted to its steps (a real run), or the one that produced it (a simulated run)
    recorded: dict[str, float | None]  # COMPARED_METRICS as recorded
    executor: dict[str, Any]  # what its executor recorded: device, dtype, torch threads, or the cost model
    meta: RunMeta
    exercised: dict[str, float]  # what its steps exercised (storage.run_facts.exercised)



def recorded_workload(requests: pd.DataFrame, run_id: int) -> Workload:
    """Replayable specs: each request declares its recorded max_tokens and stops where it really
    stopped (a hidden stop no policy but sjf-oracle reads); aborted ones left out."""
    kept = requests[requests["finish_reason"] != "aborted"]
    specs = []
    for row in kept.itertuples(index=False):
        finished = row.finish_reason in ("stopped", "length") and row.output_len and row.output_len > 0
        specs.append(RequestSpec(
            request_id=str(row.request_id), arrival_time=float(row.arrival_time), max_tokens=int(row.max_tokens),
            prompt_len=int(row.prompt_len), priority=int(row.priority), ignore_eos=True,
            true_output_len=int(row.output_len) if finished else None,
        ))
    left_out = len(requests) - len(kept)
    desc = f"replay of run {run_id}: {len(specs)} recorded requests"
    if left_out:
        desc += f" ({left_out} aborted left out)"
    return Workload(tuple(specs), desc)


def recorded_metrics(reader: Engine, run_id: int) -> dict[str, float | None]:
    lat = latency_percentiles(reader, run_id).set_index("metric")
    reqs = run_requests(reader, run_id)
    last = reqs["finish_time"].max()
    tokens = reqs["output_len"].fillna(0).sum()
    return {
        "output_tokens_per_s": float(tokens / last) if last and last > 0 else None,
        "ttft_p50": _num(lat.loc["ttft", "p50"]), "ttft_p99": _num(lat.loc["ttft", "p99"]),
        "e2e_p50": _num(lat.loc["e2e", "p50"]), "e2e_p99": _num(lat.loc["e2e", "p99"]),
    }


def summary_metrics(summary: RunSummary) -> dict[str, float | None]:
    return {
        "output_tokens_per_s": summary.output_tokens_per_s,
        "ttft_p50": summary.ttft_s.p50, "ttft_p99": summary.ttft_s.p99,
        "e2e_p50": summary.e2e_s.p50, "e2e_p99": summary.e2e_s.p99,
    }


def percent_errors(predicted: dict[str, float | None], actual: dict[str, float | None]) -> dict[str, float | None]:
    """Signed error of each prediction, in percent of the actual value."""
    out: dict[str, float | None] = {}
    for key in COMPARED_METRICS:
        p, a = predicted.get(key), actual.get(key)
        out[key] = None if p is None or a is None or a == 0 else (p - a) / a * 100.0
    return out


def _num(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def fitted_cost_model(writer: Engine, run: dict[str, Any]) -> CostModel:
    """The run's stored cost model, fitting and storing one first for a real run without a current one
    (a model stored by an older fitter is fitted again: the steps it came from are still there)."""
    stored = run.get("cost_model")
    if stored and (run["mode"] != "real" or stored.get("fit", {}).get("version") == FIT_VERSION):
        return cost_model_from_dict(stored)
    if run["mode"] != "real":
        stored = (run.get("executor") or {}).get("cost_model")
        if not stored:
            raise StorageError(f"run {run['id']} is simulated but recorded no cost model to replay it with")
        return cost_model_from_dict(stored)
    frame = step_features(writer, run["id"])
    features = np.column_stack([np.ones(len(frame))] + [frame[f].to_numpy(float) for f in FEATURES[1:]])
    durations = frame["duration"].to_numpy(float)
    model = fit_cost_model(features, durations, name=f"fitted to run {run['id']}",
                           provenance={"run_id": run["id"], "model": run.get("model"),
                                       "holdout": holdout_quality(features, durations)})
    model = with_idle_wake(model, frame["wake"].to_numpy(float))
    with writer.begin() as conn:
        conn.execute(update(table_of(Run)).where(table_of(Run).c.id == run["id"]).values(cost_model=model.to_dict()))
    return model


def load_base_run(writer: Engine, run_id: int) -> BaseRun:
    run = get_run(writer, run_id)
    if run is None:
        raise StorageError(f"there is no run {run_id} in this database (python -m engine runs lists them)")
    if run["status"] == "running":
        raise StorageError(f"run {run_id} is still running; a what-if needs a finished run")
    requests = run_requests(writer, run_id)
    if requests.empty:
        raise StorageError(f"run {run_id} recorded no requests to replay")
    return BaseRun(
        run_id=run_id, name=run["name"], mode=run["mode"], model=run.get("model"),
        config=EngineConfig.from_record(run["config"]),
        workload=recorded_workload(requests, run_id),
        cost_model=fitted_cost_model(writer, run),
        recorded=recorded_metrics(writer, run_id),
        executor=dict(run.get("executor") or {}),
        meta=run_meta(run),
        exercised=exercised(writer, run_id),
    )


def simulate_quietly(config: EngineConfig, cost_model: CostModel, workload: Workload) -> RunSummary:
    """A simulation that is not recorded (the self-check)."""
    engine = ServingEngine(config, SimulatedExecutor(cost_model), VirtualClock())
    return engine.run(workload.requests)


def self_check(base: BaseRun) -> dict[str, Any]:
    """The simulator's own error on the base run's configuration: how far to trust a what-if."""
    predicted = summary_metrics(simulate_quietly(base.config, base.cost_model, base.workload))
    return {"predicted": predicted, "recorded": base.recorded, "error_pct": percent_errors(predicted, base.recorded)}
