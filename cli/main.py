"""`python -m engine`: simulate, run, serve, bench serve, tune, runs, export, delete, sweep, profile, upgrade-db.

Subcommand modules import their heavy dependencies (torch, pandas, SQLAlchemy) inside run(),
so `python -m engine simulate --no-record` starts in well under a second.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cli import bench_serve, delete, export, profile, run, runs, serve, simulate, sweep, tune, upgrade_db
from cli.args import OneLineParser
from cli.exit_codes import run_command


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m engine", description="Batchscope: a serving engine you can watch.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for module in (simulate, run, runs, export, delete, sweep, profile, upgrade_db, tune):
        module.add_parser(subparsers)
    serve.add_serve_parser(subparsers)  # the OpenAI-compatible server and its benchmark client (serving/)
    bench_serve.add_bench_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "from_run", None) is not None:
        _require_database(args.db)
    return int(args.func(args))


def _require_database(db: str | None) -> None:
    """--from-run reads a recorded run: a missing file means a mistyped --db, never a new database."""
    from storage.database import require_database

    require_database(db)
