"""`bench serve` on the command line: `vllm bench serve`'s flags and result names, against any
OpenAI-compatible server (serving/bench_client.py sends, serving/bench_metrics.py counts).

    python -m engine bench serve --base-url http://127.0.0.1:8000 --workload mixed --request-rate 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli.args import OneLineParser, add_workload_args, positive_float, positive_int, workload_options_from_args
from engine.config import ConfigError


def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("bench", help="benchmarks: `bench serve` drives any OpenAI-compatible server")
    sub = p.add_subparsers(dest="bench_command", required=True, parser_class=OneLineParser)
    s = sub.add_parser("serve", help="stream a workload to a server and print vllm bench serve's figures")
    s.add_argument("--base-url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    s.add_argument("--model", default=None, help="model name to send (default: the first in /v1/models)")
    s.add_argument("--api-key", default=None, help="sent as 'Authorization: Bearer KEY'")
    add_workload_args(s)
    s.add_argument("--burstiness", type=positive_float, default=1.0,
                   help="gamma shape of the arrival gaps at --request-rate (1.0: Poisson; lower: burstier)")
    s.add_argument("--goodput", nargs="+", default=None, metavar="KEY:MS",
                   help="SLOs a good request meets: ttft:MS tpot:MS e2el:MS (any subset)")
    s.add_argument("--vocab-size", type=positive_int, default=None,
                   help="synthetic prompt ids stay below this (32000; match the server's model)")
    s.add_argument("--save-result", default=None, metavar="FILE", help="write the result JSON here")
    s.add_argument("--db", default=None,
                   help="store the client's figures beside the server-side runs in this database (Batchscope servers)")
    s.set_defaults(func=run_bench_serve)


def run_bench_serve(args: argparse.Namespace) -> int:
    from engine.workload import resolve_workload
    from serving.bench_metrics import parse_goodput, send_times

    try:
        goodput = parse_goodput(args.goodput)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    workload = resolve_workload(args.workload, workload_options_from_args(args))
    specs = workload.requests[: args.num_prompts]  # as vllm bench serve, --num-prompts of any workload
    generated = args.workload in (None, "uniform", "mixed")
    if args.request_rate != float("inf") and (args.burstiness != 1.0 or not generated):
        times = send_times(len(specs), args.request_rate, args.burstiness, args.seed)
    else:  # the workload's own arrivals: Poisson at --request-rate for generated ones, the trace's times
        times = [s.arrival_time for s in specs]
    base_url = args.base_url.rstrip("/").removesuffix("/v1")
    if not re.match(r"^https?://[^/]", base_url):
        raise ConfigError(f"--base-url {args.base_url!r} is not an http:// or https:// URL, e.g. http://127.0.0.1:8000")
    save = _save_target(args.save_result)  # before the benchmark runs: its figures are not lost to a bad path
    writer = _open_bench_db(args.db)
    try:
        return _bench(args, base_url, workload, specs, times, goodput, save, writer)
    finally:
        if writer is not None:
            writer.dispose()


def _save_target(path: str | None) -> Path | None:
    if path is None:
        return None
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"--save-result {path} is a folder: give a file name")
    if not target.parent.is_dir():
        raise ConfigError(f"--save-result {path}: folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ConfigError(f"--save-result {path}: cannot write there (read-only)")
    return target


def _open_bench_db(db: str | None) -> Any:
    if db is None:
        return None
    from storage.client_results import save_benchmark  # noqa: F401  registers its tables before the writer opens
    from storage.database import open_for_write

    return open_for_write(db)


def _write_result(target: Path, result: dict[str, Any]) -> None:
    """Whole or not at all (a temporary file renamed over it), and an existing file replaced is said."""
    existed = target.exists()
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(json.dumps(result, indent=2, default=str))
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write --save-result {target}: {exc.strerror or exc}") from None
    print(f"{'replaced' if existed else 'wrote'} {target}", file=sys.stderr)


def _bench(args: argparse.Namespace, base_url: str, workload: Any, specs: Sequence[Any], times: Sequence[float],
           goodput: Any, save: Path | None, writer: Any) -> int:
    from serving.bench_client import DEFAULT_VOCAB_SIZE, ClientOptions, run_requests
    from serving.bench_metrics import calculate, format_result

    started = datetime.now(UTC)
    options = ClientOptions(base_url, args.model, args.api_key, args.max_concurrency,
                            args.vocab_size or DEFAULT_VOCAB_SIZE, id_prefix=f"bench-{started:%Y%m%d-%H%M%S-%f}-")
    of = f" of {len(workload.requests)}" if len(specs) < len(workload.requests) else ""
    capped = " (--num-prompts)" if of else ""
    print(f"bench serve: {len(specs)}{of} requests{capped} to {base_url} ({workload.description})",
          file=sys.stderr, flush=True)
    results, duration, model = asyncio.run(run_requests(options, specs, times))
    result = calculate(results, duration, goodput)
    result |= {"date": f"{started:%Y%m%d-%H%M%S}", "num_prompts": len(specs), "model_id": model,
               "base_url": base_url, "request_rate": args.request_rate,
               "burstiness": args.burstiness, "max_concurrency": args.max_concurrency, "goodput": goodput,
               "workload": workload.description}
    print(format_result(result, args.max_concurrency, args.request_rate))
    if writer is not None:  # the database first: a file that fails to write then loses nothing stored
        _store(writer, args.db, base_url, model, workload.description, result, results)
    if save is not None:
        _write_result(save, result)
    first_error = next((r.error for r in results if not r.success), None)
    if first_error:
        print(f"{result['failed']} request(s) failed; the first: {first_error}", file=sys.stderr)
    return 0 if result["completed"] else 1


def _store(engine: Any, db: str, base_url: str, model: str, workload: str, result: dict[str, Any],
           results: Sequence[Any]) -> None:
    from serving.bench_metrics import tpot_of
    from storage.client_results import ClientRequest, save_benchmark

    figures = {k: v for k, v in result.items() if not isinstance(v, list)}
    settings = {k: result[k] for k in ("request_rate", "burstiness", "max_concurrency", "goodput")}
    rows = [ClientRequest(r.request_id, r.run_id, r.success, r.error or None, r.prompt_len, r.output_tokens,
                          r.start_time, r.ttft if r.success else None, tpot_of(r), r.latency if r.success else None,
                          r.itl) for r in results]
    bench_id, missing = save_benchmark(engine, base_url, model, workload, settings, figures, rows)
    note = f" (runs {', '.join(map(str, missing))} are not in this database: stored without a run)" if missing else ""
    print(f"stored as client benchmark {bench_id} in {db}{note}", file=sys.stderr)
