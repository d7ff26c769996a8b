"""`python -m engine runs`: list recorded runs with their key metrics.

The runs of a configuration search (its points recorded step by step, real runs validating them)
belong to their search: they are left out unless --all is given, and a line says how many.
"""

from __future__ import annotations

import argparse
import json
import sys

from cli.args import add_db_arg

COLUMNS = ("id", "status", "source", "mode", "batching", "name", "num_requests", "num_finished",
           "output_tokens_per_s", "mean_ttft", "itl_p50", "itl_p99", "mean_e2e", "num_steps")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("runs", help="list recorded runs")
    add_db_arg(p)
    p.add_argument("--all", action="store_true",
                   help="also the runs of configuration searches (tune --materialize, --validate), with their "
                        "search and point")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from storage.database import DatabaseMissingError, EmptyDatabaseError, open_for_read
    from storage.queries import list_runs
    from storage.searches import grouped_runs, without_search_runs

    try:
        engine = open_for_read(args.db)
    except (DatabaseMissingError, EmptyDatabaseError) as exc:
        print(f"no runs recorded yet ({exc})", file=sys.stderr)
        return 0
    every, grouped = list_runs(engine), grouped_runs(engine)
    outside = without_search_runs(every, grouped)
    hidden = len(every) - len(outside)
    if args.all:
        where = {int(r.run_id): f"{int(r.search_id)}:{int(r.point)}" + (" validation" if r.role == "validation" else "")
                 for r in grouped.itertuples()}
        frame = every.assign(search=[where.get(int(i)) for i in every["id"]])
    else:
        frame = outside
    note = (f"{hidden} run{'s' if hidden != 1 else ''} of configuration searches not shown "
            "(--all shows them; the dashboard lists them under their search)") if hidden and not args.all else None
    if args.json:
        json.dump(json.loads(frame.to_json(orient="records", date_format="iso")), sys.stdout, indent=2)
        sys.stdout.write("\n")
        if note:
            print(note, file=sys.stderr)
        return 0
    if frame.empty:
        print("no runs recorded yet" if not hidden else "no runs outside configuration searches")
    else:
        columns = [*COLUMNS, "search"] if args.all else list(COLUMNS)
        shown = frame[columns].rename(columns={"output_tokens_per_s": "tok/s", "mean_ttft": "ttft_s",
                                               "itl_p50": "itl_p50_s", "itl_p99": "itl_p99_s",
                                               "mean_e2e": "e2e_s", "num_requests": "requests",
                                               "num_finished": "finished", "num_steps": "steps"})
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}", max_colwidth=48, na_rep=""))
    if note:
        print(note)
    return 0
