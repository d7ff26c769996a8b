"""This tree against an earlier commit, alternately, in the same benchmark run: the scheduler's
per-step cost, the simulator's speed, and the recording overhead.

    python bench/bench_regression.py --base b2bb39f [--runs 5] [--out bench/results_regression.md]

The base commit is checked out with `git worktree` beside this one (removed at the end). Each
measurement is a fresh `python -c` process in one checkout or the other, A B B A A B ..., timing only
the work inside the process (imports and workload loading excluded), through APIs both versions
have. Other processes' CPU use is recorded per run (the machine is shared); ratios are new / base.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cpu_load import CpuLoadMeter, wait_for_quiet, write_report  # noqa: E402

SCHEDULER = """
import random, time
from engine.config import CacheConfig, SchedulerConfig
from engine.outputs import ModelRunnerOutput
from engine.request import Request
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler
rng = random.Random(0)
sched = Scheduler(SchedulerConfig(max_num_seqs={seqs}, max_num_batched_tokens=2048, max_model_len=2048),
                  CacheConfig(block_size=16, num_gpu_blocks=2000), include_token_ids=False)
for i in range(1000):
    out_len = rng.randint(10, 20) if rng.random() < 0.7 else rng.randint(80, 100)
    sched.add_request(Request(f"r{{i}}", [1] * rng.randint(16, 512), SamplingParams(max_tokens=out_len,
                              ignore_eos=True)))
steps, t0 = 0, time.perf_counter()
while sched.has_unfinished_requests():
    out = sched.schedule()
    sched.update_from_output(out, ModelRunnerOutput({{s.request_id: 7 for s in out.scheduled if s.do_sample}}))
    steps += 1
print((time.perf_counter() - t0) / steps * 1e6)
"""

SIMULATOR = """
import time
from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import DEFAULT_COST_MODEL
from engine.executors.simulated import SimulatedExecutor
from engine.workload import BUNDLED_AZURE_TRACE
from engine.workload.files import load_azure_csv
config = EngineConfig(SchedulerConfig(max_num_seqs=64, max_model_len=16384, max_num_batched_tokens=16384),
                      CacheConfig(num_gpu_blocks=8192))
workload = load_azure_csv(BUNDLED_AZURE_TRACE, max_requests=10000)
t0 = time.perf_counter()
Engine(config, SimulatedExecutor(DEFAULT_COST_MODEL), VirtualClock()).run(workload.requests)
print(time.perf_counter() - t0)
"""

RECORDING = """
import sys, time
from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import DEFAULT_COST_MODEL
from engine.executors.simulated import SimulatedExecutor
from engine.snapshot import RunInfo
from engine.workload.generators import synthetic_workload
from storage.database import open_for_write
from storage.recorder import Recorder
config = EngineConfig(SchedulerConfig(max_num_seqs=64), CacheConfig(num_gpu_blocks=2048))
workload = synthetic_workload("mixed", 2000, request_rate=200.0, seed=0)
db = open_for_write(sys.argv[1])
t0 = time.perf_counter()
recorder = Recorder(db, RunInfo("bench", "simulated", "continuous", config.to_dict()))
Engine(config, SimulatedExecutor(DEFAULT_COST_MODEL), VirtualClock(), recorder, fast_forward=False).run(
    workload.requests)
recorder.finish("finished")
print(time.perf_counter() - t0)
"""

MEASURES = {
    "scheduler us/step, 64 seqs": (SCHEDULER.format(seqs=64), False),
    "scheduler us/step, 256 seqs": (SCHEDULER.format(seqs=256), False),
    "simulator s, 10k Azure requests": (SIMULATOR, False),
    "recorded simulation s, 2,000 requests, every step": (RECORDING, True),
}


def measure(checkout: Path, code: str, needs_db: bool, python: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        args = [str(Path(tmp) / "r.db")] if needs_db else []
        wait_for_quiet(0.3, timeout_s=30)
        with CpuLoadMeter() as meter:
            out = subprocess.run([python, "-c", code, *args], cwd=checkout, check=True, capture_output=True,
                                 text=True, env={**os.environ, "PYTHONPATH": str(checkout)})
    return float(out.stdout.strip().splitlines()[-1]), meter.others_cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default=None, help="measure only those whose label contains this text")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    worktree = Path(tempfile.mkdtemp(prefix="bench-base-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.base], cwd=ROOT, check=True,
                   capture_output=True)
    results: dict[str, dict[str, list[float]]] = {}
    loads: list[float] = []
    try:
        for label, (code, needs_db) in MEASURES.items():
            if args.only and args.only not in label:
                continue
            results[label] = {"new": [], "base": []}
            for run in range(args.runs):
                order = (("base", worktree), ("new", ROOT))
                for side, checkout in order if run % 2 == 0 else order[::-1]:  # A B B A: neither side always second
                    value, others = measure(checkout, code, needs_db, sys.executable)
                    results[label][side].append(value)
                    loads.append(others)
                    print(f"{label} [{side}]: {value:.3f} (others {others:.2f} cores)", file=sys.stderr)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
    lines = [f"Command: `python bench/bench_regression.py --base {args.base} --runs {args.runs}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             f"{date.today()}; other processes during the runs: median {statistics.median(loads):.2f} cores, "
             f"max {max(loads):.2f}", "",
             "| measure | base (median) | this tree (median) | ratio new / base (median of pairs) |",
             "|---|---:|---:|---:|"]
    for label, sides in results.items():
        ratios = [n / b for n, b in zip(sides["new"], sides["base"], strict=True)]
        lines.append(f"| {label} | {statistics.median(sides['base']):.3f} | {statistics.median(sides['new']):.3f} | "
                     f"{statistics.median(ratios):.3f} |")
    write_report("\n".join(lines), args.out)
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
