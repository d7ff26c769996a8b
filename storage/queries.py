"""The read side: every query the dashboard and the CLI make, SQL doing the filtering and
aggregation. Functions take a read-only SQLAlchemy Engine plus ids and numbers, never frames,
and return pandas DataFrames (or small dicts).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, inspect, text

from storage.schema import ROLLUP_STEPS, table_of

STALE_AFTER_S = 15.0  # a running run without a heartbeat for this long is shown as interrupted
PHASE_ORDER = ("queued", "prefill", "decode", "preempted", "swapped", "padding")


def read_frame(db: Engine, sql: str, **params: Any) -> pd.DataFrame:
    """A query's rows as a DataFrame, with bound parameters."""
    with db.connect() as conn:
        return pd.read_sql(text(sql), conn, params=params)



def _utc(value: Any) -> datetime | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def effective_status(status: str, heartbeat_at: Any, now: datetime | None = None) -> str:
    """'interrupted' for a run that says running but whose engine stopped beating."""
    if status != "running":
        return status
    beat = _utc(heartbeat_at)
    now = now or datetime.now(UTC)
    if beat is None or now - beat > timedelta(seconds=STALE_AFTER_S):
        return "interrupted"
    return status


# -- runs ------------------------------------------------------------------------------------------
_RUNS_SQL = """
SELECT r.id, r.name, r.created_at, r.status, r.error, r.mode, r.batching, r.model, r.workload, r.source,
       r.heartbeat_at, r.finished_at, r.base_run_id, r.sweep_id, r.sweep_param, r.sweep_value,
       r.num_steps, r.last_time, r.summary,
       COALESCE(q.num_requests, 0) AS num_requests,
       COALESCE(q.num_finished, 0) AS num_finished,
       COALESCE(q.num_rejected, 0) AS num_rejected,
       COALESCE(q.output_tokens, 0) AS output_tokens,
       q.mean_ttft, q.mean_e2e, q.last_finish, q.num_preemptions
FROM runs r
LEFT JOIN (
    SELECT run_id,
           COUNT(*) AS num_requests,
           SUM(CASE WHEN finish_reason IN ('stopped', 'length') THEN 1 ELSE 0 END) AS num_finished,
           SUM(CASE WHEN finish_reason = 'rejected' THEN 1 ELSE 0 END) AS num_rejected,
           SUM(COALESCE(output_len, 0)) AS output_tokens,
           AVG(first_token_time - arrival_time) AS mean_ttft,
           AVG(CASE WHEN finish_reason IN ('stopped', 'length') THEN finish_time - arrival_time END) AS mean_e2e,
           MAX(finish_time) AS last_finish,
           SUM(num_preemptions) AS num_preemptions
    FROM requests GROUP BY run_id
) q ON q.run_id = r.id
{where}
ORDER BY r.id DESC
"""


def list_runs(db: Engine, sweep_id: str | None = None) -> pd.DataFrame:
    """One row per run with live summary metrics; status 'interrupted' when its heartbeat is stale."""
    if sweep_id is None:
        frame = read_frame(db, _RUNS_SQL.format(where=""))
    else:
        frame = read_frame(db, _RUNS_SQL.format(where="WHERE r.sweep_id = :sweep"), sweep=sweep_id)
    if frame.empty:
        return frame
    for column in ("created_at", "heartbeat_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    now = datetime.now(UTC)
    frame["status"] = [effective_status(s, h, now) for s, h in zip(frame["status"], frame["heartbeat_at"],
                                                                    strict=True)]
    duration = frame["last_finish"].where(frame["last_finish"] > 0)
    frame["output_tokens_per_s"] = frame["output_tokens"] / duration
    # From the summary a finished run stored: the pooled inter-token gaps are not in the tables.
    summaries = [_json(v) or {} for v in frame.pop("summary")]
    for stat in ("mean", "p50", "p90", "p99"):  # vllm bench serve's ITL figures (ms there, seconds here)
        frame[f"itl_{stat}"] = [(s.get("itl_s") or {}).get(stat) for s in summaries]
    frame["padding_share"] = [s.get("padding_share") for s in summaries]
    return frame


def _json(value: Any) -> Any:
    """A JSON column's value (drivers hand back text or already-decoded objects)."""
    return json.loads(value) if isinstance(value, str) else value


def get_run(db: Engine, run_id: int) -> dict[str, Any] | None:
    """The run's row with its JSON columns decoded; None if there is no such run."""
    from sqlalchemy import select

    from storage.schema import Run

    with db.connect() as conn:
        row = conn.execute(select(table_of(Run)).where(table_of(Run).c.id == run_id)).mappings().first()
    if row is None:
        return None
    run = dict(row)
    run["status"] = effective_status(run["status"], run["heartbeat_at"])
    return run


def next_part(db: Engine, run_id: int) -> int | None:
    """The run a rotating server recorded after this one (its previous_run_id names it), if any."""
    frame = read_frame(db, "SELECT id FROM runs WHERE previous_run_id = :run ORDER BY id LIMIT 1", run=run_id)
    return None if frame.empty else int(frame["id"].iloc[0])


def sweep_groups(db: Engine) -> pd.DataFrame:
    """Sweeps recorded in this database: id, parameter, number of runs."""
    frame = read_frame(db, """
        SELECT sweep_id, MIN(sweep_param) AS sweep_param, COUNT(*) AS num_runs, MIN(created_at) AS created_at
        FROM runs WHERE sweep_id IS NOT NULL GROUP BY sweep_id ORDER BY MIN(id) DESC
    """)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
    return frame


# -- steps -----------------------------------------------------------------------------------------
def last_step(db: Engine, run_id: int) -> int:
    """Index of the last recorded step, -1 if none yet."""
    frame = read_frame(db, "SELECT MAX(step) AS s FROM steps WHERE run_id = :run", run=run_id)
    value = frame["s"].iloc[0]
    return -1 if value is None or pd.isna(value) else int(value)


def steps_window(db: Engine, run_id: int, first_step: int, last_step_incl: int) -> pd.DataFrame:
    """Every column of steps first_step..last_step_incl."""
    return read_frame(db, """
        SELECT * FROM steps WHERE run_id = :run AND step BETWEEN :a AND :b ORDER BY step
    """, run=run_id, a=first_step, b=last_step_incl)


def steps_binned(db: Engine, run_id: int, max_points: int = 600) -> pd.DataFrame:
    """The whole run's step series folded into at most max_points bins (means per bin, sums for
    preemptions), so a 100,000-step run draws as quickly as a short one. Long runs fold their
    step_rollups (ROLLUP_STEPS steps per row) plus the steps after the last rollup; the result is
    the same as folding every step."""
    n = last_step(db, run_id) + 1
    width = max(1, -(-n // max_points))
    rolled = 0  # steps covered by rollups: chunks 0..rolled/ROLLUP_STEPS-1
    if width >= ROLLUP_STEPS and _has_table(db, "step_rollups"):
        width = -(-width // ROLLUP_STEPS) * ROLLUP_STEPS  # bins made of whole chunks
        count, top = read_frame(db, "SELECT COUNT(*) AS c, MAX(chunk) AS m FROM step_rollups WHERE run_id = :run",
                            run=run_id).iloc[0]
        if count and int(count) == int(top) + 1:  # contiguous from chunk 0
            rolled = int(count) * ROLLUP_STEPS
    parts = [f"""
        SELECT step / :w AS bin, start_time, 1 AS n, num_waiting AS w, num_running AS r, num_swapped AS s,
               num_prefill_seqs + num_decode_seqs AS b, num_padding_seqs AS p, num_used_gpu_blocks AS g,
               num_gpu_blocks AS gt, num_used_cpu_blocks AS c, num_preemptions AS e
        FROM steps WHERE run_id = :run AND step >= {rolled}"""]
    if rolled:
        parts.append(f"""
        SELECT chunk * {ROLLUP_STEPS} / :w, start_time, num_steps, sum_num_waiting, sum_num_running,
               sum_num_swapped, sum_num_prefill_seqs + sum_num_decode_seqs, sum_num_padding_seqs,
               sum_num_used_gpu_blocks, max_num_gpu_blocks, sum_num_used_cpu_blocks, sum_num_preemptions
        FROM step_rollups WHERE run_id = :run AND chunk < {rolled // ROLLUP_STEPS}""")
    return read_frame(db, f"""
        SELECT bin * :w AS step, MIN(start_time) AS start_time,
               SUM(w) * 1.0 / SUM(n) AS num_waiting, SUM(r) * 1.0 / SUM(n) AS num_running,
               SUM(s) * 1.0 / SUM(n) AS num_swapped, SUM(b) * 1.0 / SUM(n) AS batch_size,
               SUM(p) * 1.0 / SUM(n) AS num_padding_seqs, SUM(g) * 1.0 / SUM(n) AS num_used_gpu_blocks,
               MAX(gt) AS num_gpu_blocks, SUM(c) * 1.0 / SUM(n) AS num_used_cpu_blocks,
               SUM(e) AS num_preemptions, SUM(n) AS num_steps
        FROM ({" UNION ALL ".join(parts)}) AS folded GROUP BY bin ORDER BY bin
    """, run=run_id, w=width)


def _has_table(db: Engine, name: str) -> bool:
    """Whether the database has a table (a file from an earlier build may lack a derived one)."""
    return inspect(db).has_table(name)


def step_at(db: Engine, run_id: int, step: int) -> dict[str, Any] | None:
    frame = read_frame(db, "SELECT * FROM steps WHERE run_id = :run AND step = :s", run=run_id, s=step)
    return None if frame.empty else frame.iloc[0].to_dict()


def step_of_time(db: Engine, run_id: int, t: float) -> int:
    """The step running at (or last before) run time t."""
    frame = read_frame(db, "SELECT MAX(step) AS s FROM steps WHERE run_id = :run AND start_time <= :t",
                   run=run_id, t=t)
    value = frame["s"].iloc[0]
    return 0 if value is None or pd.isna(value) else int(value)


def step_gap_itl_p50(db: Engine, run_id: int, first_step: int, last_step_incl: int) -> float | None:
    """The median inter-token gap over a window of steps, from the steps alone: a request decoding
    in step k sampled in step k-1 too (in steady decoding), so each decode contributes the gap
    between the two steps' ends. Gaps that span a preemption are not in it (the finished run's
    summary has the exact pooled ITL)."""
    frame = read_frame(db, """
        SELECT end_time - LAG(end_time) OVER (ORDER BY step) AS gap, num_decode_seqs AS n
        FROM steps WHERE run_id = :run AND step BETWEEN :a AND :b ORDER BY step
    """, run=run_id, a=first_step, b=last_step_incl).dropna()
    frame = frame[frame["n"] > 0]
    if frame.empty:
        return None
    frame = frame.sort_values("gap")
    cumulative = frame["n"].cumsum()
    return float(frame["gap"].iloc[int((cumulative >= cumulative.iloc[-1] / 2).to_numpy().argmax())])


def throughput_over_time(db: Engine, run_id: int, bucket_s: float) -> pd.DataFrame:
    """Output tokens per second in buckets of run time."""
    frame = read_frame(db, """
        SELECT CAST(end_time / :b AS INTEGER) AS bucket, SUM(num_output_tokens) AS tokens,
               SUM(num_prefill_tokens) AS prefill_tokens
        FROM steps WHERE run_id = :run GROUP BY CAST(end_time / :b AS INTEGER) ORDER BY 1
    """, run=run_id, b=bucket_s)
    frame["time"] = frame["bucket"] * bucket_s
    frame["output_tokens_per_s"] = frame["tokens"] / bucket_s
    return frame


# -- requests ----------------------------------------------------------------------------------------
def run_requests(db: Engine, run_id: int) -> pd.DataFrame:
    """Every request of a run in arrival order, with its latencies."""
    return read_frame(db, """
        SELECT request_id, row_no, arrival_time, prompt_len, max_tokens, priority, output_len,
               first_scheduled_time, first_token_time, finish_time, finish_reason, num_preemptions, reject_reason,
               first_token_time - arrival_time AS ttft,
               finish_time - arrival_time AS e2e,
               first_scheduled_time - arrival_time AS queue_time,
               CASE WHEN output_len > 1 THEN (finish_time - first_token_time) / (output_len - 1) END AS tpot
        FROM requests WHERE run_id = :run ORDER BY row_no
    """, run=run_id)


def latency_percentiles(db: Engine, run_id: int, since_time: float | None = None) -> pd.DataFrame:
    """TTFT, TPOT, E2E and queue time (seconds): mean, p50, p90, p99 over finished requests
    (those finished after since_time, when given)."""
    frame = read_frame(db, """
        SELECT first_token_time - arrival_time AS ttft,
               CASE WHEN output_len > 1 THEN (finish_time - first_token_time) / (output_len - 1) END AS tpot,
               finish_time - arrival_time AS e2e,
               first_scheduled_time - arrival_time AS queue_time
        FROM requests
        WHERE run_id = :run AND finish_reason IN ('stopped', 'length') AND finish_time >= :since
    """, run=run_id, since=since_time if since_time is not None else -1.0)
    rows = []
    for metric in ("ttft", "tpot", "e2e", "queue_time"):
        values = frame[metric].dropna().to_numpy(dtype=float)
        if values.size:
            p50, p90, p99 = np.percentile(values, [50, 90, 99])
            rows.append({"metric": metric, "count": values.size, "mean": values.mean(), "p50": p50, "p90": p90,
                         "p99": p99})
        else:
            rows.append({"metric": metric, "count": 0, "mean": None, "p50": None, "p90": None, "p99": None})
    return pd.DataFrame(rows)


def latency_by_length(db: Engine, run_id: int, split_tokens: int | None = None) -> pd.DataFrame:
    """Short vs long requests (by output length; split at the median unless given): p50/p99 E2E and TTFT."""
    frame = run_requests(db, run_id)
    frame = frame[frame["finish_reason"].isin(["stopped", "length"])]
    if frame.empty:
        return pd.DataFrame(columns=["group", "count", "e2e_p50", "e2e_p99", "ttft_p50", "ttft_p99"])
    split = split_tokens if split_tokens is not None else float(frame["output_len"].median())
    frame = frame.assign(group=np.where(frame["output_len"] <= split, f"short (<= {split:g} tokens)",
                                        f"long (> {split:g} tokens)"))
    grouped = frame.groupby("group")
    return pd.DataFrame({
        "count": grouped.size(),
        "e2e_p50": grouped["e2e"].quantile(0.5), "e2e_p99": grouped["e2e"].quantile(0.99),
        "ttft_p50": grouped["ttft"].quantile(0.5), "ttft_p99": grouped["ttft"].quantile(0.99),
    }).reset_index()


def request_detail(db: Engine, run_id: int, request_id: str) -> tuple[dict[str, Any] | None, pd.DataFrame]:
    """One request's row and its phase timeline."""
    req = read_frame(db, """
        SELECT *, first_token_time - arrival_time AS ttft, finish_time - arrival_time AS e2e
        FROM requests WHERE run_id = :run AND request_id = :rid
    """, run=run_id, rid=request_id)
    phases = read_frame(db, """
        SELECT phase, start_step, end_step, start_time, end_time FROM request_phases
        WHERE run_id = :run AND request_id = :rid ORDER BY interval_id
    """, run=run_id, rid=request_id)
    return (None if req.empty else req.iloc[0].to_dict()), phases


# -- arrivals ----------------------------------------------------------------------------------------
def arrival_rate(db: Engine, run_id: int, start_time: float, end_time: float) -> float | None:
    """Requests that arrived between start_time and end_time (run seconds, both included), per second;
    None for an empty span."""
    span = end_time - start_time
    if span <= 0:
        return None
    with db.connect() as conn:
        count = conn.execute(text("""
            SELECT COUNT(*) FROM requests
            WHERE run_id = :run AND arrival_time >= :start AND arrival_time <= :end"""),
            {"run": run_id, "start": start_time, "end": end_time}).scalar_one()
    return int(count) / span
