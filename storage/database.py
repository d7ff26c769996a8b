"""Opening a recording database: a SQLite file by default, any SQLAlchemy URL otherwise.

Writers put SQLite in WAL mode (readers never block the engine) and create the schema on a new
file. Readers open read-only and never create or change anything. Every way a database can be
wrong (missing, empty, not SQLite, someone else's, newer, corrupt) raises a StorageError whose
message says what to do.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.exc import DatabaseError as SADatabaseError
from sqlalchemy.exc import IntegrityError, OperationalError

from engine.errors import UserError
from storage.schema import APP_ID, SCHEMA_VERSION, Base, Meta, table_of

DEFAULT_DB_FILE = "batchscope.db"
BUSY_TIMEOUT_S = 30.0
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StorageError(UserError):
    """A database problem explained for the user."""


class DatabaseMissingError(StorageError):
    pass


class EmptyDatabaseError(StorageError):
    """The file exists but holds no tables yet: no runs have been recorded."""


class ForeignDatabaseError(StorageError):
    pass


class SchemaVersionError(StorageError):
    pass


class CorruptDatabaseError(StorageError):
    pass


def default_target() -> str:
    """$BATCHSCOPE_DB, else batchscope.db in the working directory."""
    return os.environ.get("BATCHSCOPE_DB") or DEFAULT_DB_FILE


def is_url(target: str) -> bool:
    return "://" in target


def sqlite_path(target: str) -> Path | None:
    """The file behind a target, or None for a non-SQLite URL."""
    if not is_url(target):
        return Path(target).expanduser().resolve()
    if target.startswith("sqlite"):
        raw = target.split(":///", 1)[1] if ":///" in target else ""
        raw = raw.split("?", 1)[0]
        if raw.startswith("file:"):
            raw = raw[5:]
        return Path(raw).resolve() if raw and raw != ":memory:" else None
    return None


def describe_target(target: str) -> str:
    """For messages: the file path, or the URL without its password."""
    path = sqlite_path(target)
    if path is not None:
        return str(path)
    from sqlalchemy.engine import make_url

    return make_url(target).render_as_string(hide_password=True)


def open_for_write(target: str | None = None) -> Engine:
    """An engine for recording: creates the file and schema if needed, checks them otherwise."""
    target = target or default_target()
    path = sqlite_path(target)
    if path is None:
        engine = create_engine(target, pool_pre_ping=True)
        try:
            _ensure_schema(engine, target)
        except BaseException:
            engine.dispose()
            raise
        return engine
    if not path.parent.is_dir():
        raise DatabaseMissingError(f"cannot create {path}: folder {path.parent} does not exist")
    _check_sqlite_header(path)
    url = f"sqlite:///{quote(str(path))}"
    connect_args = {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
    # Check (and create) the schema before switching to WAL: a foreign or newer file stays untouched.
    checker = create_engine(url, connect_args=connect_args)
    try:
        _ensure_schema(checker, target)
    finally:
        checker.dispose()
    engine = create_engine(url, connect_args=connect_args)
    event.listen(engine, "connect", _writer_pragmas)
    return engine


def open_for_read(target: str | None = None) -> Engine:
    """A read-only engine; the file is never created or changed by reading."""
    target = target or default_target()
    path = sqlite_path(target)
    if path is not None:
        if not path.exists():
            raise DatabaseMissingError(f"no database at {path} yet: record a run first (python -m engine simulate)")
        _check_sqlite_header(path)
        uri = f"file:{quote(str(path))}?mode=ro&uri=true"
        engine = create_engine(f"sqlite:///{uri}", connect_args={"timeout": BUSY_TIMEOUT_S,
                                                                  "check_same_thread": False})
    else:
        connect_args = {"options": "-c default_transaction_read_only=on"} if target.startswith("postgresql") else {}
        engine = create_engine(target, pool_pre_ping=True, connect_args=connect_args)
    try:
        check_schema(engine, target)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _writer_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    # Only writers set the journal mode: a reader doing so would change the file.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: block-event index inserts land all over the tree
    cursor.close()


def _check_sqlite_header(path: Path) -> None:
    if not path.exists():
        return
    if path.is_dir():
        raise ForeignDatabaseError(f"{path} is a folder, not a database file")
    with path.open("rb") as f:
        head = f.read(16)
    if head and head != _SQLITE_MAGIC:
        raise ForeignDatabaseError(
            f"{path} is not a SQLite database; point --db at a Batchscope database or a new file"
        )


def check_schema(engine: Engine, target: str) -> None:
    """Raise unless the database holds a Batchscope schema this version can read."""
    where = describe_target(target)
    try:
        tables = set(inspect(engine).get_table_names())
    except OperationalError as exc:
        raise _explain(exc, where) from None
    except SADatabaseError as exc:
        raise CorruptDatabaseError(f"{where} cannot be read as a database ({_first_line(exc)})") from None
    if not tables:
        raise EmptyDatabaseError(f"{where} holds no recorded runs yet")
    if Meta.__tablename__ not in tables:
        shown = ", ".join(sorted(tables)[:5])
        raise ForeignDatabaseError(
            f"{where} is a database but not a Batchscope one (it has tables: {shown}); "
            "point --db at another file"
        )
    try:
        with engine.connect() as conn:
            meta = dict(conn.execute(select(Meta.key, Meta.value)).all())  # type: ignore[arg-type]
    except SADatabaseError as exc:
        raise CorruptDatabaseError(f"{where} is damaged ({_first_line(exc)})") from None
    if not meta:  # another writer created the tables and has not yet written their marker rows
        raise EmptyDatabaseError(f"{where} is being created and holds no recorded runs yet")
    if meta.get("app") != APP_ID:
        raise ForeignDatabaseError(f"{where} has a batchscope_meta table but was not written by Batchscope")
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} was written by a newer Batchscope (schema {version}; this one reads schema "
            f"{SCHEMA_VERSION}). Upgrade Batchscope; the file was not changed."
        )
    if version < SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} holds schema {version}, older than this Batchscope's {SCHEMA_VERSION}; "
            "record into a new file (the old one was not changed)"
        )


def _ensure_schema(engine: Engine, target: str) -> None:
    for attempt in range(3):
        try:
            check_schema(engine, target)
            _add_derived_tables(engine)
            return
        except EmptyDatabaseError:
            pass
        try:
            Base.metadata.create_all(engine)
            with engine.begin() as conn:
                conn.execute(table_of(Meta).insert(), [
                    {"key": "app", "value": APP_ID},
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                ])
            return
        except (IntegrityError, OperationalError):
            if attempt == 2:
                raise  # another writer raced us twice; give up loudly
    check_schema(engine, target)


def _add_derived_tables(engine: Engine) -> None:
    """Create tables of derived data that a file from an earlier build of this schema version lacks
    (step_rollups): additive only, and the runs recorded before read the same from their steps."""
    try:
        Base.metadata.create_all(engine)  # checks first; creates only what is missing
    except OperationalError:
        if not all(inspect(engine).has_table(t) for t in Base.metadata.tables):
            raise  # not a race with another writer creating the same table


def _explain(exc: OperationalError, where: str) -> StorageError:
    text = _first_line(exc)
    if "not a database" in text or "malformed" in text or "disk image" in text:
        return CorruptDatabaseError(f"{where} is damaged or not a database ({text})")
    if "unable to open" in text:
        return DatabaseMissingError(f"cannot open {where} ({text})")
    return StorageError(f"cannot read {where}: {text}")


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).splitlines()[0]
