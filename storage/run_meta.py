"""A run's typed metadata, written and read here only: what-if and validation notes, and the
facts about how a run was recorded (source, process, served URL, rotation, declared lengths).

Writers (the what-if service, validation, the server) and readers (the dashboard, the CLI) share
these dataclasses instead of digging into JSON: the JSON columns behind them are this module's
business. Figures are seconds, or tokens/s for output_tokens_per_s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine, update

from storage.schema import SCHEMA_VERSION, Run, table_of

Figures = dict[str, float | None]  # headline metrics by key: output_tokens_per_s, ttft_p50, e2e_p99, ...
TRUTHFUL_ENGINE_SCHEMA = 3  # runs recorded under an older schema had padded attention and a capped static batch


@dataclass(frozen=True)
class Comparison:
    """The same figures two ways, and the signed error of the first against the second (percent)."""

    predicted: Figures
    actual: Figures
    error_pct: Figures


@dataclass(frozen=True)
class TrackRecordEntry:
    """How well this base run predicted a real run of the same workload under another configuration."""

    real_run_id: int
    changes: dict[str, Any]  # the real run's configuration, where it differs from the base's
    simulated: Comparison  # the simulator's prediction vs what the real run measured
    null_error_pct: Figures  # "nothing changes" (the base's own figures) vs the real run
    # The cost model on the real run's own recorded steps, predicted over measured total, less 1 (%):
    # what of the error is step times rather than the replay (None: recorded before it was measured).
    step_time_error_pct: float | None = None


@dataclass(frozen=True)
class Trust:
    """How far to trust a prediction, shown before it: all out of sample."""

    holdout: dict[str, Any]  # step-time fit on held-out blocks: folds, r2, median / p90 abs % error
    warnings: list[str]  # extrapolations: each changed parameter or feature the base run never exercised
    track_record: list[TrackRecordEntry] = field(default_factory=list)
    consistency: Comparison | None = None  # the replay of the base under its own configuration (in sample)
    borrowed: list[str] = field(default_factory=list)  # costs the base never exercised, and where they came from


@dataclass(frozen=True)
class WhatIfNote:
    base_run_id: int
    changes: dict[str, Any]  # parameters changed from the base run's configuration
    trust: Trust
    cost_model: str  # the name of the cost model the prediction used
    fit: str = "run"  # its step costs: the base run's own fit, or "pooled" over the device's real runs
    pooled_runs: list[int] = field(default_factory=list)  # with fit "pooled": the runs it was fitted to


@dataclass(frozen=True)
class ValidationNote:
    """A prediction checked by a real run with the same parameters."""

    real_run_id: int
    model: str
    check: Comparison


@dataclass(frozen=True)
class RunMeta:
    source: str  # workload | served | what-if | validation
    pid: int | None
    served_url: str | None
    previous_run_id: int | None
    lengths_declared: bool | None
    workload_key: str | None
    recorded_schema: int
    validates_run_id: int | None
    what_if: WhatIfNote | None
    validation: ValidationNote | None

    @property
    def before_truthful_engine(self) -> bool:
        """Recorded before attention cost followed the context and static batching was really static:
        its step costs (and a cost model fitted to them) mean something else."""
        return self.recorded_schema < TRUTHFUL_ENGINE_SCHEMA


def _comparison(data: dict[str, Any] | None) -> Comparison | None:
    return None if not data else Comparison(dict(data["predicted"]), dict(data["actual"]), dict(data["error_pct"]))


def _trust(data: dict[str, Any]) -> Trust:
    entries = [TrackRecordEntry(int(e["real_run_id"]), dict(e["changes"]), _comparison(e["simulated"]),  # type: ignore[arg-type]
                                dict(e["null_error_pct"]), e.get("step_time_error_pct"))
               for e in data.get("track_record", [])]
    return Trust(dict(data.get("holdout") or {}), list(data.get("warnings") or []), entries,
                 _comparison(data.get("consistency")), list(data.get("borrowed") or []))


def trust_from_json(data: dict[str, Any] | None) -> Trust | None:
    """Trust figures stored on their own (a search's report keeps its recommendation's)."""
    return _trust(data) if data else None


def what_if_from_json(data: dict[str, Any] | None) -> WhatIfNote | None:
    if not data:
        return None
    return WhatIfNote(int(data["base_run_id"]), dict(data["changes"]), _trust(data["trust"]), str(data["cost_model"]),
                      str(data.get("fit") or "run"), [int(r) for r in data.get("pooled_runs") or []])


def validation_from_json(data: dict[str, Any] | None) -> ValidationNote | None:
    if not data:
        return None
    check = _comparison(data["check"])
    assert check is not None
    return ValidationNote(int(data["real_run_id"]), str(data["model"]), check)


def run_meta(run: dict[str, Any]) -> RunMeta:
    """The typed metadata of a run row (as storage.queries.get_run returns it)."""
    return RunMeta(
        source=str(run.get("source") or "workload"), pid=run.get("pid"), served_url=run.get("served_url"),
        previous_run_id=run.get("previous_run_id"), lengths_declared=run.get("lengths_declared"),
        workload_key=run.get("workload_key"), recorded_schema=int(run.get("recorded_schema") or SCHEMA_VERSION),
        validates_run_id=run.get("validates_run_id"), what_if=what_if_from_json(run.get("what_if")),
        validation=validation_from_json(run.get("validation")),
    )


def write_what_if(db: Engine, run_id: int, note: WhatIfNote) -> None:
    _set(db, run_id, what_if=asdict(note))


def write_validation(db: Engine, prediction_run_id: int, note: ValidationNote) -> None:
    _set(db, prediction_run_id, validation=asdict(note))


def _set(db: Engine, run_id: int, **values: Any) -> None:
    runs = table_of(Run)
    with db.begin() as conn:
        conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
