"""All reads the pages make, cached. Functions take the database target, ids and numbers (never
frames); `version` (a run's step count) changes whenever a live run writes more, so a finished
run's data is read once and a live run's as it grows."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from dashboard import tune_view
from storage import client_results, queries, timeline_queries
from storage.database import open_for_read

F = TypeVar("F", bound=Callable[..., Any])


def _stop_on_db_error(fn: F) -> F:
    """A query that fails (a damaged file, a table from another layout, a lost server) stops the
    page with one clear message instead of a traceback. Storage errors (missing, empty, foreign
    database) pass through: pages explain those themselves."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (SQLAlchemyError, pd.errors.DatabaseError) as exc:
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            st.error(f"Cannot read the database: {detail}. Was it written by another version of Batchscope? "
                     "Point BATCHSCOPE_DB at another file; this one was not changed.")
            st.stop()

    wrapper.clear = fn.clear  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]

LIVE_TTL_S = 1.0


@st.cache_resource(max_entries=4, show_spinner=False)
def reader(target: str) -> Engine:
    """One read-only engine per database (raises StorageError; errors are not cached)."""
    return open_for_read(target)


@_stop_on_db_error
@st.cache_data(ttl=LIVE_TTL_S, max_entries=32, show_spinner=False)
def next_part(target: str, run_id: int) -> int | None:
    return queries.next_part(reader(target), run_id)


@_stop_on_db_error
@st.cache_data(ttl=LIVE_TTL_S, max_entries=8, show_spinner=False)
def runs(target: str) -> pd.DataFrame:
    return queries.list_runs(reader(target))


@_stop_on_db_error
@st.cache_data(ttl=LIVE_TTL_S, max_entries=32, show_spinner=False)
def run(target: str, run_id: int) -> dict[str, Any] | None:
    return queries.get_run(reader(target), run_id)


@_stop_on_db_error
@st.cache_data(ttl=LIVE_TTL_S, max_entries=8, show_spinner=False)
def grouped_runs(target: str) -> pd.DataFrame:
    """run_id, search_id, point, role of the runs that belong to a search (not the Runs list's)."""
    return tune_view.grouped_runs(reader(target))


@_stop_on_db_error
@st.cache_data(ttl=LIVE_TTL_S, max_entries=8, show_spinner=False)
def searches(target: str) -> pd.DataFrame:
    return tune_view.search_table(reader(target))


@_stop_on_db_error
@st.cache_data(ttl=LIVE_TTL_S, max_entries=16, show_spinner=False)
def search(target: str, search_id: int) -> dict[str, Any] | None:
    return tune_view.search_summary(reader(target), search_id)


@_stop_on_db_error
@st.cache_data(ttl=LIVE_TTL_S, max_entries=16, show_spinner=False)
def search_points(target: str, search_id: int) -> pd.DataFrame:
    return tune_view.points_table(reader(target), search_id)


@_stop_on_db_error
@st.cache_data(ttl=LIVE_TTL_S, max_entries=8, show_spinner=False)
def sweep_groups(target: str) -> pd.DataFrame:
    return queries.sweep_groups(reader(target))


@_stop_on_db_error
@st.cache_data(ttl=LIVE_TTL_S, max_entries=16, show_spinner=False)
def sweep_runs(target: str, sweep_id: str) -> pd.DataFrame:
    return queries.list_runs(reader(target), sweep_id=sweep_id)


@_stop_on_db_error
@st.cache_data(max_entries=64, show_spinner=False)
def steps_window(target: str, run_id: int, first: int, last: int, version: int) -> pd.DataFrame:
    return queries.steps_window(reader(target), run_id, first, last)


@_stop_on_db_error
@st.cache_data(max_entries=32, show_spinner=False)
def steps_binned(target: str, run_id: int, version: int, max_points: int = 600) -> pd.DataFrame:
    return queries.steps_binned(reader(target), run_id, max_points)


@_stop_on_db_error
@st.cache_data(max_entries=64, show_spinner=False)
def step_at(target: str, run_id: int, step: int, version: int) -> dict[str, Any] | None:
    return queries.step_at(reader(target), run_id, step)


@_stop_on_db_error
@st.cache_data(max_entries=64, show_spinner=False)
def phases_window(target: str, run_id: int, first: int, last: int, version: int,
                  max_rows: int = 5_000) -> pd.DataFrame:
    return timeline_queries.phases_window(reader(target), run_id, first, last, max_rows)


@_stop_on_db_error
@st.cache_data(max_entries=16, show_spinner=False)
def gantt_overview(target: str, run_id: int, version: int) -> pd.DataFrame:
    return timeline_queries.gantt_overview(reader(target), run_id)


@_stop_on_db_error
@st.cache_data(max_entries=16, show_spinner=False)
def phase_count(target: str, run_id: int, version: int) -> int:
    from sqlalchemy import text

    with reader(target).connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM request_phases WHERE run_id = :r"),
                                {"r": run_id}).scalar_one())


@_stop_on_db_error
@st.cache_data(max_entries=64, show_spinner=False)
def kv_block_map(target: str, run_id: int, step: int, device: str, version: int) -> pd.DataFrame:
    return timeline_queries.kv_block_map(reader(target), run_id, step, device)


@_stop_on_db_error
@st.cache_data(max_entries=64, show_spinner=False)
def queue_contents(target: str, run_id: int, step: int, version: int) -> pd.DataFrame:
    return timeline_queries.queue_contents(reader(target), run_id, step)


@_stop_on_db_error
@st.cache_data(max_entries=32, show_spinner=False)
def run_requests(target: str, run_id: int, version: int) -> pd.DataFrame:
    return queries.run_requests(reader(target), run_id)


@_stop_on_db_error
@st.cache_data(max_entries=32, show_spinner=False)
def latency_percentiles(target: str, run_id: int, version: int, since_time: float | None = None) -> pd.DataFrame:
    return queries.latency_percentiles(reader(target), run_id, since_time)


@_stop_on_db_error
@st.cache_data(max_entries=32, show_spinner=False)
def step_gap_itl_p50(target: str, run_id: int, first: int, last: int, version: int) -> float | None:
    return queries.step_gap_itl_p50(reader(target), run_id, first, last)


@_stop_on_db_error
@st.cache_data(max_entries=32, show_spinner=False)
def latency_by_length(target: str, run_id: int, version: int) -> pd.DataFrame:
    return queries.latency_by_length(reader(target), run_id)


@_stop_on_db_error
@st.cache_data(max_entries=32, show_spinner=False)
def throughput_over_time(target: str, run_id: int, bucket_s: float, version: int) -> pd.DataFrame:
    return queries.throughput_over_time(reader(target), run_id, bucket_s)


@_stop_on_db_error
@st.cache_data(max_entries=64, show_spinner=False)
def request_detail(target: str, run_id: int, request_id: str,
                   version: int) -> tuple[dict[str, Any] | None, pd.DataFrame]:
    return queries.request_detail(reader(target), run_id, request_id)


@_stop_on_db_error
@st.cache_data(max_entries=64, show_spinner=False)
def last_step(target: str, run_id: int, version: int) -> int:
    return queries.last_step(reader(target), run_id)


@_stop_on_db_error
@st.cache_data(max_entries=32, show_spinner=False)
def arrival_rate(target: str, run_id: int, start_time: float, end_time: float, version: int) -> float | None:
    return queries.arrival_rate(reader(target), run_id, start_time, end_time)


@_stop_on_db_error
@st.cache_data(max_entries=16, show_spinner=False)
def client_vs_server(target: str, run_id: int, version: int) -> pd.DataFrame:
    return client_results.client_vs_server(reader(target), run_id)
