"""`tune` at scale: a 1,000-configuration search over 2,000 Azure-trace requests, on a process pool
(pruned, and exhaustive as the baseline) and on a local Ray cluster, in one session.

    python bench/bench_tune.py [--runs 3] [--jobs 2] [--ray] [--out bench/results_tune.md]

The workload is the bundled Azure conversation trace scaled for a CPU model as the README says
(`--length-scale 0.1 --time-scale 0.1 --max-requests 2000`, max_model_len 1,024); the grid is
max_num_seqs (10 values) x max_num_batched_tokens (5) x chunked prefill (2) x policy fcfs/sjf (2) x
KV pool (5 sizes) = 1,000 configurations, every one valid; SLOs TTFT <= 250 ms and E2E <= 1,500 ms
for 99% of requests; the default cost model. Each measured search is the whole command in this
process (`cli.tune.main`, workload loading and pool start included, --no-record unless said).
Other processes' CPU use is recorded for every run (bench/cpu_load.py): for a Ray run it includes
the cluster's own processes (its workers are not this process's children, and a job's workers exit
with the job), so read the pool's CPU time, not Ray's, as the work itself. With --ray a head with --jobs CPUs is
started here first (`ray start --head --block`, its own process group, stopped at the end), so the
Ray figures exclude the cluster's start but include joining it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cpu_load import CpuLoadMeter, write_report  # noqa: E402
from cli.tune import main as tune_main  # noqa: E402

WORKLOAD = ["--workload", "azure", "--length-scale", "0.1", "--time-scale", "0.1", "--max-requests", "2000",
            "--max-model-len", "1024"]
SLO = ["--slo", "ttft=250,e2e=1500", "--attainment", "99"]
SEARCH = ["--search", "max_num_seqs=4,8,12,16,24,32,48,64,96,128", "max_num_batched_tokens=1024,1536,2048,3072,4096",
          "enable_chunked_prefill=true,false", "policy=fcfs,sjf", "num_gpu_blocks=128,256,512,1024,2048"]


def one_search(argv: list[str]) -> dict[str, Any]:
    out = io.StringIO()
    with CpuLoadMeter() as meter, contextlib.redirect_stdout(out):
        start = time.perf_counter()
        code = tune_main([*argv, "--json"])
        wall = time.perf_counter() - start
    assert code == 0, f"tune exited {code}"
    report = json.loads(out.getvalue())
    return {"wall_s": wall, "search_s": report["wall_s"], "others": meter.others_cores, "own": meter.own_cores,
            "report": report}


def fingerprint(report: dict[str, Any]) -> tuple[Any, ...]:
    """What must not change between backends: the answer and every point's figures."""
    return (report["recommended"]["index"] if report["recommended"] else None,
            json.dumps(report["points"], sort_keys=True))


def start_ray(cpus: int) -> tuple[subprocess.Popen[bytes], str, str]:
    ray_cli = Path(sys.executable).with_name("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="bsray", dir="/tmp")
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port",
                             str(port), "--num-cpus", str(cpus), "--temp-dir", temp, "--include-dashboard", "false",
                             "--disable-usage-stats"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Ray head did not start") from None
            time.sleep(0.5)
    time.sleep(3)  # the raylet registers after the GCS answers
    return head, f"127.0.0.1:{port}", temp


def stop_ray(head: subprocess.Popen[bytes], temp: str) -> None:
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    shutil.rmtree(temp, ignore_errors=True)


def _row(label: str, runs: list[dict[str, Any]], base: float | None = None) -> str:
    walls = [r["wall_s"] for r in runs]
    med = statistics.median(walls)
    rel = f"x{med / base:.2f}" if base else ""
    cpu = statistics.median(r["own"] * r["wall_s"] for r in runs) if not label.startswith("Ray") else math.nan
    others = ", ".join(f"{r['others']:.2f}" for r in runs)
    return (f"| {label} | {med:.1f} | {statistics.median(r['search_s'] for r in runs):.1f} | {rel} | "
            f"{', '.join(f'{w:.1f}' for w in walls)} | {others} | "
            f"{'n/a' if math.isnan(cpu) else f'{cpu:.0f}'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of the pool and Ray searches (median reported)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--ray", action="store_true", help="also on a local Ray cluster started here")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    base = [*WORKLOAD, *SLO, *SEARCH, "--no-record"]
    pool = ["--jobs", str(args.jobs)]
    results: dict[str, list[dict[str, Any]]] = {"pool": [], "ray": [], "exhaustive": [], "slo": [], "one": []}
    head = None
    try:
        if args.ray:
            head, address, temp = start_ray(args.jobs)
        for i in range(args.runs):  # alternate backends, so a noisy minute hits both
            results["pool"].append(one_search([*base, *pool]))
            print(f"pool run {i + 1}: {results['pool'][-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
            if head is not None:
                results["ray"].append(one_search([*base, "--ray", address]))
                print(f"ray run {i + 1}: {results['ray'][-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
        results["slo"].append(one_search([*base, *pool, "--prune", "slo"]))
        results["exhaustive"].append(one_search([*base, *pool, "--prune", "none"]))
        results["one"].append(one_search([*base, "--jobs", "1"]))
        with tempfile.TemporaryDirectory() as tmp:
            recorded = one_search([*WORKLOAD, *SLO, *SEARCH, *pool, "--db", str(Path(tmp) / "bench.db")])
    finally:
        if head is not None:
            stop_ray(head, temp)
    reference = fingerprint(results["pool"][0]["report"])
    for name in ("pool", "ray", "one"):
        for r in results[name]:
            assert fingerprint(r["report"]) == reference, f"{name} gave other results than the process pool"
    for name in ("slo", "exhaustive"):  # other pruning: the same answer
        assert results[name][0]["report"]["recommended"]["index"] == reference[0]
    report = results["pool"][0]["report"]
    counts = report["counts"]
    rec = report["recommended"]
    pool_med = statistics.median(r["wall_s"] for r in results["pool"])
    exhaustive = results["exhaustive"][0]
    lines = [
        f"Command: `python bench/bench_tune.py --runs {args.runs} --jobs {args.jobs}{' --ray' if args.ray else ''}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other engineers' work), Python "
        f"{platform.python_version()}, {date.today()}  ",
        "Workload: the bundled Azure conversation trace, first 2,000 requests, lengths x0.1 and arrival times x0.1 "
        "(`--workload azure --length-scale 0.1 --time-scale 0.1 --max-requests 2000 --max-model-len 1024`), the "
        "default cost model.  ",
        f"Search: `{' '.join(SEARCH)}` (1,000 valid configurations); SLOs `{' '.join(SLO)}`.  ",
        f"Answer (identical on every backend and with every pruning): point {rec['index']} "
        f"({', '.join(f'{k}={v}' for k, v in rec['params'].items())}), goodput {rec['goodput']:.2f} req/s; "
        f"{sum(p['meets_slo'] for p in exhaustive['report']['points'])} of the 1,000 configurations meet the SLOs.  ",
        f"Default pruning (best): {counts['complete']} simulated in full, {counts['pruned']} stopped early "
        f"({sum(p['stopped_by'] == 'slo' for p in report['points'])} provably missing the SLOs, "
        f"{sum(p['stopped_by'] == 'goodput' for p in report['points'])} provably unable to beat the best goodput).",
        "",
        "| search | wall (s), median | of which the search (s) | vs pool | runs (s) | other processes' CPU per run "
        "(cores) | CPU time of the search, median (core-s) |",
        "|---|---:|---:|---:|---|---:|---:|",
        _row(f"process pool, --jobs {args.jobs}, --prune best (default)", results["pool"]),
    ]
    if results["ray"]:
        lines.append(_row(f"Ray, local cluster of {args.jobs} CPUs, --prune best", results["ray"], pool_med))
    lines += [
        _row(f"process pool, --jobs {args.jobs}, --prune slo", results["slo"], pool_med),
        _row(f"process pool, --jobs {args.jobs}, --prune none (exhaustive baseline)", results["exhaustive"], pool_med),
        _row("one process (--jobs 1), --prune best", results["one"], pool_med),
        _row(f"process pool, --jobs {args.jobs}, recorded (--db: a search row and 1,000 point rows)", [recorded],
             pool_med),
        "",
        f"Per configuration simulated in full: {exhaustive['search_s'] * args.jobs / 1000:.3f} s of a worker "
        f"(exhaustive search time x {args.jobs} workers / 1,000).",
    ]
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
