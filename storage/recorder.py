"""The write side: turns StepSnapshots into rows, buffered and written in batches.

Rows are buffered in memory and written in one transaction per flush, every
`flush_every_steps` steps or `flush_interval_s` seconds, whichever comes first, so the
database is never more than about a second behind and a killed engine leaves only whole
steps: each flush holds complete steps with their phase rows, block events and request rows.
A heartbeat thread refreshes the run's heartbeat so readers can tell a live run from a dead one.
"""

from __future__ import annotations

import json
import operator
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, insert, update
from sqlalchemy.exc import OperationalError

from engine.outputs import KVBlockEvent
from engine.phases import PhaseChange
from engine.snapshot import FirstToken, RequestArrival, RequestFinish, RunInfo, StepSnapshot
from engine.step_counts import ROLLUP_SUM_FIELDS, STEP_COUNT_FIELDS
from storage.database import StorageError
from storage.schema import (
    KEYFRAME_INTERVAL,
    OWNING_EVENTS,
    ROLLUP_COLUMNS,
    ROLLUP_STEPS,
    SCHEMA_VERSION,
    STEP_COLUMNS,
    KVBlockEventRow,
    KVKeyframeRow,
    PhaseRow,
    RequestRow,
    Run,
    StepRollupRow,
    StepRow,
    table_of,
)
from storage.workload_key import WorkloadKey

HEARTBEAT_INTERVAL_S = 2.0
_counts_of = operator.attrgetter(*STEP_COUNT_FIELDS)  # a StepCounts as a tuple, in STEP_COLUMNS order
_rollup_values_of = operator.attrgetter(*ROLLUP_SUM_FIELDS)

_runs = table_of(Run)
_requests = table_of(RequestRow)
_steps = table_of(StepRow)
_phases = table_of(PhaseRow)
_kv = table_of(KVBlockEventRow)
_keyframes = table_of(KVKeyframeRow)
_rollups = table_of(StepRollupRow)

_FIRST_TOKEN_FIELDS = ("first_scheduled_time", "first_token_time")
_FINISH_FIELDS = ("first_scheduled_time", "first_token_time", "finish_time", "finish_reason", "output_len",
                  "num_preemptions", "reject_reason")
_CLOSE_FIELDS = ("end_step", "end_time")


KV_COLUMNS = ("run_id", "event_id", "step", "request_id", "kind", "device", "num_blocks", "block_ids")
KEYFRAME_COLUMNS = ("run_id", "device", "step", "owners")
REQUEST_COLUMNS = ("run_id", "request_id", "row_no", "arrival_time", "prompt_len", "max_tokens", "priority",
                   "output_len", "first_scheduled_time", "first_token_time", "finish_time", "finish_reason",
                   "num_preemptions", "reject_reason")
PHASE_COLUMNS = ("run_id", "interval_id", "request_id", "row_no", "phase", "start_step", "end_step", "start_time",
                 "end_time")


def _bulk_insert(conn: Connection, table: Any, rows: list[tuple[Any, ...]], columns: tuple[str, ...]) -> None:
    """executemany straight to the driver: the per-row parameter handling of a Core insert costs
    more than SQLite's own insert at 100,000s of rows. Values are plain ints, floats and strings."""
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([marker] * len(columns))})"
    conn.exec_driver_sql(sql, rows)


def _bulk_update(conn: Connection, table: Any, fields: tuple[str, ...], keys: tuple[str, ...],
                 rows: list[tuple[Any, ...]]) -> None:
    """executemany of `UPDATE table SET fields WHERE keys` straight to the driver (as _bulk_insert);
    each row holds the field values, then the key values."""
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sets = ", ".join(f"{f} = {marker}" for f in fields)
    where = " AND ".join(f"{k} = {marker}" for k in keys)
    conn.exec_driver_sql(f"UPDATE {table.name} SET {sets} WHERE {where}", rows)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Recorder:
    """Records one run. Use as a context manager, or call finish() yourself."""

    def __init__(
        self,
        db: Engine,
        info: RunInfo,
        executor_facts: dict[str, Any] | None = None,
        flush_every_steps: int = 512,
        flush_interval_s: float = 0.5,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
    ) -> None:
        self.db = db
        self.flush_every_steps = flush_every_steps
        self.flush_interval_s = flush_interval_s
        self._lock = threading.Lock()  # the heartbeat thread and flushes take turns
        now = utcnow()
        sweep = info.sweep
        with db.begin() as conn:
            self.run_id: int = conn.execute(
                insert(_runs).returning(_runs.c.id),
                {
                    "name": info.name, "created_at": now, "status": "running", "error": None, "mode": info.mode,
                    "batching": info.batching, "config": info.config, "executor": executor_facts or {},
                    "model": info.model, "workload": info.workload, "heartbeat_at": now, "finished_at": None,
                    "base_run_id": info.base_run_id, "sweep_id": sweep.id if sweep else None,
                    "sweep_param": sweep.param if sweep else None, "sweep_value": sweep.value if sweep else None,
                    "num_steps": 0, "last_time": 0.0, "summary": None, "cost_model": None,
                    "source": info.source, "pid": info.pid, "served_url": info.served_url,
                    "previous_run_id": info.previous_run_id, "lengths_declared": info.lengths_declared,
                    "workload_key": None, "recorded_schema": SCHEMA_VERSION, "validates_run_id": info.validates_run_id,
                    "what_if": None, "validation": None,
                },
            ).scalar_one()
        self._row_of: dict[str, int] = {}
        self._workload_key = WorkloadKey()  # over every arrival, in order
        self._open_interval: dict[str, int] = {}  # request id -> interval id of its current phase
        self._next_interval = 0
        self._next_event = 0
        self._num_steps = 0
        self._last_time = 0.0
        self._new_steps: list[tuple[Any, ...]] = []
        self._new_requests: dict[str, dict[str, Any]] = {}
        self._first_token_updates: dict[str, dict[str, Any]] = {}
        self._finish_updates: dict[str, dict[str, Any]] = {}
        self._new_intervals: dict[int, dict[str, Any]] = {}
        self._interval_closes: list[tuple[Any, ...]] = []
        self._new_kv: list[tuple[Any, ...]] = []
        self._new_keyframes: list[tuple[Any, ...]] = []
        self._new_rollups: list[tuple[Any, ...]] = []
        self._rollup: list[Any] | None = None  # the chunk being summed, in ROLLUP_COLUMNS order
        # The owner of every block, kept to write keyframes (see KVKeyframeRow).
        self._owners: dict[str, list[str | None]] = {"cpu": [None] * int(info.config.get("swap_space") or 0)}
        self._last_flush = time.monotonic()
        self._closed = False
        self._writing = False
        self._stop_heartbeat = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, args=(heartbeat_interval_s,), daemon=True,
                                           name=f"batchscope-heartbeat-{self.run_id}")
        self._heartbeat.start()

    # -- the engine's side ----------------------------------------------------------------------
    def record(self, snapshot: StepSnapshot) -> None:
        if "gpu" not in self._owners:
            self._owners["gpu"] = [None] * snapshot.counts.num_gpu_blocks
        if snapshot.step % KEYFRAME_INTERVAL == 0 and snapshot.step > 0:
            for device, owners in self._owners.items():
                if owners:
                    self._new_keyframes.append((self.run_id, device, snapshot.step, json.dumps(owners)))
        self._add_requests(snapshot.arrivals, snapshot.first_tokens, snapshot.finishes)
        self._add_phase_changes(snapshot.phase_changes)
        self._add_kv_events(snapshot.step, snapshot.kv_events)
        s = snapshot
        self._new_steps.append((self.run_id, s.step, s.start_time, s.end_time, *_counts_of(s.counts),
                                s.num_output_tokens, s.model_time, s.model_flops, s.compute_utilization))
        self._add_to_rollup(s)
        self._num_steps = snapshot.step + 1
        self._last_time = snapshot.end_time
        if (len(self._new_steps) >= self.flush_every_steps
                or time.monotonic() - self._last_flush >= self.flush_interval_s):
            self.flush()

    def record_tail(
        self,
        step: int,
        arrivals: tuple[RequestArrival, ...],
        finishes: tuple[RequestFinish, ...],
        phase_changes: tuple[PhaseChange, ...],
        kv_events: tuple[KVBlockEvent, ...],
    ) -> None:
        self._add_requests(arrivals, (), finishes)
        self._add_phase_changes(phase_changes)
        self._add_kv_events(step, kv_events)
        self.flush()

    # -- buffering ------------------------------------------------------------------------------
    def _add_to_rollup(self, s: StepSnapshot) -> None:
        chunk = s.step // ROLLUP_STEPS
        acc = self._rollup
        if acc is not None and acc[1] != chunk:
            self._close_rollup()
            acc = None
        if acc is None:
            acc = self._rollup = [self.run_id, chunk, 0, s.start_time, *([0] * len(ROLLUP_SUM_FIELDS)), 0]
        acc[2] += 1
        for i, value in enumerate(_rollup_values_of(s.counts), 4):
            acc[i] += value
        acc[-1] = max(acc[-1], s.counts.num_gpu_blocks)
        if s.step % ROLLUP_STEPS == ROLLUP_STEPS - 1:
            self._close_rollup()

    def _close_rollup(self) -> None:
        if self._rollup is not None:
            self._new_rollups.append(tuple(self._rollup))
            self._rollup = None

    def _add_requests(
        self,
        arrivals: tuple[RequestArrival, ...],
        first_tokens: tuple[FirstToken, ...],
        finishes: tuple[RequestFinish, ...],
    ) -> None:
        run_id = self.run_id
        key = self._workload_key
        for a in arrivals:
            key.add(a.request_id, a.arrival_time, a.prompt_len, a.max_tokens, a.priority)
            row_no = self._row_of[a.request_id] = len(self._row_of)
            self._new_requests[a.request_id] = {
                "run_id": run_id, "request_id": a.request_id, "row_no": row_no, "arrival_time": a.arrival_time,
                "prompt_len": a.prompt_len, "max_tokens": a.max_tokens, "priority": a.priority,
                "output_len": None, "first_scheduled_time": None, "first_token_time": None, "finish_time": None,
                "finish_reason": None, "num_preemptions": 0, "reject_reason": None,
            }
        for f in first_tokens:
            fields: dict[str, Any] = {"first_scheduled_time": f.first_scheduled_time,
                                      "first_token_time": f.first_token_time}
            pending = self._new_requests.get(f.request_id)
            if pending is not None:
                pending.update(fields)
            else:
                self._first_token_updates[f.request_id] = fields
        for fin in finishes:
            fields = {
                "first_scheduled_time": fin.first_scheduled_time, "first_token_time": fin.first_token_time,
                "finish_time": fin.finish_time, "finish_reason": fin.finish_reason, "output_len": fin.output_len,
                "num_preemptions": fin.num_preemptions, "reject_reason": fin.reject_reason,
            }
            pending = self._new_requests.get(fin.request_id)
            if pending is not None:
                pending.update(fields)
            else:
                self._first_token_updates.pop(fin.request_id, None)
                self._finish_updates[fin.request_id] = fields

    def _add_phase_changes(self, changes: tuple[PhaseChange, ...]) -> None:
        run_id = self.run_id
        open_interval = self._open_interval
        new = self._new_intervals
        for rid, phase, step, t in changes:
            current = open_interval.pop(rid, None)
            if current is not None:
                pending = new.get(current)
                if pending is not None:
                    pending["end_step"] = step
                    pending["end_time"] = t
                else:
                    self._interval_closes.append((step, t, run_id, current))  # _CLOSE_FIELDS, then keys
            if phase is not None:
                interval_id = self._next_interval
                self._next_interval += 1
                open_interval[rid] = interval_id
                new[interval_id] = {
                    "run_id": run_id, "interval_id": interval_id, "request_id": rid,
                    "row_no": self._row_of.get(rid, -1), "phase": phase, "start_step": step, "end_step": None,
                    "start_time": t, "end_time": None,
                }

    def _add_kv_events(self, step: int, events: tuple[KVBlockEvent, ...]) -> None:
        run_id = self.run_id
        rows = self._new_kv
        event_id = self._next_event
        owners = self._owners
        for rid, kind, device, blocks in events:
            rows.append((run_id, event_id, step, rid, kind, device, len(blocks), json.dumps(blocks)))
            event_id += 1
            pool = owners.setdefault(device, [])
            if blocks and max(blocks) >= len(pool):
                pool.extend([None] * (max(blocks) + 1 - len(pool)))
            owner = rid if (kind, device) in OWNING_EVENTS else None
            for block in blocks:
                pool[block] = owner
        self._next_event = event_id

    # -- writing --------------------------------------------------------------------------------
    @property
    def writing(self) -> bool:
        """True while flush() or finish() is writing (or waiting to). A signal handler must not raise
        then: an exception cut into a transaction can leave the file locked or the buffers half-cleared,
        and the finish that follows would wait on that lock (30 s) and fail."""
        return self._writing

    @contextmanager
    def _write_section(self) -> Iterator[None]:
        self._writing = True
        try:
            yield
        finally:
            self._writing = False

    def flush(self) -> None:
        """Write everything buffered in one transaction; the buffers are emptied only once it commits."""
        with self._write_section(), self._lock:
            with self.db.begin() as conn:
                self._write(conn)
            self._clear_buffers()
        self._last_flush = time.monotonic()

    def _write(self, conn: Connection) -> None:
        if self._new_requests:
            _bulk_insert(conn, _requests, [tuple(row[c] for c in REQUEST_COLUMNS)
                                           for row in self._new_requests.values()], REQUEST_COLUMNS)
        run_id = self.run_id
        if self._first_token_updates:
            _bulk_update(conn, _requests, _FIRST_TOKEN_FIELDS, ("run_id", "request_id"), [
                (*(fields[f] for f in _FIRST_TOKEN_FIELDS), run_id, rid)
                for rid, fields in self._first_token_updates.items()
            ])
        if self._finish_updates:
            _bulk_update(conn, _requests, _FINISH_FIELDS, ("run_id", "request_id"), [
                (*(fields[f] for f in _FINISH_FIELDS), run_id, rid) for rid, fields in self._finish_updates.items()
            ])
        if self._new_intervals:
            _bulk_insert(conn, _phases, [tuple(row[c] for c in PHASE_COLUMNS)
                                         for row in self._new_intervals.values()], PHASE_COLUMNS)
        if self._interval_closes:
            _bulk_update(conn, _phases, _CLOSE_FIELDS, ("run_id", "interval_id"), self._interval_closes)
        if self._new_kv:
            _bulk_insert(conn, _kv, self._new_kv, KV_COLUMNS)
        if self._new_keyframes:
            _bulk_insert(conn, _keyframes, self._new_keyframes, KEYFRAME_COLUMNS)
        if self._new_steps:
            _bulk_insert(conn, _steps, self._new_steps, STEP_COLUMNS)
        if self._new_rollups:
            _bulk_insert(conn, _rollups, self._new_rollups, ROLLUP_COLUMNS)
        conn.execute(update(_runs).where(_runs.c.id == self.run_id).values(
            num_steps=self._num_steps, last_time=self._last_time, heartbeat_at=utcnow()))

    def _clear_buffers(self) -> None:
        self._new_requests = {}
        self._first_token_updates = {}
        self._finish_updates = {}
        self._new_intervals = {}
        self._interval_closes = []
        self._new_kv = []
        self._new_keyframes = []
        self._new_steps = []
        self._new_rollups = []

    def _beat(self, interval: float) -> None:
        while not self._stop_heartbeat.wait(interval):
            try:
                with self._lock, self.db.begin() as conn:
                    conn.execute(update(_runs).where(_runs.c.id == self.run_id).values(heartbeat_at=utcnow()))
            except Exception:
                continue

    def finish(self, status: str = "finished", summary: dict[str, Any] | None = None, error: str | None = None) -> None:
        """Flush, then mark the run finished | aborted | failed, in one transaction. Safe to call twice;
        after a failed attempt (a database locked past its timeout) a second call tries again."""
        if self._closed:
            return
        self._stop_heartbeat.set()
        values: dict[str, Any] = {"status": status, "error": error, "finished_at": utcnow(), "heartbeat_at": utcnow(),
                                  "workload_key": self._workload_key.hexdigest()}
        if summary is not None:
            values["summary"] = summary
        with self._write_section():
            self._heartbeat.join(timeout=5)
            self._close_rollup()  # the last, partial chunk
            try:
                with self._lock, self.db.begin() as conn:
                    self._write(conn)
                    conn.execute(update(_runs).where(_runs.c.id == self.run_id).values(**values))
            except OperationalError as exc:
                why = str(exc.orig if exc.orig is not None else exc).splitlines()[0]
                raise StorageError(f"could not record the end of run {self.run_id} ({why}); "
                                   "it will show as interrupted") from None
            self._clear_buffers()
            self._closed = True

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.finish("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("aborted", error="interrupted by the user")
        else:
            self.finish("failed", error=f"{exc_type.__name__}: {exc}")
