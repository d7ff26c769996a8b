"""`python -m engine runs`: list recorded runs with their key metrics."""

from __future__ import annotations

import argparse
import json
import sys

from cli.args import add_db_arg

COLUMNS = ("id", "status", "mode", "batching", "name", "num_requests", "num_finished", "output_tokens_per_s",
           "mean_ttft", "mean_e2e", "num_steps")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("runs", help="list recorded runs")
    add_db_arg(p)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage.database import DatabaseMissingError, EmptyDatabaseError, open_for_read
    from storage.queries import list_runs

    try:
        engine = open_for_read(args.db)
    except (DatabaseMissingError, EmptyDatabaseError) as exc:
        print(f"no runs recorded yet ({exc})", file=sys.stderr)
        return 0
    frame = list_runs(engine)
    if args.json:
        json.dump(json.loads(frame.to_json(orient="records", date_format="iso")), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if frame.empty:
        print("no runs recorded yet")
        return 0
    shown = frame[list(COLUMNS)].rename(columns={"output_tokens_per_s": "tok/s", "mean_ttft": "ttft_s",
                                                 "mean_e2e": "e2e_s", "num_requests": "requests",
                                                 "num_finished": "finished", "num_steps": "steps"})
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}", max_colwidth=48))
    return 0
