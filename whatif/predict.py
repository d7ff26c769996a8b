"""A what-if prediction, prepared: the base run, the new configuration, the cost model it runs on
(with what was borrowed and what nothing measured) and the trust figures shown before it.

fit "run" prices steps with the base run's own fit; "pooled" with one fitted to every real run of
its model on its device except those of the predicted configuration (whatif/pooled_fit.py). The
track record then refits for each run it predicts, leaving that run's configuration out too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine

from engine.config import ConfigError, EngineConfig
from engine.executors.cost_model import CostModel
from storage.device_profiles import DeviceProfile, matching_profile
from storage.run_meta import Trust
from whatif.base_run import BaseRun
from whatif.pooled_fit import PooledFit, RunSteps, pooled_cost_model
from whatif.pricing import Priced, price_for_prediction
from whatif.trust import build_trust, config_changes

FITS = ("run", "pooled")


@dataclass(frozen=True)
class Prepared:
    base: BaseRun
    config: EngineConfig
    changes: dict[str, Any]  # parameters that differ from the base's configuration
    priced: Priced
    profile: DeviceProfile | None
    trust: Trust
    pooled: PooledFit | None = None  # with fit "pooled": the runs its cost model was fitted to


def base_profile(db: Engine, base: BaseRun) -> DeviceProfile | None:
    """The device profile of the base run's model, device, dtype and thread count, if one was measured."""
    facts = base.executor
    return matching_profile(db, base.model, facts.get("device"), facts.get("dtype"), facts.get("torch_threads"))


def prepare(db: Engine, base: BaseRun, config: EngineConfig, cost_model: CostModel | None = None,
            fit: str = "run") -> Prepared:
    """cost_model: run on this model instead of the base's (then nothing is borrowed)."""
    check_fit(base, fit, cost_model)
    profile = base_profile(db, base)
    if cost_model is not None or fit == "run":
        priced = Priced(cost_model) if cost_model is not None else priced_for(base, profile)
        return Prepared(base, config, config_changes(base.config, config), priced, profile,
                        build_trust(db, base, config, priced))
    steps: dict[int, RunSteps] = {}  # each run's steps read once, for this pool and the track record's
    pooled = pooled_cost_model(db, base.run_id, config, steps=steps)
    pool_base = on_pool(base, pooled)
    priced = priced_for(pool_base, profile)

    def refit(target: EngineConfig) -> CostModel:  # the track record's runs, each left out of its own pool
        refitted = pooled_cost_model(db, base.run_id, target, holdout=False, steps=steps)
        return priced_for(on_pool(base, refitted), profile).model

    who = f"the {len(pooled.run_ids)} pooled runs" if len(pooled.run_ids) > 1 else "the base"
    trust = build_trust(db, pool_base, config, priced, refit=refit, who=who)
    return Prepared(base, config, config_changes(base.config, config), priced, profile, trust, pooled)


def check_fit(base: BaseRun, fit: str, cost_model: CostModel | None) -> None:
    """ConfigError unless `fit` is known and can price this base (a pool needs real step times)."""
    if fit not in FITS:
        raise ConfigError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    if cost_model is not None and fit != "run":
        raise ConfigError(f"a given cost model and fit {fit!r} both choose the step costs: give one")
    if fit == "pooled" and base.mode != "real":
        raise ConfigError(f"run {base.run_id} is simulated: a pooled fit needs real runs' step times (use --fit run)")


def on_pool(base: BaseRun, pooled: PooledFit) -> BaseRun:
    """The base with the pool's cost model and what the pool's steps exercised."""
    return replace(base, cost_model=pooled.model, exercised=pooled.exercised)


def priced_for(base: BaseRun, profile: DeviceProfile | None) -> Priced:
    """The base's cost model with the costs it never exercised priced (whatif.pricing)."""
    return price_for_prediction(base.cost_model, base.mode, base.exercised, base.executor.get("kv_bytes_per_block"),
                                profile)
