"""What a benchmark client measured, stored beside the server-side runs it drove.

`bench serve` against a Batchscope server learns from each response which run recorded it
(x-batchscope-run-id) and writes one row per request here, with the client's own TTFT, TPOT, E2E
latency and inter-token gaps, so the client's view and the server's can be read side by side:

    SELECT c.request_id, c.ttft, r.first_token_time - r.arrival_time AS server_ttft
    FROM client_requests c JOIN requests r ON r.run_id = c.run_id AND r.request_id = c.request_id
    WHERE c.benchmark_id = 1;

Two tables, additive to the recorded-run schema: a writer creates them if the file lacks them
(storage.database creates every table of the schema's metadata on open, and these are on it once
this module is imported). Times are seconds; start_time counts from the benchmark's start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, insert, inspect, select
from sqlalchemy import Engine as SqlEngine
from sqlalchemy.orm import Mapped, mapped_column

from storage.schema import Base, RequestRow, Run, table_of


class ClientBenchmark(Base):
    __tablename__ = "client_benchmarks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # UTC
    base_url: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    workload: Mapped[str] = mapped_column(Text)  # one-line description
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)  # request rate, burstiness, concurrency, goodput SLOs
    result: Mapped[dict[str, Any]] = mapped_column(JSON)  # vllm bench serve's figures (completed, throughputs, ms)
    run_ids: Mapped[list[int]] = mapped_column(JSON)  # server-side runs that recorded its requests


class ClientRequestRow(Base):
    __tablename__ = "client_requests"
    benchmark_id: Mapped[int] = mapped_column(ForeignKey("client_benchmarks.id", ondelete="CASCADE"),
                                              primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    success: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    prompt_len: Mapped[int] = mapped_column(Integer)
    output_len: Mapped[int] = mapped_column(Integer)
    start_time: Mapped[float] = mapped_column(Float)  # when it was sent, seconds since the benchmark began
    ttft: Mapped[float | None] = mapped_column(Float)
    tpot: Mapped[float | None] = mapped_column(Float)
    e2el: Mapped[float | None] = mapped_column(Float)
    itls: Mapped[list[float]] = mapped_column(JSON)  # gaps between streamed chunks with text


@dataclass(frozen=True)
class ClientRequest:
    request_id: str
    run_id: int | None
    success: bool
    error: str | None
    prompt_len: int
    output_len: int
    start_time: float
    ttft: float | None
    tpot: float | None
    e2el: float | None
    itls: Sequence[float]


def save_benchmark(db: SqlEngine, base_url: str, model: str | None, workload: str, settings: dict[str, Any],
                   result: dict[str, Any], requests: Sequence[ClientRequest]) -> tuple[int, list[int]]:
    """Store one benchmark; returns its id and the run ids the header named that this database lacks
    (their requests are stored with no run)."""
    named = sorted({r.run_id for r in requests if r.run_id is not None})
    runs = table_of(Run)
    with db.begin() as conn:
        present = set(conn.execute(select(runs.c.id).where(runs.c.id.in_(named))).scalars()) if named else set()
        missing = [rid for rid in named if rid not in present]
        bench_id = conn.execute(insert(table_of(ClientBenchmark)).returning(table_of(ClientBenchmark).c.id), {
            "created_at": datetime.now(UTC), "base_url": base_url, "model": model, "workload": workload,
            "settings": settings, "result": result, "run_ids": sorted(present),
        }).scalar_one()
        if requests:
            conn.execute(insert(table_of(ClientRequestRow)), [{
                "benchmark_id": bench_id, "request_id": r.request_id,
                "run_id": r.run_id if r.run_id in present else None, "success": r.success, "error": r.error,
                "prompt_len": r.prompt_len, "output_len": r.output_len, "start_time": r.start_time, "ttft": r.ttft,
                "tpot": r.tpot, "e2el": r.e2el, "itls": list(r.itls),
            } for r in requests])
    return bench_id, missing


CLIENT_VS_SERVER = ["benchmark_id", "request_id", "client_ttft", "server_ttft", "client_e2el", "server_e2el"]


def client_vs_server(db: SqlEngine, run_id: int) -> pd.DataFrame:
    """Each request of the run that a benchmark client completed: TTFT and end-to-end latency as the
    client timed them and as the server recorded them (seconds, the server's from its arrival
    stamp); empty when no client benchmark named the run (or the database has no client tables)."""
    if not inspect(db).has_table(ClientRequestRow.__tablename__):
        return pd.DataFrame(columns=CLIENT_VS_SERVER)
    c, r = table_of(ClientRequestRow), table_of(RequestRow)
    query = (select(c.c.benchmark_id, c.c.request_id, c.c.ttft.label("client_ttft"),
                    (r.c.first_token_time - r.c.arrival_time).label("server_ttft"), c.c.e2el.label("client_e2el"),
                    (r.c.finish_time - r.c.arrival_time).label("server_e2el"))
             .join(r, (r.c.run_id == c.c.run_id) & (r.c.request_id == c.c.request_id))
             .where(c.c.run_id == run_id, c.c.success.is_(True))
             .order_by(c.c.benchmark_id, c.c.request_id))
    with db.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=CLIENT_VS_SERVER)
