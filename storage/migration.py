"""Recorded history survives upgrades: a writer that opens a file of an older schema upgrades it in
place, after keeping a copy beside it (FILE.bak; SQLite's backup API, so a WAL's committed pages
are in the copy), in one transaction, so a failed upgrade changes nothing. Readers only read the
schema they understand and say how to upgrade an older file.

Each step below takes a file from version N to N + 1. Runs keep the schema they were recorded
under (runs.recorded_schema), so their costs can be marked as from before a change that affects
them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text

from engine.step_counts import ROLLUP_SUM_FIELDS
from storage.schema import ROLLUP_COLUMNS, ROLLUP_STEPS, SCHEMA_VERSION, Base, Meta, Run, table_of
from storage.workload_key import workload_key_of

FIRST_MIGRATABLE = 1


def backup_path(path: Path) -> Path:
    """FILE.bak, or FILE.bak.2, .3 ... when an earlier upgrade's copy is still there."""
    candidate = path.with_name(path.name + ".bak")
    n = 2
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak.{n}")
        n += 1
    return candidate


def copy_aside(path: Path) -> Path:
    """A consistent copy of a SQLite file (its WAL included) before it is changed."""
    target = backup_path(path)
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    return target


def upgrade(db: Engine, version: int) -> None:
    """Bring a Batchscope database of schema `version` to SCHEMA_VERSION, in one transaction."""
    ddl = _transactional_ddl(db)
    try:
        with ddl.begin() as conn:
            for step in range(version, SCHEMA_VERSION):
                _STEPS[step](conn)
            conn.execute(table_of(Meta).update().where(table_of(Meta).c.key == "schema_version")
                         .values(value=str(SCHEMA_VERSION)))
    finally:
        if ddl is not db:
            ddl.dispose()


def _transactional_ddl(db: Engine) -> Engine:
    """SQLite's Python driver opens a transaction only before INSERT/UPDATE/DELETE, so an ALTER TABLE
    first would commit on its own: take over BEGIN (SQLAlchemy's documented recipe) so the whole
    upgrade is one transaction. PostgreSQL's DDL is transactional already."""
    if db.dialect.name != "sqlite":
        return db
    ddl = create_engine(db.url)

    @event.listens_for(ddl, "connect")
    def _no_driver_transactions(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(ddl, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return ddl


def _add_missing_columns(conn: Connection, table: str, defaults: dict[str, str]) -> None:
    """ALTER TABLE ADD COLUMN for every column the current schema has and the file lacks; defaults
    gives the SQL literal a NOT NULL column is filled with."""
    have = {c["name"] for c in inspect(conn).get_columns(table)}
    for column in Base.metadata.tables[table].columns:
        if column.name in have:
            continue
        sql = f"ALTER TABLE {table} ADD COLUMN {column.name} {column.type.compile(conn.dialect)}"
        if column.name in defaults:
            sql += f" NOT NULL DEFAULT {defaults[column.name]}"
        conn.execute(text(sql))


def _to_2(conn: Connection) -> None:
    """2: static batching's pad rows per step (0: runs before had none computed)."""
    _add_missing_columns(conn, "steps", {"num_padding_tokens": "0"})


def _to_3(conn: Connection) -> None:
    """3: typed run metadata from the free-form `extra` JSON, every existing run marked as recorded
    under the schema the file had; steps and rollups follow StepCounts."""
    recorded = conn.execute(text("SELECT value FROM batchscope_meta WHERE key = 'schema_version'")).scalar_one()
    _add_missing_columns(conn, "runs", {"source": "'workload'", "recorded_schema": str(int(recorded))})
    _steps_follow_step_counts(conn)
    if "extra" not in {c["name"] for c in inspect(conn).get_columns("runs")}:
        return
    rows = conn.execute(text("SELECT id, extra, base_run_id, mode FROM runs")).all()
    for run_id, raw, base_run_id, mode in rows:
        extra: dict[str, Any] = (json.loads(raw) if isinstance(raw, str) else raw) or {}
        runs = table_of(Run)
        conn.execute(runs.update().where(runs.c.id == run_id).values(**_typed_from_extra(extra, base_run_id, mode),
                                                                    workload_key=workload_key_of(conn, run_id)))
    conn.execute(text("ALTER TABLE runs DROP COLUMN extra"))


def _steps_follow_step_counts(conn: Connection) -> None:
    """steps.num_decode_tokens (always num_decode_seqs) goes; the rollups (derived data) are rebuilt
    from the steps with StepCounts' field names."""
    if "num_decode_tokens" in {c["name"] for c in inspect(conn).get_columns("steps")}:
        conn.execute(text("ALTER TABLE steps DROP COLUMN num_decode_tokens"))
    rollups = Base.metadata.tables["step_rollups"]
    if inspect(conn).has_table("step_rollups"):
        conn.execute(text("DROP TABLE step_rollups"))
    rollups.create(conn)
    sums = ", ".join(f"SUM({f})" for f in ROLLUP_SUM_FIELDS)
    conn.execute(text(f"""
        INSERT INTO step_rollups ({", ".join(ROLLUP_COLUMNS)})
        SELECT run_id, step / {ROLLUP_STEPS}, COUNT(*), MIN(start_time), {sums}, MAX(num_gpu_blocks)
        FROM steps GROUP BY run_id, step / {ROLLUP_STEPS}
    """))


def _typed_from_extra(extra: dict[str, Any], base_run_id: int | None, mode: str) -> dict[str, Any]:
    source = "workload"
    if extra.get("source") == "served":
        source = "served"
    elif extra.get("validates") is not None:
        source = "validation"
    elif extra.get("what_if") or (base_run_id is not None and mode == "simulated"):
        source = "what-if"
    values: dict[str, Any] = {"source": source, "pid": extra.get("pid"), "validates_run_id": extra.get("validates"),
                              "what_if": None, "validation": None}
    old = extra.get("what_if")
    if old:
        check = old.get("self_check")
        values["what_if"] = {
            "base_run_id": old.get("base_run_id", base_run_id), "changes": old.get("changes") or {},
            "cost_model": "fitted before held-out trust figures existed",
            "trust": {"holdout": {}, "track_record": [],
                      "warnings": ["predicted before out-of-sample trust figures existed: re-run the what-if"],
                      "consistency": None if not check else {"predicted": check["predicted"],
                                                             "actual": check["recorded"],
                                                             "error_pct": check["error_pct"]}},
        }
    old_validation = extra.get("validation")
    if old_validation:
        values["validation"] = {
            "real_run_id": old_validation["real_run_id"], "model": old_validation.get("model", "?"),
            "check": {"predicted": old_validation["predicted"], "actual": old_validation["real"],
                      "error_pct": old_validation["error_pct"]},
        }
    return values


_STEPS: dict[int, Callable[[Connection], None]] = {1: _to_2, 2: _to_3}
assert set(_STEPS) == set(range(FIRST_MIGRATABLE, SCHEMA_VERSION)), "every older version needs a step"
