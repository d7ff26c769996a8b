"""What a search runs on: the workload's requests, the configuration every point starts from, and
the cost model, from a recorded run (exactly as a what-if replays it: its requests, its fitted
model with the costs it never exercised priced by whatif.pricing) or from a workload and a named
or profiled cost model. `source` says how to build the same workload again, so a point can be
re-simulated later (tune.materialize); the digest proves it was the same.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, astuple, dataclass, field
from typing import Any

from sqlalchemy import Engine

from engine.config import EngineConfig
from engine.executors.cost_model import CostModel
from engine.workload import Workload, WorkloadOptions, resolve_workload
from engine.workload.spec import RequestSpec
from whatif.base_run import BaseRun, load_base_run


@dataclass(frozen=True)
class SearchSource:
    workload: Workload
    base_config: EngineConfig
    cost_model: CostModel
    source: dict[str, Any]  # {"kind": "run", "run_id": N} or {"kind": "workload", "workload": ..., "options": ...}
    base: BaseRun | None = None  # --from-run
    borrowed: list[str] = field(default_factory=list)  # costs the base never exercised, priced from elsewhere
    unmeasured: list[str] = field(default_factory=list)  # costs nothing measured (extrapolation warnings)
    fit: str = "run"  # --from-run: "run" (the base's own fit) or "pooled" (whatif/pooled_fit.py)
    pooled_runs: tuple[int, ...] = ()  # with fit "pooled": the runs whose steps the cost model was fitted to

    @property
    def model(self) -> str | None:
        return self.base.model if self.base is not None else None


def workload_digest(requests: tuple[RequestSpec, ...]) -> str:
    """A hash over every field of every request, in order."""
    h = hashlib.sha256()
    for spec in requests:
        h.update(repr(astuple(spec)).encode())
        h.update(b"\n")
    return h.hexdigest()


def from_workload(name: str, options: WorkloadOptions, config: EngineConfig, cost_model: CostModel) -> SearchSource:
    """A named workload or a workload file, built with these options, on a given cost model."""
    workload = resolve_workload(name, options)
    return SearchSource(workload, config, cost_model, {"kind": "workload", "workload": _portable_name(name),
                                                       "options": _options_json(options)})


def from_run(writer: Engine, run_id: int, configure: Callable[[EngineConfig], EngineConfig] | None = None,
             cost_model: CostModel | None = None, fit: str = "run") -> SearchSource:
    """Run RUN's recorded requests, its configuration as `configure` changes it, and the cost model a
    what-if of it would use (or `cost_model` as it is: nothing borrowed, as a what-if does).

    fit "pooled": one cost model fitted to every finished real run of the base's model on its
    device, none left out. A search predicts many configurations at once, so it cannot leave each
    one's runs out of its pool as a single what-if does; the trust figures shown with its answer
    (tune.trust) do: they refit for the recommendation and for every run of the track record."""
    from whatif.pooled_fit import pooled_cost_model
    from whatif.predict import base_profile, check_fit, on_pool, priced_for

    base = load_base_run(writer, run_id)
    check_fit(base, fit, cost_model)
    config = configure(base.config) if configure is not None else base.config
    source = {"kind": "run", "run_id": run_id}
    if cost_model is not None:
        return SearchSource(base.workload, config, cost_model, source, base)
    pooled_runs: tuple[int, ...] = ()
    priced_base = base
    if fit == "pooled":
        pooled = pooled_cost_model(writer, run_id, predicted=None)
        priced_base, pooled_runs = on_pool(base, pooled), pooled.run_ids
    priced = priced_for(priced_base, base_profile(writer, base))
    return SearchSource(base.workload, config, priced.model, source, base, list(priced.borrowed),
                        list(priced.unmeasured), fit, pooled_runs)


def _portable_name(name: str) -> str:
    """A workload file by its absolute path, so a later process elsewhere finds it."""
    from pathlib import Path

    return name if name in ("uniform", "mixed", "azure") else str(Path(name).resolve())


def _options_json(options: WorkloadOptions) -> dict[str, Any]:
    values = asdict(options)
    values["request_rate"] = None if math.isinf(options.request_rate) else options.request_rate  # JSON has no inf
    return values


def workload_from_source(writer: Engine, source: dict[str, Any]) -> tuple[Workload, BaseRun | None]:
    """The workload a stored search ran on, built again."""
    if source.get("kind") == "run":
        base = load_base_run(writer, int(source["run_id"]))
        return base.workload, base
    options = dict(source["options"])
    options["request_rate"] = math.inf if options.get("request_rate") is None else float(options["request_rate"])
    for key in ("prompt_lens", "output_lens"):
        options[key] = tuple(options[key])
    return resolve_workload(source["workload"], WorkloadOptions(**options)), None
