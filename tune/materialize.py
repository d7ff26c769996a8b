"""`python -m engine tune --materialize SEARCH:POINT`: a search point's simulation recorded step by
step as a normal run, so every page can show it.

A point was simulated without recording its steps; the simulation is deterministic (the same
requests, configuration and cost model give the same schedule), so it is simply run again, this
time into a Recorder. The workload is rebuilt from the search's source and must hash to the
digest the search stored (a changed workload file is refused, not silently replayed). The run is
linked to its point before its first step, so the Runs list never shows it outside its search.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from engine.clock import VirtualClock
from engine.config import EngineConfig
from engine.engine_loop import Engine as ServingEngine
from engine.executors.cost_model import cost_model_from_dict
from engine.executors.simulated import SimulatedExecutor
from engine.metrics import RunSummary
from engine.snapshot import RunInfo
from storage.database import StorageError
from storage.queries import get_run
from storage.recorder import Recorder
from storage.searches import get_point, get_search, link_point_run
from tune.source import workload_digest, workload_from_source
from tune.space import describe_params


@dataclass(frozen=True)
class Materialized:
    run_id: int
    summary: dict[str, Any]  # RunSummary.to_dict() of the recorded run
    reused: bool  # the point had been materialized already: that run is returned


def materialize(writer: Engine, search_id: int, point: int) -> Materialized:
    search = get_search(writer, search_id)
    if search is None:
        raise StorageError(f"there is no search {search_id} in this database")
    row = get_point(writer, search_id, point)
    if row is None:
        raise StorageError(f"search {search_id} has no point {point} (it has {search['num_points']}, numbered from 0)")
    if row["config"] is None:
        raise StorageError(f"point {point} of search {search_id} is not a valid configuration: {row['reason']}")
    if row["run_id"] is not None:
        existing = get_run(writer, int(row["run_id"]))
        if existing is not None and existing["status"] == "finished":
            return Materialized(int(row["run_id"]), dict(existing["summary"] or {}), reused=True)
    workload, base = workload_from_source(writer, search["workload_source"])
    if workload_digest(workload.requests) != search["workload_digest"]:
        raise StorageError(f"the workload of search {search_id} ({search['workload']}) is not what it was when the "
                           "search ran (a changed file or base run), so its points cannot be replayed")
    config = EngineConfig.from_dict(row["config"])
    cost_model = cost_model_from_dict(search["cost_model"])
    executor = SimulatedExecutor(cost_model)
    info = RunInfo(name=f"search {search_id} point {point}: {describe_params(row['params'])}", mode="simulated",
                   batching=config.scheduler.batching, config=config.to_dict(), model=base.model if base else None,
                   workload=workload.description, source="what-if" if base is not None else "workload",
                   base_run_id=base.run_id if base is not None else None, pid=os.getpid(),
                   lengths_declared=workload.lengths_declared)
    recorder = Recorder(writer, info, executor_facts=executor.describe())
    link_point_run(writer, search_id, point, recorder.run_id)
    with recorder:
        summary: RunSummary = ServingEngine(config, executor, VirtualClock(), recorder).run(workload.requests)
        recorder.finish("finished", summary=summary.to_dict())
    if base is not None:
        _write_what_if_note(writer, recorder.run_id, base, config, search)
    return Materialized(recorder.run_id, summary.to_dict(), reused=False)


def _write_what_if_note(writer: Engine, run_id: int, base: Any, config: EngineConfig, search: dict[str, Any]) -> None:
    """A point of a --from-run search is a what-if of its base: it carries the same note (the cheap,
    out-of-sample part of the trust figures; the search's report has the full ones of its winner)."""
    from storage.run_meta import Trust, WhatIfNote, write_what_if
    from whatif.pricing import Priced
    from whatif.trust import config_changes, extrapolation_warnings, holdout_of

    notes = search.get("cost_notes") or {}
    priced = Priced(cost_model_from_dict(search["cost_model"]), list(notes.get("borrowed") or []),
                    list(notes.get("unmeasured") or []))
    trust = Trust(holdout=holdout_of(base), warnings=extrapolation_warnings(base, config, priced))
    write_what_if(writer, run_id, WhatIfNote(base.run_id, config_changes(base.config, config), trust,
                                             priced.model.name))
