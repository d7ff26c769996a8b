"""The same recording on PostgreSQL answers every query exactly as SQLite does.

Needs a server: set BATCHSCOPE_TEST_PG_URL (.ci/run starts one and sets it), e.g.
postgresql+psycopg://batchscope:batchscope@127.0.0.1:5432/batchscope_test
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from storage import queries
from storage import timeline_queries as tl
from storage.database import open_for_read
from tests.recording import record_simulation

PG_URL = os.environ.get("BATCHSCOPE_TEST_PG_URL")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL, reason="set BATCHSCOPE_TEST_PG_URL to a PostgreSQL database to run these"),
]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    assert PG_URL is not None
    config = {"num_gpu_blocks": 40, "preemption_mode": "swap", "swap_space": 64}
    sqlite_db = tmp_path_factory.mktemp("pg") / "twin.db"
    sqlite_run, _, _ = record_simulation(sqlite_db, seed=5, **config)
    pg_run, _, _ = record_simulation(PG_URL, seed=5, **config)
    return (open_for_read(str(sqlite_db)), sqlite_run), (open_for_read(PG_URL), pg_run)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False)


def test_steps_requests_and_percentiles_match(both) -> None:  # type: ignore[no-untyped-def]
    (lite, lite_run), (pg, pg_run) = both
    _same(queries.steps_window(lite, lite_run, 0, 10**9).drop(columns="run_id"),
          queries.steps_window(pg, pg_run, 0, 10**9).drop(columns="run_id"))
    _same(queries.run_requests(lite, lite_run), queries.run_requests(pg, pg_run))
    _same(queries.latency_percentiles(lite, lite_run), queries.latency_percentiles(pg, pg_run))
    _same(queries.steps_binned(lite, lite_run, 50), queries.steps_binned(pg, pg_run, 50))
    n = queries.last_step(lite, lite_run) + 1
    assert n >= 2 * 64, "the run must be long enough to fold rollups"
    _same(queries.steps_binned(lite, lite_run, 2), queries.steps_binned(pg, pg_run, 2))  # from step_rollups


def test_block_maps_gantt_and_queues_match(both) -> None:  # type: ignore[no-untyped-def]
    (lite, lite_run), (pg, pg_run) = both
    n = queries.last_step(lite, lite_run)
    assert n == queries.last_step(pg, pg_run)
    for step in (0, n // 2, n):
        for device in ("gpu", "cpu"):
            _same(tl.kv_block_map(lite, lite_run, step, device), tl.kv_block_map(pg, pg_run, step, device))
        _same(tl.queue_contents(lite, lite_run, step), tl.queue_contents(pg, pg_run, step))
    _same(tl.phases_window(lite, lite_run, n // 4, n // 2), tl.phases_window(pg, pg_run, n // 4, n // 2))
    _same(tl.gantt_overview(lite, lite_run), tl.gantt_overview(pg, pg_run))


def test_the_reader_cannot_write(both) -> None:  # type: ignore[no-untyped-def]
    _, (pg, _) = both
    with pytest.raises(DBAPIError, match="read-only"), pg.begin() as conn:
        conn.execute(text("UPDATE runs SET name = 'changed'"))

