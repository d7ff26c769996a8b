"""Exports of one recorded run: a Chrome/Perfetto trace, or CSV files of its tables.

Everything is read before anything is written, and files are written under temporary names and
renamed at the end: a failed export leaves no partial file behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from storage.database import StorageError
from storage.queries import get_run, read_frame

_PID_REQUESTS = 1
_PID_ENGINE = 2
TABLES = ("requests", "steps", "request_phases", "kv_block_events", "kv_block_keyframes")
CSV_FILES = ("run.csv", *(f"{table}.csv" for table in TABLES))


def _require_run(db: Engine, run_id: int) -> dict[str, Any]:
    run = get_run(db, run_id)
    if run is None:
        raise StorageError(f"there is no run {run_id} in this database (python -m engine runs lists them)")
    return run


def chrome_trace(db: Engine, run_id: int) -> dict[str, Any]:
    """The run as Trace Event Format: a track per request with its phases as slices, and counter
    tracks for queue lengths and KV usage. Perfetto and chrome://tracing open it."""
    run = _require_run(db, run_id)
    phases = read_frame(db, """
        SELECT p.request_id, p.row_no, p.phase, p.start_step, p.end_step, p.start_time,
               COALESCE(p.end_time, r.last_time) AS end_time
        FROM request_phases p JOIN runs r ON r.id = p.run_id
        WHERE p.run_id = :run ORDER BY p.row_no, p.interval_id
    """, run=run_id)
    steps = read_frame(db, """
        SELECT step, start_time, num_waiting, num_running, num_swapped, num_used_gpu_blocks, num_gpu_blocks,
               num_prefill_tokens, num_decode_seqs
        FROM steps WHERE run_id = :run ORDER BY step
    """, run=run_id)
    events: list[dict[str, Any]] = [
        {"ph": "M", "pid": _PID_REQUESTS, "name": "process_name", "args": {"name": "requests"}},
        {"ph": "M", "pid": _PID_ENGINE, "name": "process_name", "args": {"name": f"engine: {run['name']}"}},
        {"ph": "M", "pid": _PID_REQUESTS, "name": "process_sort_index", "args": {"sort_index": 1}},
        {"ph": "M", "pid": _PID_ENGINE, "name": "process_sort_index", "args": {"sort_index": 0}},
    ]
    for row_no, request_id in phases[["row_no", "request_id"]].drop_duplicates().itertuples(index=False):
        events.append({"ph": "M", "pid": _PID_REQUESTS, "tid": int(row_no), "name": "thread_name",
                       "args": {"name": str(request_id)}})
        events.append({"ph": "M", "pid": _PID_REQUESTS, "tid": int(row_no), "name": "thread_sort_index",
                       "args": {"sort_index": int(row_no)}})
    for p in phases.itertuples(index=False):
        start_us = float(p.start_time) * 1e6
        events.append({
            "ph": "X", "pid": _PID_REQUESTS, "tid": int(p.row_no), "name": p.phase, "cat": p.phase,
            "ts": start_us, "dur": max(float(p.end_time) * 1e6 - start_us, 0.0),
            "args": {"request": p.request_id, "start_step": int(p.start_step),
                     "end_step": None if pd.isna(p.end_step) else int(p.end_step)},
        })
    for s in steps.itertuples(index=False):
        ts = float(s.start_time) * 1e6
        events.append({"ph": "C", "pid": _PID_ENGINE, "name": "queues", "ts": ts,
                       "args": {"waiting": int(s.num_waiting), "running": int(s.num_running),
                                "swapped": int(s.num_swapped)}})
        used = int(s.num_used_gpu_blocks)
        events.append({"ph": "C", "pid": _PID_ENGINE, "name": "KV blocks used", "ts": ts,
                       "args": {"used": used, "free": int(s.num_gpu_blocks) - used}})
        events.append({"ph": "C", "pid": _PID_ENGINE, "name": "tokens per step", "ts": ts,
                       "args": {"prefill": int(s.num_prefill_tokens), "decode": int(s.num_decode_seqs)}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"run_id": run_id, "name": run["name"], "mode": run["mode"], "config": run["config"]}}


def write_chrome_trace(db: Engine, run_id: int, path: Path) -> int:
    """Write the trace to path; returns the number of events."""
    trace = chrome_trace(db, run_id)
    with _replacing([path]) as (tmp,), tmp.open("w", encoding="utf-8") as f:
        json.dump(trace, f, separators=(",", ":"), default=str)
    return len(trace["traceEvents"])


def write_csv(db: Engine, run_id: int, folder: Path) -> list[Path]:
    """One CSV per table (run.csv plus requests, steps, request_phases, kv_block_events and keyframes)
    in folder, which is created if missing (its parent must exist)."""
    run = _require_run(db, run_id)
    frames = [pd.DataFrame([{k: json.dumps(v) if isinstance(v, dict) else v for k, v in run.items()}])]
    frames += [read_frame(db, f"SELECT * FROM {table} WHERE run_id = :run", run=run_id) for table in TABLES]
    created = not folder.exists()
    folder.mkdir(exist_ok=True)
    paths = [folder / name for name in CSV_FILES]
    try:
        with _replacing(paths) as temps:
            for frame, tmp in zip(frames, temps, strict=True):
                frame.to_csv(tmp, index=False)
    except BaseException:
        if created:
            folder.rmdir()  # empty again: the temporary files are gone
        raise
    return paths


@contextmanager
def _replacing(paths: list[Path]) -> Iterator[list[Path]]:
    """Temporary names next to paths; renamed onto them only when the block succeeds, removed otherwise."""
    temps = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in paths]
    try:
        yield temps
        for tmp, path in zip(temps, paths, strict=True):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
