"""Configuration searches (`python -m engine tune`): one row per search, one summary-only row per
point (its configuration, SLO verdict and RunSummary, no steps), written here and read here.

A point becomes a normal recorded run only when someone asks (`tune --materialize SEARCH:POINT`
re-simulates it, which is deterministic); search_points.run_id then links that run, and a real
validation run of it links to it through runs.validates_run_id. Those runs belong to their
search, not to the Runs list: grouped_runs() says which runs are whose, and
runs_outside_searches() is the Runs list without them.

The tables are declared on storage.schema.Base, so the writer that opens a database after this
module was imported creates them (storage.database: create_all adds missing tables, nothing else
changes), and create_search creates them in any case (ensure_tables: a writer may have been opened
before this module was imported); readers of a file that has none see no searches. Runs are never
changed here except through the links above; deleting a run clears the link (ON DELETE SET NULL)
and keeps the point.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    delete,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Mapped, mapped_column

from storage.queries import effective_status, list_runs
from storage.schema import Base, table_of

HEARTBEAT_INTERVAL_S = 2.0


class SearchRow(Base):
    __tablename__ = "searches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # UTC
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # a stale running search is interrupted
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))  # running | finished | aborted | failed
    error: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    base_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))  # --from-run
    workload: Mapped[str] = mapped_column(Text)  # one-line description
    workload_source: Mapped[dict[str, Any]] = mapped_column(JSON)  # how to rebuild it: a run, or a workload + options
    workload_digest: Mapped[str] = mapped_column(String(64))  # of every request: a rebuilt workload must match
    base_config: Mapped[dict[str, Any]] = mapped_column(JSON)  # EngineConfig every point starts from
    cost_model: Mapped[dict[str, Any]] = mapped_column(JSON)  # the model every point ran on (to_dict)
    cost_notes: Mapped[dict[str, Any]] = mapped_column(JSON)  # costs borrowed or never measured (what-if pricing)
    space: Mapped[dict[str, Any]] = mapped_column(JSON)  # searched parameter -> its values, in grid order
    slo: Mapped[dict[str, Any]] = mapped_column(JSON)  # ttft_ms, tpot_ms, e2e_ms, attainment_pct
    backend: Mapped[str] = mapped_column(String(200))  # where the points ran
    prune: Mapped[str] = mapped_column(String(8))  # best | slo | none: which points could stop early
    num_points: Mapped[int] = mapped_column(Integer)
    recommended_point: Mapped[int | None] = mapped_column(Integer)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # trust, frontier, counts, wall time, validation


class SearchPointRow(Base):
    __tablename__ = "search_points"
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"), primary_key=True)
    point: Mapped[int] = mapped_column(Integer, primary_key=True)  # its number in the grid
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # the searched values
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the whole EngineConfig (None: invalid)
    status: Mapped[str] = mapped_column(String(16))  # complete | pruned | invalid | failed
    reason: Mapped[str | None] = mapped_column(Text)
    meets_slo: Mapped[bool] = mapped_column(Boolean)
    goodput: Mapped[float | None] = mapped_column(Float)  # good requests / s
    attainment: Mapped[float | None] = mapped_column(Float)  # share of requests meeting every threshold
    output_tokens_per_s: Mapped[float | None] = mapped_column(Float)
    e2e_p99: Mapped[float | None] = mapped_column(Float)
    ttft_p99: Mapped[float | None] = mapped_column(Float)
    tpot_p99: Mapped[float | None] = mapped_column(Float)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)  # every figure of the point (tune.evaluate.PointResult)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # RunSummary of its simulation (complete points)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)


_searches = table_of(SearchRow)
_points = table_of(SearchPointRow)
POINT_COLUMNS = ("point", "params", "config", "status", "reason", "meets_slo", "goodput", "attainment",
                 "output_tokens_per_s", "e2e_p99", "ttft_p99", "tpot_p99", "result", "summary")


def utcnow() -> datetime:
    return datetime.now(UTC)


def finite(value: Any) -> Any:
    """JSON-safe: infinities and NaN become None (PostgreSQL's JSON has no Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


# -- the write side ------------------------------------------------------------------------------------
def ensure_tables(db: Engine) -> None:
    """Create the search tables if this database lacks them. A writer opened before this module was
    imported ran create_all without them; this adds just them (nothing else changes), and a race with
    another writer creating them at the same moment is no error."""
    try:
        Base.metadata.create_all(db, tables=[_searches, _points])  # checks first
    except OperationalError:
        if not all(inspect(db).has_table(t.name) for t in (_searches, _points)):
            raise


def create_search(db: Engine, values: dict[str, Any]) -> int:
    """A new search marked running; values: the SearchRow columns above, less the bookkeeping ones."""
    ensure_tables(db)
    now = utcnow()
    row = {"created_at": now, "heartbeat_at": now, "finished_at": None, "status": "running", "error": None,
           "recommended_point": None, "report": None} | finite(values)
    with db.begin() as conn:
        return int(conn.execute(insert(_searches).returning(_searches.c.id), row).scalar_one())


def write_points(db: Engine, search_id: int, rows: list[dict[str, Any]]) -> None:
    """Insert points (dicts with POINT_COLUMNS), replacing any with the same number (a pruned point
    simulated again in full), in one transaction; the search's heartbeat with them."""
    if not rows:
        return
    # A pruned point re-simulated in full can sit in the same batch as its first row: the last one wins.
    rows = list({int(r["point"]): r for r in rows}.values())
    numbers = [int(r["point"]) for r in rows]
    with db.begin() as conn:
        kept = {int(p): run for p, run in conn.execute(
            select(_points.c.point, _points.c.run_id).where(_points.c.search_id == search_id,
                                                            _points.c.point.in_(numbers))).all()}
        if kept:
            conn.execute(delete(_points).where(_points.c.search_id == search_id, _points.c.point.in_(list(kept))))
        conn.execute(insert(_points), [{"search_id": search_id, "run_id": kept.get(int(r["point"]))}
                                       | finite({c: r.get(c) for c in POINT_COLUMNS}) for r in rows])
        conn.execute(update(_searches).where(_searches.c.id == search_id).values(heartbeat_at=utcnow()))


def finish_search(db: Engine, search_id: int, status: str, recommended_point: int | None = None,
                  report: dict[str, Any] | None = None, error: str | None = None) -> None:
    now = utcnow()
    with db.begin() as conn:
        conn.execute(update(_searches).where(_searches.c.id == search_id).values(
            status=status, recommended_point=recommended_point, report=finite(report), error=error,
            finished_at=now, heartbeat_at=now))


def update_report(db: Engine, search_id: int, **entries: Any) -> None:
    """Add entries to a finished search's report (a validation, later)."""
    with db.begin() as conn:
        report = _json(conn.execute(select(_searches.c.report).where(_searches.c.id == search_id)).scalar_one())
        conn.execute(update(_searches).where(_searches.c.id == search_id).values(
            report=finite(dict(report or {}) | entries)))


def link_point_run(db: Engine, search_id: int, point: int, run_id: int) -> None:
    with db.begin() as conn:
        conn.execute(update(_points).where(_points.c.search_id == search_id, _points.c.point == point)
                     .values(run_id=run_id))


class SearchHeartbeat:
    """Refreshes a running search's heartbeat every few seconds from a thread, so a search whose
    process died reads as interrupted (storage.queries.effective_status), as runs do."""

    def __init__(self, db: Engine, search_id: int, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self._db, self._id, self._interval = db, search_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"batchscope-search-{search_id}")

    def __enter__(self) -> SearchHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with self._db.begin() as conn:
                    conn.execute(update(_searches).where(_searches.c.id == self._id).values(heartbeat_at=utcnow()))
            except Exception:  # a locked database: the next beat tries again
                continue


class PointWriter:
    """Buffers point rows and writes them every `every` rows or `interval_s` seconds (one transaction
    each), so a 1,000-point search costs a few dozen transactions, not a thousand."""

    def __init__(self, db: Engine, search_id: int, every: int = 64, interval_s: float = 1.0) -> None:
        self._db, self._id, self._every, self._interval = db, search_id, every, interval_s
        self._rows: list[dict[str, Any]] = []
        self._last = time.monotonic()

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._every or time.monotonic() - self._last >= self._interval:
            self.flush()

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        write_points(self._db, self._id, rows)
        self._last = time.monotonic()


# -- the read side -------------------------------------------------------------------------------------
def _json(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value


def has_searches(db: Engine) -> bool:
    """False for a file recorded before searches existed (nothing to show, nothing is created)."""
    return bool(inspect(db).has_table(SearchRow.__tablename__))


_JSON_SEARCH = ("workload_source", "base_config", "cost_model", "cost_notes", "space", "slo", "report")
_JSON_POINT = ("params", "config", "result", "summary")


def get_search(db: Engine, search_id: int) -> dict[str, Any] | None:
    if not has_searches(db):
        return None
    with db.connect() as conn:
        row = conn.execute(select(_searches).where(_searches.c.id == search_id)).mappings().first()
    if row is None:
        return None
    search = dict(row)
    for key in _JSON_SEARCH:
        search[key] = _json(search[key])
    search["status"] = effective_status(search["status"], search["heartbeat_at"])
    return search


def get_point(db: Engine, search_id: int, point: int) -> dict[str, Any] | None:
    if not has_searches(db):
        return None
    with db.connect() as conn:
        row = conn.execute(select(_points).where(_points.c.search_id == search_id, _points.c.point == point)
                           ).mappings().first()
    if row is None:
        return None
    out = dict(row)
    for key in _JSON_POINT:
        out[key] = _json(out[key])
    return out


def search_points(db: Engine, search_id: int) -> pd.DataFrame:
    """Every point of a search written so far, by number: the headline columns, params and config
    decoded (the full figures are in `result`)."""
    columns = ["point", "params", "config", "status", "reason", "meets_slo", "goodput", "attainment",
               "output_tokens_per_s", "e2e_p99", "ttft_p99", "tpot_p99", "result", "run_id"]
    if not has_searches(db):
        return pd.DataFrame(columns=columns)
    with db.connect() as conn:
        frame = pd.read_sql(select(*(_points.c[c] for c in columns)).where(_points.c.search_id == search_id)
                            .order_by(_points.c.point), conn)
    for key in ("params", "config", "result"):
        frame[key] = [_json(v) for v in frame[key]]
    return frame


# Points are counted in a subquery: the search's JSON columns cannot be grouped by (PostgreSQL's json has no =).
_SEARCHES_SQL = """
SELECT s.id, s.name, s.created_at, s.finished_at, s.heartbeat_at, s.status, s.error, s.base_run_id, s.workload,
       s.backend, s.prune, s.num_points, s.recommended_point, s.slo,
       COALESCE(p.points_written, 0) AS points_written, COALESCE(p.points_meeting, 0) AS points_meeting,
       COALESCE(p.points_pruned, 0) AS points_pruned, COALESCE(p.points_materialized, 0) AS points_materialized,
       w.goodput AS recommended_goodput
FROM searches s
LEFT JOIN (
    SELECT search_id, COUNT(*) AS points_written,
           SUM(CASE WHEN meets_slo THEN 1 ELSE 0 END) AS points_meeting,
           SUM(CASE WHEN status = 'pruned' THEN 1 ELSE 0 END) AS points_pruned,
           SUM(CASE WHEN run_id IS NOT NULL THEN 1 ELSE 0 END) AS points_materialized
    FROM search_points GROUP BY search_id
) p ON p.search_id = s.id
LEFT JOIN search_points w ON w.search_id = s.id AND w.point = s.recommended_point
ORDER BY s.id DESC
"""


def list_searches(db: Engine) -> pd.DataFrame:
    """One row per search, newest first, with its progress and recommendation."""
    if not has_searches(db):
        return pd.DataFrame(columns=["id", "name", "status", "num_points", "points_written"])
    with db.connect() as conn:
        frame = pd.read_sql(text(_SEARCHES_SQL), conn)
    if frame.empty:
        return frame
    frame["status"] = [effective_status(s, h) for s, h in zip(frame["status"], frame["heartbeat_at"], strict=True)]
    frame["slo"] = [_json(v) for v in frame["slo"]]
    return frame


# The runs that belong to a search: materialized points, and real runs validating one of them.
GROUPED_RUNS_SQL = """
SELECT p.run_id AS run_id, p.search_id AS search_id, p.point AS point, 'point' AS role
FROM search_points p WHERE p.run_id IS NOT NULL
UNION ALL
SELECT r.id AS run_id, p.search_id AS search_id, p.point AS point, 'validation' AS role
FROM runs r JOIN search_points p ON p.run_id IS NOT NULL AND r.validates_run_id = p.run_id
"""


def grouped_runs(db: Engine) -> pd.DataFrame:
    """run_id, search_id, point, role (point | validation) of every run that belongs to a search."""
    if not has_searches(db):
        return pd.DataFrame(columns=["run_id", "search_id", "point", "role"])
    with db.connect() as conn:
        return pd.read_sql(text(GROUPED_RUNS_SQL), conn)


def runs_outside_searches(db: Engine) -> pd.DataFrame:
    """storage.queries.list_runs without the runs that belong to a search (the Runs list; those show
    under their search)."""
    return without_search_runs(list_runs(db), grouped_runs(db))


def without_search_runs(runs: pd.DataFrame, grouped: pd.DataFrame) -> pd.DataFrame:
    """A runs list (list_runs' columns) less the runs in `grouped` (grouped_runs' rows)."""
    if runs.empty or grouped.empty:
        return runs
    return runs[~runs["id"].isin(set(grouped["run_id"].astype(int)))].reset_index(drop=True)
