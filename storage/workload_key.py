"""A run's workload key: a hash over its requests as they arrived (id, arrival time, prompt length,
declared max_tokens, priority), so runs that served exactly the same requests can be found
together (a what-if's track record compares a prediction with every real run of its workload)."""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, text


class WorkloadKey:
    def __init__(self) -> None:
        self._hash = hashlib.sha1(usedforsecurity=False)
        self.count = 0

    def add(self, request_id: str, arrival_time: float, prompt_len: int, max_tokens: int, priority: int) -> None:
        self._hash.update(f"{request_id}|{arrival_time:.6f}|{prompt_len}|{max_tokens}|{priority}\n".encode())
        self.count += 1

    def hexdigest(self) -> str | None:
        return self._hash.hexdigest() if self.count else None


def workload_key_of(conn: Connection, run_id: int) -> str | None:
    """The key of a run recorded before keys were stored, from its requests in arrival order."""
    key = WorkloadKey()
    rows = conn.execute(text("SELECT request_id, arrival_time, prompt_len, max_tokens, priority FROM requests "
                             "WHERE run_id = :run ORDER BY row_no"), {"run": run_id})
    for row in rows:
        key.add(str(row[0]), float(row[1]), int(row[2]), int(row[3]), int(row[4]))
    return key.hexdigest()
