"""Recording at scale: a simulated run of 10,000 Azure-trace requests (~100,000 steps) written to
SQLite, then every read-side query the dashboard makes, timed.

    python bench/bench_storage.py [--requests 10000] [--repeats 5] [--out bench/results_storage.md]

Reports the database size, the simulation's wall time with and without recording (measured in the
same process, so the ratio is the recording cost), and each query's median time over repeats
(first call excluded: the dashboard caches per run, so a cold first read happens once per view).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu_load import write_report
from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import DEFAULT_COST_MODEL
from engine.executors.simulated import SimulatedExecutor
from engine.snapshot import RunInfo
from engine.workload import BUNDLED_AZURE_TRACE
from engine.workload.files import load_azure_csv
from storage import queries
from storage import timeline_queries as tl
from storage.database import open_for_read, open_for_write
from storage.recorder import Recorder

TARGET_MS = 200.0


def simulate(workload, config: EngineConfig, db: str | None) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    recorder = None
    if db is not None:
        info = RunInfo(name="scale benchmark", mode="simulated", batching="continuous", config=config.to_dict(),
                       workload=workload.description)
        recorder = Recorder(open_for_write(db), info, {"cost_model": DEFAULT_COST_MODEL.to_dict()})
    engine = Engine(config, SimulatedExecutor(DEFAULT_COST_MODEL), VirtualClock(), recorder)
    start = time.perf_counter()
    summary = engine.run(workload.requests)
    if recorder is not None:
        recorder.finish("finished", summary=summary.to_dict())
        recorder.db.dispose()
    return time.perf_counter() - start, summary.num_steps


def time_query(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    start = time.perf_counter()
    fn()
    cold = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - start)
    return cold * 1e3, statistics.median(warm) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="write a markdown report here")
    args = parser.parse_args()

    workload = load_azure_csv(BUNDLED_AZURE_TRACE, max_requests=args.requests)
    # Full-length trace: prompts up to 14k tokens, so a long context and a pool that holds them.
    config = EngineConfig(SchedulerConfig(max_num_seqs=16, max_model_len=16_384, max_num_batched_tokens=16_384),
                          CacheConfig(num_gpu_blocks=8_192))
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "scale.db")
        plain_s, steps = simulate(workload, config, None)
        recorded_s, _ = simulate(workload, config, db)
        size_mb = sum(p.stat().st_size for p in Path(tmp).glob("scale.db*")) / 2**20
        reader = open_for_read(db)
        run_id = 1
        n = queries.last_step(reader, run_id) + 1
        mid = n // 2
        reqs = queries.run_requests(reader, run_id)
        some_request = str(reqs["request_id"].iloc[len(reqs) // 2])
        checks: dict[str, Callable[[], object]] = {
            "list_runs": lambda: queries.list_runs(reader),
            "get_run": lambda: queries.get_run(reader, run_id),
            "steps_window (150 steps, Live)": lambda: queries.steps_window(reader, run_id, n - 150, n - 1),
            "phases_window (150 steps, Live)": lambda: tl.phases_window(reader, run_id, n - 150, n - 1),
            "phases_window (241 steps mid-run, Replay)": lambda: tl.phases_window(reader, run_id, mid - 120,
                                                                                       mid + 120),
            "steps_binned (whole run, 600 bins)": lambda: queries.steps_binned(reader, run_id),
            "gantt_overview (whole run, binned)": lambda: tl.gantt_overview(reader, run_id),
            "kv_block_map (GPU, mid-run)": lambda: tl.kv_block_map(reader, run_id, mid),
            "kv_block_map (GPU, last step)": lambda: tl.kv_block_map(reader, run_id, n - 1),
            "queue_contents (mid-run)": lambda: tl.queue_contents(reader, run_id, mid),
            "step_at": lambda: queries.step_at(reader, run_id, mid),
            "latency_percentiles": lambda: queries.latency_percentiles(reader, run_id),
            "latency_percentiles (last 10 s, Live)": lambda: queries.latency_percentiles(reader, run_id, 1e9),
            "latency_by_length": lambda: queries.latency_by_length(reader, run_id),
            "throughput_over_time (1 s buckets)": lambda: queries.throughput_over_time(reader, run_id, 1.0),
            "request_detail": lambda: queries.request_detail(reader, run_id, some_request),
            "run_requests (10k rows)": lambda: queries.run_requests(reader, run_id),
            "sweep_groups": lambda: queries.sweep_groups(reader),
        }
        results = [(name, *time_query(fn, args.repeats)) for name, fn in checks.items()]
        counts = {t: reader.connect().exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar_one()
                  for t in ("steps", "requests", "request_phases", "kv_block_events")}
        reader.dispose()

    lines = [
        f"Command: `python bench/bench_storage.py --requests {args.requests} --repeats {args.repeats}`  ",
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, {date.today()}  ",
        f"Workload: first {args.requests:,} requests of the Azure conversation trace at full length "
        f"(max_model_len 16,384, 8,192 blocks, max_num_seqs 16), default cost model: {steps:,} steps.",
        "",
        f"- rows: {', '.join(f'{k} {v:,}' for k, v in counts.items())}",
        f"- database size: {size_mb:.1f} MiB",
        f"- simulation without recording {plain_s:.2f} s, with recording {recorded_s:.2f} s "
        f"(recording adds {recorded_s - plain_s:.2f} s, x{recorded_s / plain_s:.2f})",
        "",
        "| query | first call (ms) | median of repeats (ms) | under 200 ms |",
        "|---|---:|---:|:---:|",
    ]
    for name, cold, warm in results:
        lines.append(f"| {name} | {cold:.1f} | {warm:.1f} | {'yes' if warm < TARGET_MS else '**no**'} |")
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
