"""A cost model fitted to every real run of one model on one device: the base run's steps pooled
with those of the other finished real runs of the same model, device, dtype and thread count.

One run's fit sees only the step shapes its configuration produced: a max_num_seqs 2 run never
shows what 32 decodes cost, and a straight line through its small steps misprices big ones. The
other runs of the same deployment have shown those shapes on the same hardware. Runs of exactly the
configuration being predicted are left out, so a prediction is never fitted to the outcome it is
scored against (the fidelity benchmark and the track record predict configurations that were run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from engine.config import EngineConfig
from engine.executors.cost_fit import fit_cost_model, holdout_quality, with_idle_wake
from engine.executors.cost_model import FEATURES, LinearCostModel
from storage.run_facts import exercised, step_features
from storage.run_meta import TRUTHFUL_ENGINE_SCHEMA
from storage.schema import Run, table_of

DEVICE_FACTS = ("device", "dtype", "torch_threads")  # what makes two runs' step times comparable
SUMMED = ("swap_blocks", "preemptions", "padding_tokens", "padding_seqs", "prefill_tokens", "num_steps")


@dataclass(frozen=True)
class RunSteps:
    """One run's fitting data: its step features (FEATURES order), durations, idle wake-ups (NaN for
    steps that did not follow one) and exercised facts."""

    features: np.ndarray
    durations: np.ndarray
    wakes: np.ndarray
    exercised: dict[str, float]


def run_steps(db: Engine, run_id: int) -> RunSteps:
    frame = step_features(db, run_id)
    features = np.column_stack([np.ones(len(frame))] + [frame[k].to_numpy(float) for k in FEATURES[1:]])
    return RunSteps(features, frame["duration"].to_numpy(float), frame["wake"].to_numpy(float), exercised(db, run_id))


@dataclass(frozen=True)
class PooledFit:
    model: LinearCostModel
    run_ids: tuple[int, ...]  # the runs whose steps it was fitted to, the base first
    left_out: tuple[int, ...]  # same model and device, but the predicted configuration: not used
    exercised: dict[str, float]  # what the pooled steps exercised, as storage.run_facts.exercised


def same_deployment_runs(db: Engine, run_id: int) -> list[dict[str, Any]]:
    """Finished real runs of the run's model on its device, dtype and thread count (itself included),
    oldest first; each as {id, config} (config: the EngineConfig it ran). Runs recorded before the
    truthful engine are left out: their step costs mean something else (the base itself stays, and
    its own warning says so)."""
    runs = table_of(Run)
    with db.connect() as conn:
        base = conn.execute(select(runs.c.model, runs.c.executor).where(runs.c.id == run_id)).mappings().first()
        if base is None or base["model"] is None:
            return []
        rows = conn.execute(select(runs.c.id, runs.c.config, runs.c.executor).where(
            runs.c.mode == "real", runs.c.status == "finished", runs.c.model == base["model"],
            (runs.c.recorded_schema >= TRUTHFUL_ENGINE_SCHEMA) | (runs.c.id == run_id))
            .order_by(runs.c.id)).mappings().all()
    facts = {k: (base["executor"] or {}).get(k) for k in DEVICE_FACTS}
    return [{"id": int(r["id"]), "config": EngineConfig.from_record(dict(r["config"] or {}))} for r in rows
            if {k: (r["executor"] or {}).get(k) for k in DEVICE_FACTS} == facts]


def pooled_cost_model(db: Engine, base_run_id: int, predicted: EngineConfig | None = None,
                      holdout: bool = True, steps: dict[int, RunSteps] | None = None) -> PooledFit:
    """predicted: the configuration being predicted; runs of exactly it are left out of the pool (the
    base is always kept). holdout: also measure the fit on held-out blocks of the pooled steps
    (contiguous, so each is mostly one run's). steps: runs already read, by id (filled as it reads),
    so several pools over one database read each run once."""
    candidates = same_deployment_runs(db, base_run_id)
    used = [base_run_id] + [r["id"] for r in candidates if r["id"] != base_run_id and r["config"] != predicted]
    left_out = tuple(r["id"] for r in candidates if r["id"] not in used)
    steps = {} if steps is None else steps
    for run_id in used:
        if run_id not in steps:
            steps[run_id] = run_steps(db, run_id)
    features = np.vstack([steps[r].features for r in used])
    durations = np.concatenate([steps[r].durations for r in used])
    provenance: dict[str, Any] = {"run_id": base_run_id, "pooled_runs": used, "left_out_runs": list(left_out)}
    if holdout:
        provenance["holdout"] = holdout_quality(features, durations)
    name = (f"fitted to {len(used)} runs of this model and device" if len(used) > 1
            else f"fitted to run {base_run_id} alone (no other real run of this model and device)")
    model = fit_cost_model(features, durations, name=name, provenance=provenance)
    model = with_idle_wake(model, np.concatenate([steps[r].wakes for r in used]))
    return PooledFit(model, tuple(used), left_out, pooled_exercised([steps[r].exercised for r in used]))


def pooled_exercised(per_run: list[dict[str, float]]) -> dict[str, float]:
    """Sums of the summed facts, maxima of the rest (largest batch, step, pool, context)."""
    keys = {k for facts in per_run for k in facts}
    return {k: (sum if k in SUMMED else max)(facts.get(k, 0.0) for facts in per_run) for k in keys}
