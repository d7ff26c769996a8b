"""`python -m engine export RUN`: a Chrome/Perfetto trace or CSV files of one run."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.args import add_db_arg, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("export", help="export a run as a Chrome/Perfetto trace or CSV files")
    p.add_argument("run_id", type=positive_int, metavar="RUN", help="run id (see `python -m engine runs`)")
    p.add_argument("--format", choices=("chrome-trace", "csv"), default="chrome-trace")
    p.add_argument("--output", "-o", default=None,
                   help="file (chrome-trace; default run-RUN.trace.json) or folder (csv; default run-RUN-csv)")
    add_db_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage.database import open_for_read
    from storage.export import write_chrome_trace, write_csv

    engine = open_for_read(args.db)
    if args.format == "chrome-trace":
        path = Path(args.output or f"run-{args.run_id}.trace.json")
        count = write_chrome_trace(engine, args.run_id, path)
        print(f"wrote {path} ({count} events): open it in https://ui.perfetto.dev or chrome://tracing")
    else:
        folder = Path(args.output or f"run-{args.run_id}-csv")
        paths = write_csv(engine, args.run_id, folder)
        print(f"wrote {len(paths)} files to {folder}: {', '.join(p.name for p in paths)}")
    return 0
