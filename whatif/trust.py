"""How far to trust a prediction, shown before it, every figure out of sample:

- the step-time fit on steps it never saw (contiguous blocks of the base run held out in turn);
- an extrapolation warning for every changed parameter or feature the base run never exercised,
  naming what the prediction then rests on;
- the measured track record: predictions from this base of every real run of the same workload
  under another configuration, each beside the "nothing changes" answer (the base's own figures),
  and how far the cost model misprices that run's own recorded steps (whatif/step_pricing.py: what
  of the error is step times rather than the scheduling replay).

The replay of the base under its own configuration stays, labelled as what it is: a consistency
check of the replay (in sample by construction), not an accuracy figure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from engine.config import EngineConfig
from engine.executors.cost_model import CostModel
from storage.run_facts import runs_of_workload
from storage.run_meta import Comparison, TrackRecordEntry, Trust
from whatif.base_run import (
    BaseRun,
    percent_errors,
    recorded_metrics,
    simulate_quietly,
    summary_metrics,
)
from whatif.pricing import Priced
from whatif.step_pricing import step_time_error_pct

MAX_TRACK_RECORD = 12  # newest real runs of the workload replayed per prediction
POOR_FIT_PCT = 20.0  # held-out median step error above which a prediction is flagged


def build_trust(db: Engine, base: BaseRun, config: EngineConfig, priced: Priced,
                refit: Callable[[EngineConfig], CostModel] | None = None, who: str = "the base") -> Trust:
    """refit: the cost model to predict a track-record run of this configuration with (a pooled fit
    leaves that configuration's runs out); None: priced.model for every one. who: what the
    exercised facts describe, in the warnings."""
    return Trust(holdout=holdout_of(base), warnings=extrapolation_warnings(base, config, priced, who),
                 track_record=track_record(db, base, priced.model, refit),
                 consistency=consistency_check(base, priced.model), borrowed=list(priced.borrowed))


def holdout_of(base: BaseRun) -> dict[str, Any]:
    if base.mode != "real":
        return {"folds": 0, "reason": "a simulated base: its steps came from this cost model, so any fit is exact "
                                      "by construction and says nothing about a real device"}
    fit = getattr(base.cost_model, "fit", {}) or {}
    return dict(fit.get("holdout") or {"folds": 0, "reason": "no held-out figures for this fit"})


def extrapolation_warnings(base: BaseRun, config: EngineConfig, priced: Priced, who: str = "the base") -> list[str]:
    """One line per changed parameter or feature outside what the base run exercised (who: the runs
    base.exercised describes, when a pooled fit widened them)."""
    ex, old, new = base.exercised, base.config, config
    warnings: list[str] = []
    if base.meta.before_truthful_engine:
        warnings.append("the base run was recorded before decode attention cost followed the context it attends and "
                        "before static batching was really static: its step costs mean something else")
    held = holdout_of(base)
    if held.get("folds") and held.get("median_abs_pct_error", 0) > POOR_FIT_PCT:
        warnings.append(f"the step-time fit is poor on steps it did not see (median error "
                        f"{held['median_abs_pct_error']:.0f}%): every figure below inherits it")
    if new.scheduler.max_num_seqs > ex["max_seqs"] and ex["max_seqs"]:
        warnings.append(f"max_num_seqs {new.scheduler.max_num_seqs}: {who} never ran more than {ex['max_seqs']:.0f} "
                        "sequences in a step; larger batches are priced by extending the linear fit")
    if new.scheduler.token_budget > ex["max_tokens"] * 1.25 and new.scheduler.token_budget > old.scheduler.token_budget:
        warnings.append(f"max_num_batched_tokens {new.scheduler.token_budget}: the largest step of {who} held "
                        f"{ex['max_tokens']:.0f} tokens; larger steps are priced by extending the linear fit")
    if _pool(new) < ex["max_used_blocks"] and ex["preemptions"] == 0:
        mode = new.scheduler.preemption_mode
        rests = ("prompt-token cost (recompute is a prefill)" if mode == "recompute"
                 else "the block-copy cost below" if new.cache.swap_space else "prompt-token cost")
        warnings.append(f"num_gpu_blocks {_pool(new)}: {who} never preempted (using up to "
                        f"{ex['max_used_blocks']:.0f} blocks); preemptions are priced by the fit's {rests}")
    if new.scheduler.preemption_mode == "swap" and ex["swap_blocks"] == 0:
        warnings.extend(priced.unmeasured or [f"swap preemption: {who} never swapped; {b}"
                                              for b in priced.borrowed if "swap" in b])
    if new.scheduler.batching == "static" and ex["padding_tokens"] == 0:
        how = next((b for b in priced.borrowed if "pad rows" in b), "pad rows priced by the base's cost model")
        warnings.append(f"static batching: {who} computed no pad rows; {how}")
        if ex.get("padding_seqs", 0) == 0:
            logits = next((b for b in priced.borrowed if "logits" in b), "finished members' logits priced by the "
                          "base's cost model")
            warnings.append(f"static batching: {who} had no finished members decoding pad rows; {logits}")
    if new.scheduler.enable_chunked_prefill and not old.scheduler.enable_chunked_prefill:
        warnings.append("chunked prefill: the base never split a prompt; chunks attending earlier context are priced "
                        "by its query-key-pair cost, fitted on whole prompts")
    if new.scheduler.policy == "sjf" and base.meta.lengths_declared:
        warnings.append("sjf here knows every output length: each request declared max_tokens equal to its true "
                        "length (record with --max-tokens-cap for a realistic sjf)")
    if base.mode != "real":
        warnings.append("the base run is simulated: the prediction is only as good as its cost model, which no real "
                        "run measured here")
    return warnings


def _pool(config: EngineConfig) -> int:
    return config.cache.num_gpu_blocks or 0


def consistency_check(base: BaseRun, cost_model: CostModel) -> Comparison:
    """The replay of the base under its own configuration, against what it recorded (in sample)."""
    predicted = summary_metrics(simulate_quietly(base.config, cost_model, base.workload))
    return Comparison(predicted, base.recorded, percent_errors(predicted, base.recorded))


def track_record(db: Engine, base: BaseRun, cost_model: CostModel,
                 refit: Callable[[EngineConfig], CostModel] | None = None) -> list[TrackRecordEntry]:
    """Predict, from this base, every other finished real run of exactly the same requests (each on
    refit(its configuration) when given, else on cost_model)."""
    if not base.meta.workload_key:
        return []
    entries = []
    for row in runs_of_workload(db, base.meta.workload_key, base.run_id).head(MAX_TRACK_RECORD).itertuples():
        values = json.loads(row.config) if isinstance(row.config, str) else dict(row.config)
        config = EngineConfig.from_record(values)
        actual = recorded_metrics(db, int(row.id))
        model = refit(config) if refit is not None else cost_model
        predicted = summary_metrics(simulate_quietly(config, model, base.workload))
        entries.append(TrackRecordEntry(int(row.id), config_changes(base.config, config),
                                        Comparison(predicted, actual, percent_errors(predicted, actual)),
                                        percent_errors(base.recorded, actual),
                                        step_time_error_pct(db, model, int(row.id))))
    return entries


def config_changes(old: EngineConfig, new: EngineConfig) -> dict[str, Any]:
    a, b = old.to_dict(), new.to_dict()
    return {k: v for k, v in b.items() if a.get(k) != v}
