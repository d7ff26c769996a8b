"""How far to trust the recommendation: the what-if service's trust figures for its configuration.

From a recorded run they are exactly what a what-if of that configuration shows
(whatif.predict.prepare(...).trust: held-out step-time fit, extrapolation warnings, track record,
the in-sample consistency check), on the search's fit: with a pooled fit the recommendation's own
configuration is left out of the pool the trust figures are drawn from. From a workload and a
named cost model there is no base run: no fit to hold out and no track record, and it says so.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import Engine

from engine.config import EngineConfig
from storage.run_meta import Trust
from tune.source import SearchSource


def trust_for(db: Engine | None, source: SearchSource, config: EngineConfig, cost_model_given: bool) -> Trust:
    """cost_model_given: --cost-model / --cost-model-file replaced the base's fitted model."""
    if source.base is not None and db is not None:
        from whatif.predict import prepare

        return prepare(db, source.base, config, source.cost_model if cost_model_given else None, fit=source.fit).trust
    name = source.cost_model.name
    reason = (f"no base run: step times come from the {name!r} cost model, not from a fit to a recorded run of "
              "this workload, so there is nothing to hold out and no track record")
    warnings = [f"the {name!r} cost model was not fitted to this workload's device: read the figures as the "
                "likely regime; record a real run of the workload and tune --from-run it for fitted costs"]
    if name == "unit":
        warnings = ["unit cost model: every step costs one time unit, so latencies are step counts, not seconds"]
    if source.workload.lengths_declared and config.scheduler.policy == "sjf":
        warnings.append("sjf here knows every output length: each request declared max_tokens equal to its true "
                        "length (pass --max-tokens-cap for a realistic sjf)")
    return Trust(holdout={"folds": 0, "reason": reason}, warnings=warnings)


def trust_json(trust: Trust) -> dict[str, Any]:
    return asdict(trust)
