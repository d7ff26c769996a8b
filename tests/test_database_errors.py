"""Every way a database file can be wrong gets a clear StorageError, and reading changes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from storage.database import (
    CorruptDatabaseError,
    DatabaseMissingError,
    EmptyDatabaseError,
    ForeignDatabaseError,
    SchemaVersionError,
    open_for_read,
    open_for_write,
)
from storage.schema import SCHEMA_VERSION
from tests.recording import record_simulation


def test_missing_file_is_reported_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nothing.db"
    with pytest.raises(DatabaseMissingError, match=r"no database at .*record a run first"):
        open_for_read(str(path))
    assert not path.exists()


def test_empty_file_reads_as_no_runs_yet(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(EmptyDatabaseError, match="no recorded runs yet"):
        open_for_read(str(path))
    assert path.read_bytes() == b""


def test_a_text_file_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("just some notes\n" * 10)
    for opener in (open_for_read, open_for_write):
        with pytest.raises(ForeignDatabaseError, match="is not a SQLite database"):
            opener(str(path))
    assert path.read_text() == "just some notes\n" * 10


def test_someone_elses_sqlite_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    for opener in (open_for_read, open_for_write):
        with pytest.raises(ForeignDatabaseError, match=r"not a Batchscope one .*invoices"):
            opener(str(path))
    assert path.read_bytes() == before


def test_a_newer_schema_is_refused_without_migration(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    record_simulation(path, num_requests=3)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE batchscope_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    before = path.read_bytes()
    for opener in (open_for_read, open_for_write):
        with pytest.raises(SchemaVersionError, match=r"newer Batchscope .* Upgrade"):
            opener(str(path))
    assert path.read_bytes() == before


def test_a_corrupt_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    record_simulation(path, num_requests=3)
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # wreck the schema page behind a valid header
    path.write_bytes(bytes(data))
    with pytest.raises((CorruptDatabaseError, ForeignDatabaseError)):
        open_for_read(str(path))


def test_writer_needs_an_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatabaseMissingError, match="does not exist"):
        open_for_write(str(tmp_path / "no" / "such" / "dir.db"))


def test_several_runs_share_one_database(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    first, _, _ = record_simulation(path, num_requests=5, seed=1)
    second, _, _ = record_simulation(path, num_requests=7, seed=2)
    from storage.queries import list_runs

    runs = list_runs(open_for_read(str(path))).set_index("id")
    assert runs.loc[first, "num_requests"] == 5 and runs.loc[second, "num_requests"] == 7


def test_the_sqlite_reader_cannot_write(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    record_simulation(db, num_requests=3)
    reader = open_for_read(str(db))
    with pytest.raises(DBAPIError, match="readonly"), reader.begin() as conn:
        conn.execute(text("UPDATE runs SET name = 'changed'"))


def test_tables_without_their_marker_rows_read_as_a_database_being_created(tmp_path: Path) -> None:
    """What a second writer sees between the first one's CREATE TABLEs and its marker rows."""
    from sqlalchemy import create_engine

    from storage.schema import Base

    path = tmp_path / "racing.db"
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    with pytest.raises(EmptyDatabaseError, match="being created"):
        open_for_read(str(path))
    record_simulation(path, num_requests=3)  # a writer finishes the creation and records
    from storage.queries import list_runs

    assert len(list_runs(open_for_read(str(path)))) == 1
