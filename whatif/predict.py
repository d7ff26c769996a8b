"""A what-if prediction, prepared: the base run, the new configuration, the cost model it runs on
(with what was borrowed and what nothing measured) and the trust figures shown before it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from engine.config import EngineConfig
from engine.executors.cost_model import CostModel
from storage.device_profiles import DeviceProfile, matching_profile
from storage.run_meta import Trust
from whatif.base_run import BaseRun
from whatif.pricing import Priced, price_for_prediction
from whatif.trust import build_trust, config_changes


@dataclass(frozen=True)
class Prepared:
    base: BaseRun
    config: EngineConfig
    changes: dict[str, Any]  # parameters that differ from the base's configuration
    priced: Priced
    profile: DeviceProfile | None
    trust: Trust


def base_profile(db: Engine, base: BaseRun) -> DeviceProfile | None:
    """The device profile of the base run's model, device, dtype and thread count, if one was measured."""
    facts = base.executor
    return matching_profile(db, base.model, facts.get("device"), facts.get("dtype"), facts.get("torch_threads"))


def prepare(db: Engine, base: BaseRun, config: EngineConfig, cost_model: CostModel | None = None) -> Prepared:
    """cost_model: run on this model instead of the base's (then nothing is borrowed)."""
    profile = base_profile(db, base)
    if cost_model is not None:
        priced = Priced(cost_model)
    else:
        priced = price_for_prediction(base.cost_model, base.mode, base.exercised,
                                      base.executor.get("kv_bytes_per_block"), profile)
    return Prepared(base, config, config_changes(base.config, config), priced, profile,
                    build_trust(db, base, config, priced))
