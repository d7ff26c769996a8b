"""Opening a recording database: a SQLite file by default, any SQLAlchemy URL otherwise.

Writers put SQLite in WAL mode (readers never block the engine) and create the schema on a new
file; writers that only change what is there (delete) never create one. Readers open read-only and
never create or change anything. Every way a database can be wrong (missing, empty, not SQLite,
someone else's, newer, corrupt, read-only, a URL that cannot be parsed or has no driver) raises a
StorageError whose message says what to do.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.exc import DatabaseError as SADatabaseError

from engine.errors import UserError
from storage.schema import APP_ID, SCHEMA_VERSION, Base, Meta, table_of

DEFAULT_DB_FILE = "batchscope.db"
BUSY_TIMEOUT_S = 30.0


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


class OlderSchemaError(SchemaVersionError):
    """A file of an older schema: readers refuse it, the next writer upgrades it (storage/migration.py)."""

    def __init__(self, message: str, version: int) -> None:
        super().__init__(message)
        self.version = version


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
    return _parse_url(target).render_as_string(hide_password=True)


def _parse_url(target: str) -> URL:
    try:
        return make_url(target)
    except (ArgumentError, ValueError):
        raise StorageError(f"--db {target!r} is neither a file path nor a database URL SQLAlchemy can parse "
                           "(e.g. runs.db, sqlite:///runs.db, postgresql://user@host/db)") from None


def _create_engine(target: str, **kwargs: Any) -> Engine:
    """create_engine, with an unknown dialect or a missing driver said in one line."""
    url = _parse_url(target)
    try:
        return create_engine(url, **kwargs)
    except NoSuchModuleError:
        raise StorageError(f"--db {describe_target(target)}: unknown database kind {url.drivername!r}; use a SQLite "
                           "file path, sqlite:///file.db or postgresql://user@host/db") from None
    except ImportError as exc:
        raise StorageError(f"--db {describe_target(target)}: the {url.drivername} driver is not installed "
                           f"({exc}); install it or record into a SQLite file") from None
    except ArgumentError as exc:
        raise StorageError(f"--db {describe_target(target)} is not a usable database URL "
                           f"({str(exc).splitlines()[0]})") from None


def require_database(target: str | None = None) -> None:
    """Raise DatabaseMissingError when target is a SQLite file that does not exist."""
    path = sqlite_path(target or default_target())
    if path is not None and not path.exists():
        raise DatabaseMissingError(f"no database at {path}: check --db (nothing was created)")


def open_for_write(target: str | None = None, create: bool = True) -> Engine:
    """An engine for recording: creates the file and schema if needed (unless create=False: then a
    missing file or empty database is an error and nothing is created), checks them otherwise."""
    target = target or default_target()
    path = sqlite_path(target)
    if path is None:
        db = _create_engine(target, pool_pre_ping=True)
        try:
            _ensure_schema(db, target, create)
        except BaseException:
            db.dispose()
            raise
        return db
    if not create:
        require_database(target)
    if not path.parent.is_dir():
        raise DatabaseMissingError(f"cannot create {path}: folder {path.parent} does not exist")
    _check_writable(path)  # first: a read-only probe of a WAL file leaves -wal and -shm it cannot remove
    _check_sqlite_header(path)
    url = f"sqlite:///{quote(str(path))}"
    connect_args = {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
    # Check (and create) the schema before switching to WAL: a foreign or newer file stays untouched.
    checker = create_engine(url, connect_args=connect_args)
    try:
        _ensure_schema(checker, target, create)
    finally:
        checker.dispose()
    db = create_engine(url, connect_args=connect_args)
    event.listen(db, "connect", _writer_pragmas)
    return db


def _check_writable(path: Path) -> None:
    """A writer fails on its first INSERT otherwise; say so before anything starts."""
    if path.exists() and not os.access(path, os.W_OK):
        raise StorageError(f"{path} is read-only: point --db at a file you can write, or make this one writable")
    if not os.access(path.parent, os.W_OK):
        # SQLite writes its -wal and -shm files next to the database.
        side = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
        if not path.exists():
            raise StorageError(f"cannot create {path}: folder {path.parent} is read-only")
        if not all(p.exists() and os.access(p, os.W_OK) for p in side):
            raise StorageError(f"folder {path.parent} is read-only, and SQLite needs to write {path.name}-wal "
                               "next to the database there; point --db at a writable folder")


def open_for_read(target: str | None = None) -> Engine:
    """A read-only engine; the file is never created or changed by reading."""
    target = target or default_target()
    path = sqlite_path(target)
    if path is not None:
        if not path.exists():
            raise DatabaseMissingError(f"no database at {path} yet: record a run first (python -m engine simulate)")
        _check_sqlite_header(path)
        uri = f"file:{quote(str(path))}?mode=ro&uri=true"
        if not os.access(path.parent, os.W_OK) and not path.with_name(path.name + "-shm").exists():
            # A WAL file is read through its -shm index, which a read-only folder cannot hold; no
            # writer can be at work there either (it would need that index), so read it as immutable.
            uri += "&immutable=1"
        db = create_engine(f"sqlite:///{uri}", connect_args={"timeout": BUSY_TIMEOUT_S,
                                                                  "check_same_thread": False})
    else:
        connect_args = {"options": "-c default_transaction_read_only=on"} if target.startswith("postgresql") else {}
        db = _create_engine(target, pool_pre_ping=True, connect_args=connect_args)
    try:
        check_schema(db, target)
    except BaseException:
        db.dispose()
        raise
    return db


def _writer_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    # Only writers set the journal mode: a reader doing so would change the file.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: block-event index inserts land all over the tree
    cursor.close()


_MIN_PAGE_SIZE = 512  # bytes: SQLite's smallest page, so the smallest database file with any content


def _check_sqlite_header(path: Path) -> None:
    if not path.exists():
        return
    if path.is_dir():
        raise ForeignDatabaseError(f"{path} is a folder, not a database file")
    if not os.access(path, os.R_OK):
        raise StorageError(f"{path} cannot be read (permission denied): point --db at a file you can read")
    size = path.stat().st_size
    if size == 0:
        return  # SQLite takes an empty file as an empty database
    if size >= _MIN_PAGE_SIZE:
        # Read through SQLite, never with open()/close() of our own: closing any descriptor of the file
        # drops every POSIX lock this process holds on it, those of its live SQLite connections too
        # (sqlite.org/howtocorrupt.html, 2.2); another process then takes itself for the last
        # connection and deletes the WAL under them ("database disk image is malformed"). SQLite's own
        # close keeps the descriptor while other connections here hold locks. mode=ro: the file is never
        # written (a WAL file gets its -shm index, as any reader gives it).
        try:
            probe = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=0.5)
            try:
                probe.execute("PRAGMA schema_version").fetchone()
                return
            finally:
                probe.close()
        except sqlite3.DatabaseError as exc:
            if "not a database" not in str(exc):
                return  # SQLite's, but not readable now (busy, a WAL it cannot map): the real open says
    # Files under one page (SQLite would take them as empty, and write over them) and files SQLite
    # cannot read as a database: by their first bytes. No connection of ours holds such a file.
    with path.open("rb") as f:
        head = f.read(16)
    if head != b"SQLite format 3\x00":
        raise ForeignDatabaseError(f"{path} is not a SQLite database; point --db at a Batchscope database or a new "
                                   "file")
    if size >= _MIN_PAGE_SIZE:
        raise CorruptDatabaseError(f"{path} cannot be read as a database (its header is damaged); restore it from "
                                   "a copy, or point --db at another file")


def check_schema(db: Engine, target: str) -> None:
    """Raise unless the database holds a Batchscope schema this version can read."""
    where = describe_target(target)
    try:
        tables = set(inspect(db).get_table_names())
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
        with db.connect() as conn:
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
        raise OlderSchemaError(
            f"{where} was written by an older Batchscope (schema {version}; this one reads {SCHEMA_VERSION}). "
            f"Upgrade it in place with `python -m engine upgrade-db --db {where}` (a copy is kept as .bak; "
            "any command that records into it does the same); it was not changed",
            version,
        )


def _ensure_schema(db: Engine, target: str, create: bool = True) -> None:
    for attempt in range(3):
        try:
            check_schema(db, target)
            _add_derived_tables(db)
            return
        except OlderSchemaError as older:
            _upgrade(db, target, older.version)
            continue
        except EmptyDatabaseError:
            if not create:
                raise
        try:
            Base.metadata.create_all(db)
            with db.begin() as conn:
                conn.execute(table_of(Meta).insert(), [
                    {"key": "app", "value": APP_ID},
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                ])
            return
        except (IntegrityError, OperationalError):
            if attempt == 2:
                raise  # another writer raced us twice; give up loudly
    check_schema(db, target)


def _upgrade(db: Engine, target: str, version: int) -> None:
    """Keep a copy of an older file, then upgrade it in place (one transaction: all or nothing)."""
    from storage.migration import copy_aside, upgrade

    path = sqlite_path(target)
    copy = copy_aside(path) if path is not None else None
    try:
        upgrade(db, version)
    except Exception as exc:
        kept = f"; it is unchanged, and a copy is at {copy}" if copy else "; it is unchanged"
        raise StorageError(f"could not upgrade {describe_target(target)} from schema {version} ({_first_line(exc)})"
                           f"{kept}") from exc
    if copy is not None:
        print(f"upgraded {path} from schema {version} to {SCHEMA_VERSION}; the old file is kept as {copy}",
              file=sys.stderr)


def upgrade_in_place(target: str | None = None) -> int | None:
    """`upgrade-db`: upgrade an older file now; the schema it had, or None when it was current."""
    target = target or default_target()
    require_database(target)
    probe = _create_engine(target) if sqlite_path(target) is None else create_engine(
        f"sqlite:///{quote(str(sqlite_path(target)))}")
    try:
        check_schema(probe, target)
        return None
    except OlderSchemaError as older:
        version = older.version
    finally:
        probe.dispose()
    open_for_write(target, create=False).dispose()
    return version


def _add_derived_tables(db: Engine) -> None:
    """Create tables of derived data that a file from an earlier build of this schema version lacks
    (step_rollups): additive only, and the runs recorded before read the same from their steps."""
    try:
        Base.metadata.create_all(db)  # checks first; creates only what is missing
    except OperationalError:
        if not all(inspect(db).has_table(t) for t in Base.metadata.tables):
            raise  # not a race with another writer creating the same table


def _explain(exc: OperationalError, where: str) -> StorageError:
    text = _first_line(exc)
    if "not a database" in text or "malformed" in text or "disk image" in text:
        return CorruptDatabaseError(f"{where} is damaged or not a database ({text})")
    if "unable to open" in text:  # the file exists (checked before): its permissions or its folder's
        return StorageError(f"cannot open {where} ({text}): check the permissions of the file and its folder")
    return StorageError(f"cannot read {where}: {text}")


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).splitlines()[0]
