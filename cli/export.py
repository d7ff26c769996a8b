"""`python -m engine export RUN`: a Chrome/Perfetto trace or CSV files of one run.

The output (the trace file, or the CSV folder) is created; the folder it goes in must exist, as
with cp. An existing file is never overwritten without --force, and never the database itself.
Files are written under temporary names and renamed at the end, so a failed export leaves nothing.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cli.args import add_db_arg, positive_int
from engine.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("export", help="export a run as a Chrome/Perfetto trace or CSV files")
    p.add_argument("run_id", type=positive_int, metavar="RUN", help="run id (see `python -m engine runs`)")
    p.add_argument("--format", choices=("chrome-trace", "csv"), default="chrome-trace")
    p.add_argument("--output", "-o", default=None,
                   help="file (chrome-trace; default run-RUN.trace.json) or folder (csv; default run-RUN-csv), "
                        "created in a folder that must exist; existing files are kept unless --force")
    p.add_argument("--force", action="store_true", help="overwrite an existing trace file or CSV files")
    add_db_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage.database import open_for_read
    from storage.export import write_chrome_trace, write_csv

    csv = args.format == "csv"
    out = Path(args.output or (f"run-{args.run_id}-csv" if csv else f"run-{args.run_id}.trace.json"))
    check_output(out, csv, args.force, args.db)
    engine = open_for_read(args.db)
    try:
        if not csv:
            count = write_chrome_trace(engine, args.run_id, out)
            print(f"wrote {out} ({count} events): open it in https://ui.perfetto.dev or chrome://tracing")
        else:
            paths = write_csv(engine, args.run_id, out)
            print(f"wrote {len(paths)} files to {out}: {', '.join(p.name for p in paths)}")
    except OSError as exc:  # a full disk, or permissions that changed under us
        raise UserError(f"cannot write {exc.filename or out}: {exc.strerror or exc}; nothing was written") from None
    finally:
        engine.dispose()
    return 0


def check_output(out: Path, csv: bool, force: bool, db: str | None) -> None:
    """Refuse, in one line, an output that cannot or should not be written."""
    from storage.database import default_target, sqlite_path
    from storage.export import CSV_FILES

    target = out.expanduser().resolve()
    database = sqlite_path(db or default_target())
    if database is not None and target in (database, database.with_name(database.name + "-wal"),
                                           database.with_name(database.name + "-shm")):
        raise UserError(f"{out} is the database being exported from; choose another --output")
    folder = target.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {out}: folder {folder} does not exist (create it first)")
    if csv:
        if target.exists() and not target.is_dir():
            raise UserError(f"{out} is a file; CSV export writes a folder of files: choose another --output")
        if target.is_dir():
            folder = target
            clashes = [name for name in CSV_FILES if (target / name).exists()]
            if clashes and not force:
                raise UserError(f"{out} already holds {', '.join(clashes)}; pass --force to overwrite them "
                                "or choose another --output")
    else:
        if target.is_dir():
            raise UserError(f"{out} is a folder; give a file name for the trace")
        if target.exists() and not force:
            raise UserError(f"{out} already exists; pass --force to overwrite it or choose another --output")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write {out}: folder {folder} is read-only")
