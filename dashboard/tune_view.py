"""Data for a future Tune view (no page yet): searches, their points as a table a chart can draw, the
frontier, which runs belong to a search, and the command that materializes a point.

Plain functions over a read-only SQLAlchemy Engine (dashboard.data.reader gives one), so a page
can cache them the way dashboard/data.py caches its reads. storage.searches does the SQL.
"""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from storage import searches

POINT_COLUMNS = ["point", "status", "meets_slo", "goodput", "attainment", "output_tokens_per_s", "e2e_p99",
                 "ttft_p99", "tpot_p99", "run_id", "reason"]


def search_table(db: Engine) -> pd.DataFrame:
    """One row per search, newest first: status, progress, the recommended point and its goodput."""
    return searches.list_searches(db)


def points_table(db: Engine, search_id: int) -> pd.DataFrame:
    """One row per point: its searched parameters as columns (max_num_seqs, ...) beside its figures.
    A point that stopped early or was invalid has no figures (NaN), and says why in `reason`."""
    frame = searches.search_points(db, search_id)
    if frame.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    params = pd.DataFrame([dict(p or {}) for p in frame["params"]], index=frame.index)
    return pd.concat([params, frame[POINT_COLUMNS]], axis=1)


def frontier_table(points: pd.DataFrame, meeting_only: bool = True) -> pd.DataFrame:
    """The throughput vs E2E p99 Pareto frontier of a points_table (of the points meeting the SLOs,
    unless meeting_only is False), by E2E p99; the same rule as tune.pareto."""
    rows = points.dropna(subset=["output_tokens_per_s", "e2e_p99"])
    if meeting_only:
        rows = rows[rows["meets_slo"].astype(bool)]
    rows = rows.sort_values(["output_tokens_per_s", "e2e_p99", "point"], ascending=[False, True, True])
    kept, best = [], float("inf")
    for index, latency in zip(rows.index, rows["e2e_p99"], strict=True):
        if latency < best:
            kept.append(index)
            best = latency
    return rows.loc[kept].sort_values(["e2e_p99", "point"])


def runs_list(db: Engine) -> pd.DataFrame:
    """The Runs list without the runs that belong to a search (they show under their search)."""
    return searches.runs_outside_searches(db)


def runs_of_search(db: Engine, search_id: int) -> pd.DataFrame:
    """run_id, point, role (point: a materialized point; validation: a real run checking one)."""
    grouped = searches.grouped_runs(db)
    return grouped[grouped["search_id"] == search_id].drop(columns=["search_id"]).reset_index(drop=True)


def materialize_argv(search_id: int, point: int, db: str) -> list[str]:
    """The command that records a point's steps as a run (for dashboard.launcher.launch)."""
    return [sys.executable, "-m", "engine", "tune", "--materialize", f"{int(search_id)}:{int(point)}", "--db", db]


def search_summary(db: Engine, search_id: int) -> dict[str, Any] | None:
    """The search row: its workload, SLOs, space, backend and report (trust figures, frontier)."""
    return searches.get_search(db, search_id)
