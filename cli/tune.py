"""`python -m engine tune`: the configuration that serves a workload best within its SLOs.

    python -m engine tune --workload azure --length-scale 0.1 --time-scale 0.1 --max-requests 2000 \\
        --slo ttft=500,e2e=5000 --search max_num_seqs=8,16,32,64 max_num_batched_tokens=256,1024,2048 \\
        enable_chunked_prefill=true,false
    python -m engine tune --from-run 3 --slo ttft=300,tpot=50 --search max_num_seqs=4:64:x2 --validate
    python -m engine tune --materialize 5:17

The search itself is tune/; this module parses the flags into it. `main(argv)` runs the command alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cli.args import (
    DEFAULT_SIM_GPU_BLOCKS,
    OneLineParser,
    add_engine_args,
    add_output_args,
    add_workload_args,
    chosen_cost_model,
    engine_config_from_args,
    given_engine_flags,
    positive_int,
    workload_options_from_args,
)
from cli.exit_codes import run_command
from engine.config import ConfigError, EngineConfig
from engine.errors import UserError
from engine.executors.cost_model import named_cost_model
from tune.evaluate import COMPLETE, PRUNE_MODES, PRUNED, PointResult, SearchContext
from tune.space import Axis, check_axes, grid, parse_axis

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tune.source import SearchSource


def parse_target(text: str) -> tuple[int, int]:
    """--materialize SEARCH:POINT."""
    search, sep, point = text.partition(":")
    try:
        if not sep:
            raise ValueError
        ids = int(search), int(point)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SEARCH:POINT, e.g. 3:17, got {text!r}") from None
    if ids[0] < 1 or ids[1] < 0:
        raise argparse.ArgumentTypeError(f"expected SEARCH >= 1 and POINT >= 0, got {text!r}")
    return ids


def _axis(text: str) -> Axis:
    try:
        return parse_axis(text)
    except UserError as exc:  # argparse prints it on one line and exits 2
        raise argparse.ArgumentTypeError(str(exc)) from None


def _attainment(text: str) -> float:
    from tune.slo import parse_attainment

    try:
        return parse_attainment(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("tune", help="search configurations for the best goodput within latency SLOs")
    g = p.add_argument_group("what to tune for")
    g.add_argument("--slo", default=None, metavar="ttft=MS,tpot=MS,e2e=MS",
                   help="per-request latency thresholds in milliseconds, any subset (e2el is e2e)")
    g.add_argument("--attainment", type=_attainment, default=0.99, metavar="PCT",
                   help="share of requests that must meet every threshold, in percent (99)")
    g.add_argument("--search", type=_axis, nargs="+", default=None, metavar="NAME=VALUES",
                   help="parameters and their values, e.g. max_num_seqs=8,16,32 max_num_batched_tokens=256:2048:x2 "
                        "enable_chunked_prefill=true,false policy=fcfs,sjf num_gpu_blocks=256,1024")
    g.add_argument("--from-run", type=positive_int, metavar="RUN",
                   help="search over run RUN's exact requests with its fitted cost model (as a what-if)")
    g.add_argument("--cost-model", choices=("default", "unit"), default=None,
                   help="without --from-run: default (fitted on tiny) or unit; with it: replaces the fitted model")
    g.add_argument("--cost-model-file", default=None, metavar="JSON", help="a cost model from `engine profile -o`")
    g.add_argument("--fit", choices=("run", "pooled"), default="run",
                   help="with --from-run: price steps with the base run's own fit (run), or with one fitted to "
                        "every real run of its model on its device, dtype and thread count (pooled: step shapes "
                        "the base never showed)")
    s = p.add_argument_group("how to search")
    s.add_argument("--jobs", type=positive_int, default=None, help="local worker processes (default: every CPU)")
    s.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the points on a Ray cluster: auto (this machine's `ray start`) or HOST:PORT")
    s.add_argument("--prune", choices=PRUNE_MODES, default="best",
                   help="stop a point once it provably cannot be the recommendation: best (default; also when it "
                        "cannot beat the best goodput found), slo (only when it cannot meet the SLOs: every point "
                        "meeting them keeps its figures), none (simulate every point in full)")
    v = p.add_argument_group("afterwards")
    v.add_argument("--validate", action="store_true",
                   help="record the recommended point as a run, then serve the same requests for real and record "
                        "the prediction's error")
    v.add_argument("--model", default=None, help="with --validate: the model (default: the base run's, else tiny)")
    v.add_argument("--device", default=None, help="with --validate: cpu or cuda")
    v.add_argument("--dtype", default=None, help="with --validate: float32, bfloat16 or float16")
    v.add_argument("--materialize", type=parse_target, default=None, metavar="SEARCH:POINT",
                   help="re-simulate one recorded search point into a normal recorded run (nothing else runs)")
    add_engine_args(p)
    add_workload_args(p)
    add_output_args(p)
    p.set_defaults(func=run)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m engine", description="Batchscope")
    add_parser(parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m engine tune ARGS` without cli/main.py (tests, scripts): the same exit codes."""
    args = build_parser().parse_args(["tune", *(sys.argv[1:] if argv is None else argv)])

    def command() -> int:
        if args.from_run is not None:
            from storage.database import require_database

            require_database(args.db)
        return run(args)

    return run_command(command)


def _source_from_args(args: argparse.Namespace, writer: Engine | None) -> SearchSource:
    """The workload, base configuration and cost model the flags name (writer: the database, where
    --from-run reads its base run and may store the model fitted to it)."""
    from tune.source import from_run, from_workload

    chosen = chosen_cost_model(args)
    if args.from_run is not None:
        if args.workload is not None:
            raise ConfigError("--from-run replays the recorded requests; drop --workload")
        assert writer is not None, "--from-run needs the database"
        return from_run(writer, args.from_run, lambda base: engine_config_from_args(args, base=base), chosen,
                        fit=args.fit)
    if args.fit != "run":
        raise ConfigError("--fit needs --from-run RUN")
    config = engine_config_from_args(args, num_gpu_blocks=DEFAULT_SIM_GPU_BLOCKS)
    return from_workload(args.workload or "mixed", workload_options_from_args(args), config,
                         chosen or named_cost_model("default"))


def run(args: argparse.Namespace) -> int:
    if args.materialize is not None:
        return _materialize(args)
    from storage.database import open_for_write
    from tune.slo import parse_slo

    if not args.slo:
        raise ConfigError("tune needs --slo, e.g. --slo ttft=500,e2e=5000 (milliseconds)")
    if not args.search:
        raise ConfigError("tune needs --search NAME=VALUES ..., e.g. --search max_num_seqs=8,16,32")
    if args.validate and args.no_record:
        raise ConfigError("--validate records the winner and a real run of it; drop --no-record")
    slo = parse_slo(args.slo, args.attainment)
    check_axes(args.search, given_engine_flags(args))
    writer = None
    if args.from_run is not None:
        writer = open_for_write(args.db, create=False)
    elif not args.no_record:
        writer = open_for_write(args.db)
    source = _source_from_args(args, writer)
    points = grid(args.search, source.base_config)
    if not any(p.config is not None for p in points):
        raise ConfigError(f"no combination of --search is a valid configuration, e.g. "
                          f"{points[0].params}: {points[0].invalid_reason}")
    context = SearchContext(source.workload.requests, source.cost_model, slo, prune=args.prune)
    from tune.backends import choose_backend

    with choose_backend(args.jobs, args.ray, sum(p.config is not None for p in points)) as backend:
        header: dict[str, Any] = {
            "search_id": None, "workload": source.workload.description, "num_requests": len(source.workload),
            "base_run_id": source.base.run_id if source.base else None, "cost_model": source.cost_model.name,
            "fit": source.fit, "pooled_runs": list(source.pooled_runs),
            "backend": backend.describe(), "space": {a.name: list(a.values) for a in args.search},
            "prune": args.prune,
        }
        search_id = (_create_search(writer, args, source, header, len(points), slo.to_dict())
                     if writer is not None and not args.no_record else None)
        header["search_id"] = search_id
        outcome = _search(context, points, backend, writer, search_id, quiet=args.json)
    chosen = outcome.recommended or outcome.closest
    trust = None
    if chosen is not None and chosen.config is not None:
        from tune.trust import trust_for

        given = bool(args.cost_model or args.cost_model_file)
        trust = trust_for(writer, source, EngineConfig.from_dict(chosen.config), given)
    from tune.report import build_json, format_text

    report = build_json(outcome, slo, header, trust)
    if writer is not None and search_id is not None:
        from storage.searches import finish_search

        slim = {k: v for k, v in report.items() if k != "points"}  # the points have their own rows
        finish_search(writer, search_id, "finished", outcome.recommended.index if outcome.recommended else None, slim)
    if args.validate:
        if outcome.recommended is None:
            print("nothing to validate: no configuration meets the SLOs", file=sys.stderr)
        else:
            from tune.validate import validate_point

            assert writer is not None and search_id is not None
            report["validation"] = validate_point(args, writer, search_id, outcome.recommended.index, slo,
                                                  outcome.recommended.to_dict())
    if args.json:
        from storage.searches import finite

        json.dump(finite(report), sys.stdout, indent=2, default=str)  # standard JSON: no Infinity
        sys.stdout.write("\n")
    else:
        print(format_text(outcome, slo, header, trust))
        if "validation" in report:
            _print_validation(report["validation"])
    return 0


def _create_search(writer: Any, args: argparse.Namespace, source: Any, header: dict[str, Any], num_points: int,
                   slo: dict[str, float | None]) -> int:
    import os

    from storage.searches import create_search
    from tune.source import workload_digest

    return create_search(writer, {
        "name": args.name or f"tune {source.workload.description[:120]}", "pid": os.getpid(),
        "base_run_id": header["base_run_id"], "workload": source.workload.description,
        "workload_source": source.source, "workload_digest": workload_digest(source.workload.requests),
        "base_config": source.base_config.to_dict(), "cost_model": source.cost_model.to_dict(),
        "cost_notes": {"borrowed": source.borrowed, "unmeasured": source.unmeasured},
        "space": header["space"], "slo": slo, "backend": header["backend"], "prune": header["prune"],
        "num_points": num_points,
    })


def point_row(r: PointResult) -> dict[str, Any]:
    """A search_points row (storage.searches.POINT_COLUMNS) from a result."""
    result = r.to_dict()
    summary = result.pop("summary")
    return {"point": r.index, "params": r.params, "config": r.config, "status": r.status, "reason": r.reason,
            "meets_slo": r.meets_slo, "goodput": r.goodput, "attainment": r.attainment,
            "output_tokens_per_s": r.output_tokens_per_s, "e2e_p99": r.e2e_p99, "ttft_p99": r.ttft_p99,
            "tpot_p99": r.tpot_p99, "result": result, "summary": summary}


def _search(context: SearchContext, points: list[Any], backend: Any, writer: Any, search_id: int | None,
            quiet: bool) -> Any:
    """Run the search, writing each point as it comes and showing progress on a terminal."""
    from contextlib import ExitStack

    from storage.searches import PointWriter, SearchHeartbeat, finish_search
    from tune.search import run_search

    progress = _Progress(len(points), enabled=sys.stderr.isatty() and not quiet)
    point_writer = PointWriter(writer, search_id) if search_id is not None else None

    def on_result(r: PointResult) -> None:
        progress.add(r)
        if point_writer is not None:
            point_writer.add(point_row(r))

    with ExitStack() as stack:
        if search_id is not None:
            stack.enter_context(SearchHeartbeat(writer, search_id))
        try:
            outcome = run_search(context, points, backend, on_result)
            if point_writer is not None:
                point_writer.flush()
        except BaseException as exc:
            if search_id is not None:
                if point_writer is not None:
                    point_writer.flush()  # what finished is kept
                status = "aborted" if isinstance(exc, KeyboardInterrupt) else "failed"
                finish_search(writer, search_id, status, error=f"{type(exc).__name__}: {exc}")
            raise
    progress.close()
    return outcome


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.done = self.pruned = self.meeting = 0
        self._last = 0.0
        self._start = time.monotonic()

    def add(self, r: PointResult) -> None:
        self.done += 1
        self.pruned += r.status == PRUNED
        self.meeting += r.status == COMPLETE and r.meets_slo
        now = time.monotonic()
        if self.enabled and (now - self._last > 1.0 or self.done == self.total):
            self._last = now
            print(f"\r{self.done}/{self.total} points, {self.meeting} meeting the SLOs, {self.pruned} stopped early, "
                  f"{now - self._start:.0f} s", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr)


def _materialize(args: argparse.Namespace) -> int:
    from storage.database import open_for_write
    from tune.materialize import materialize

    search_id, point = args.materialize
    done = materialize(open_for_write(args.db, create=False), search_id, point)
    if args.json:
        json.dump({"search_id": search_id, "point": point, "run_id": done.run_id, "reused": done.reused,
                   "summary": done.summary}, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        verb = "was already recorded as" if done.reused else "recorded as"
        print(f"search {search_id} point {point} {verb} run {done.run_id}")
    return 0


def _print_validation(v: dict[str, Any]) -> None:
    from cli.what_if import print_validation_table

    print(f"\nvalidation: point {v['point']} simulated as run {v['simulated_run_id']}, served for real on {v['model']} "
          f"as run {v['real_run_id']}")
    print_validation_table(v["predicted"], v["real"], v["error_pct"])
    if "real_goodput" in v:
        print(f"  {'goodput (req/s)':<18}{v['predicted_goodput'] or 0:>12.2f}{v['real_goodput']:>12.2f}")
        print(f"  the real run {'meets' if v['real_meets_slo'] else 'misses'} the SLOs "
              f"({v['real_attainment'] * 100:.1f}% of requests within them)")
