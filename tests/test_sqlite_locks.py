"""Opening a database never drops the SQLite locks this process already holds on it.

Closing any descriptor of a file drops every POSIX lock the process holds on that file, its live
SQLite connections' too (sqlite.org/howtocorrupt.html, 2.2). The header check used to read the file
with open()/close(): after it, another process closing its connection took itself for the last
one, checkpointed and deleted the WAL and its index under this process's connections, whose next
read said "database disk image is malformed"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from cli.main import main
from storage.database import open_for_read, open_for_write


def _other_process_opens_and_closes(db: Path) -> None:
    code = (f"import sqlite3; c = sqlite3.connect({str(db)!r}); c.execute('select count(*) from runs').fetchall(); "
            "c.close()")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_opening_again_keeps_the_locks_of_a_live_connection(tmp_path: Path) -> None:
    db = tmp_path / "locks.db"
    writer = open_for_write(str(db))
    try:
        with writer.connect() as live:  # a connection of this process, in WAL mode, held open
            live.execute(text("select count(*) from runs")).fetchall()
            wal = db.with_name(db.name + "-wal")
            assert wal.exists()
            open_for_read(str(db)).dispose()  # what every dashboard page and command does
            open_for_write(str(db)).dispose()
            _other_process_opens_and_closes(db)
            # Not the last connection, so the other process left the WAL to the one still open here.
            assert wal.exists()
            assert live.execute(text("select count(*) from runs")).scalar_one() == 0
    finally:
        writer.dispose()


def test_a_what_if_in_process_then_another_process_leaves_the_database_readable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "w.db"
    assert main(["simulate", "--db", str(db), "--num-prompts", "12", "--request-rate", "20"]) == 0
    assert main(["simulate", "--db", str(db), "--from-run", "1", "--json"]) == 0
    subprocess.run([sys.executable, "-m", "engine", "simulate", "--db", str(db), "--num-prompts", "12"],
                   cwd=Path(__file__).resolve().parents[1], check=True, capture_output=True, timeout=120)
    capsys.readouterr()
    reader = open_for_read(str(db))
    try:
        with reader.connect() as conn:
            assert conn.execute(text("select count(*) from runs where status = 'finished'")).scalar_one() == 3
    finally:
        reader.dispose()


@pytest.mark.parametrize("content", [b"x", b"my notes\n", b"\x00" * 600, b"not a database " * 100])
def test_a_foreign_file_of_any_size_is_refused_and_left_as_it_was(tmp_path: Path, content: bytes) -> None:
    """Files under one SQLite page would pass SQLite's own probe as empty databases (and be written
    over); they are checked by their header instead."""
    from storage.database import ForeignDatabaseError

    path = tmp_path / "notes.db"
    path.write_bytes(content)
    for opener in (open_for_read, open_for_write):
        with pytest.raises(ForeignDatabaseError, match="is not a SQLite database"):
            opener(str(path))
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_a_database_whose_header_is_damaged_is_called_damaged_not_foreign(tmp_path: Path) -> None:
    """The magic intact, the page size invalid: SQLite says 'not a database', but it is one."""
    from storage.database import CorruptDatabaseError

    path = tmp_path / "damaged.db"
    open_for_write(str(path)).dispose()
    data = bytearray(path.read_bytes())
    data[16:18] = (3).to_bytes(2, "big")  # page size 3: not a power of two
    path.write_bytes(bytes(data))
    for opener in (open_for_read, open_for_write):
        with pytest.raises(CorruptDatabaseError, match="its header is damaged"):
            opener(str(path))
    assert path.read_bytes() == bytes(data)
