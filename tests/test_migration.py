"""Recorded history survives upgrades: a file written by the first release (tests/data/schema1.db:
a simulated run, a real run, a what-if of it with its validation, a two-run sweep, a static run)
is upgraded in place by the next writer, a copy kept beside it; readers refuse it unchanged."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from cli.main import main
from storage import queries
from storage.database import OlderSchemaError, open_for_read, open_for_write
from storage.run_meta import run_meta
from storage.schema import SCHEMA_VERSION

FIXTURE = Path(__file__).parent / "data" / "schema1.db"


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    path = tmp_path / "history.db"
    shutil.copy(FIXTURE, path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT value FROM batchscope_meta WHERE key = 'schema_version'").fetchone()[0])


def test_a_reader_refuses_an_older_file_says_how_to_upgrade_and_changes_nothing(old_db: Path) -> None:
    before = _digest(old_db)
    with pytest.raises(OlderSchemaError, match="upgrade-db"):
        open_for_read(str(old_db))
    assert _digest(old_db) == before


def test_a_writer_upgrades_in_place_keeping_a_copy(old_db: Path) -> None:
    before = _digest(old_db)
    open_for_write(str(old_db)).dispose()
    assert _version(old_db) == SCHEMA_VERSION
    copy = old_db.with_name("history.db.bak")
    assert _version(copy) == 1
    with sqlite3.connect(copy) as a, sqlite3.connect(FIXTURE) as b:  # the copy holds every row of the original
        for table in ("runs", "requests", "steps", "request_phases", "kv_block_events"):
            assert a.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == b.execute(
                f"SELECT COUNT(*) FROM {table}").fetchone()
    assert _digest(old_db) != before
    open_for_write(str(old_db)).dispose()  # a second writer finds it current: no second copy
    assert not old_db.with_name("history.db.bak.2").exists()


def test_every_recorded_run_reads_back_typed_and_marked_as_before_the_truthful_engine(old_db: Path) -> None:
    open_for_write(str(old_db)).dispose()
    reader = open_for_read(str(old_db))
    runs = queries.list_runs(reader)
    assert sorted(runs["id"]) == [1, 2, 3, 4, 5, 6, 7] and set(runs["status"]) == {"finished"}
    meta = {i: run_meta(queries.get_run(reader, i)) for i in range(1, 8)}  # type: ignore[arg-type]
    assert all(m.recorded_schema == 1 and m.before_truthful_engine for m in meta.values())
    assert all(m.pid is not None for m in meta.values())
    assert [meta[i].source for i in range(1, 8)] == ["workload", "workload", "what-if", "validation", "workload",
                                                     "workload", "workload"]
    what_if = meta[3].what_if
    assert what_if is not None and what_if.base_run_id == 2 and what_if.changes == {"max_num_seqs": 8}
    assert what_if.trust.consistency is not None and what_if.trust.warnings  # says it predates the trust figures
    assert meta[3].validation is not None and meta[3].validation.real_run_id == 4
    assert meta[4].validates_run_id == 3
    sweep = queries.get_run(reader, 5)
    assert sweep is not None and sweep["sweep_param"] == "max_num_seqs" and sweep["sweep_value"] == "2"
    steps = queries.steps_window(reader, 7, 0, 10)
    assert (steps["num_padding_tokens"] == 0).all()  # the old static baseline computed no pad rows
    assert "extra" not in queries.get_run(reader, 1)  # type: ignore[operator]


def test_a_what_if_of_an_upgraded_run_works(old_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--db", str(old_db), "--from-run", "1", "--max-num-seqs", "2", "--json"]) == 0
    assert '"base_run_id": 1' in capsys.readouterr().out
    assert main(["simulate", "--db", str(old_db), "--num-prompts", "5"]) == 0  # and new runs record beside them
    capsys.readouterr()
    assert main(["runs", "--db", str(old_db)]) == 0
    assert "what-if of run 1" in capsys.readouterr().out


def test_upgrade_db_command(old_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upgrade-db", "--db", str(old_db)]) == 0
    assert "from schema 1" in capsys.readouterr().err
    assert main(["upgrade-db", "--db", str(old_db)]) == 0
    assert "already current" in capsys.readouterr().out
    assert main(["upgrade-db", "--db", str(old_db.with_name("missing.db"))]) == 2


def test_a_failed_upgrade_changes_nothing(old_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from storage import migration

    def broken(conn: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setitem(migration._STEPS, 2, broken)  # the first step ran, the second fails
    with pytest.raises(Exception, match="could not upgrade"):
        open_for_write(str(old_db))
    assert _version(old_db) == 1
    with sqlite3.connect(old_db) as conn:
        assert "num_padding_tokens" not in {row[1] for row in conn.execute("PRAGMA table_info(steps)")}


def test_a_newer_file_is_refused_unchanged(old_db: Path) -> None:
    with sqlite3.connect(old_db) as conn:
        conn.execute("UPDATE batchscope_meta SET value = '99' WHERE key = 'schema_version'")
    before = _digest(old_db)
    for opener in (open_for_read, open_for_write):
        with pytest.raises(Exception, match="newer Batchscope"):
            opener(str(old_db))
    assert _digest(old_db) == before
