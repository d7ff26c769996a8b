"""`python -m engine upgrade-db`: upgrade a database written by an older Batchscope, keeping a copy."""

from __future__ import annotations

import argparse

from cli.args import add_db_arg


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("upgrade-db", help="upgrade an older database in place (a copy is kept as .bak)")
    add_db_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage.database import default_target, describe_target, upgrade_in_place

    target = args.db or default_target()
    if upgrade_in_place(target) is None:
        print(f"{describe_target(target)} is already current")
    return 0
