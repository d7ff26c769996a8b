"""Changes to recorded data that a user asks for explicitly: deleting a run."""

from __future__ import annotations

from sqlalchemy import Engine, delete, select, update

from storage.database import StorageError
from storage.schema import KVBlockEventRow, KVKeyframeRow, PhaseRow, RequestRow, Run, StepRollupRow, StepRow, table_of


def delete_run(db: Engine, run_id: int) -> None:
    """Delete a run and all its rows in one transaction; what-if runs based on it keep their rows
    but lose the link. A running run cannot be deleted (its engine would recreate rows)."""
    runs = table_of(Run)
    with db.begin() as conn:
        status = conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar_one_or_none()
        if status is None:
            raise StorageError(f"there is no run {run_id} in this database")
        if status == "running":
            from storage.queries import get_run

            if get_run(db, run_id)["status"] == "running":  # type: ignore[index]
                raise StorageError(f"run {run_id} is still running; stop it first")
        for table in (KVKeyframeRow, KVBlockEventRow, PhaseRow, StepRollupRow, StepRow, RequestRow):
            conn.execute(delete(table_of(table)).where(table_of(table).c.run_id == run_id))
        conn.execute(update(runs).where(runs.c.base_run_id == run_id).values(base_run_id=None))
        conn.execute(delete(runs).where(runs.c.id == run_id))
