"""`python -m engine delete RUN`: remove a recorded run and all its rows."""

from __future__ import annotations

import argparse

from cli.args import add_db_arg, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("delete", help="delete a recorded run")
    p.add_argument("run_id", type=positive_int, metavar="RUN")
    add_db_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage.admin import delete_run
    from storage.database import open_for_write

    delete_run(open_for_write(args.db, create=False), args.run_id)  # a mistyped --db creates nothing
    print(f"deleted run {args.run_id}")
    return 0
