"""What-if fidelity: real runs on `tiny` at max_num_seqs 8 / 32 x token budgets 256 / 1,024 on the
same workload; fit the cost model on each, predict every other configuration, compare.

    python bench/bench_fidelity.py [--requests 200] [--rate 10] [--repeats 2] [--out bench/results_fidelity.md]
                                   [--keep-db runs.db | --reuse-db runs.db]

Each configuration is recorded --repeats times as a real run (`python -m engine run`, in its own
process). A prediction is `simulate --from-run A` with B's parameters, which replays A's recorded
requests with the cost model fitted to A; its error is measured against B's real runs (the median
of B's repeats). Every recorded run serves as a base A in turn, so no single lucky or unlucky run
decides the result. The error between two real runs of the same configuration is reported beside
it: no predictor can beat the run-to-run noise. Other processes' CPU use is measured during each
real run (machine busy time minus the run's own); runs above --max-other-load cores are redone.
--reuse-db analyses the runs a --keep-db session recorded, without running them again.
"""

from __future__ import annotations

import argparse
import itertools
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

METRICS = ("output_tokens_per_s", "ttft_p50", "ttft_p99", "e2e_p50", "e2e_p99")
TARGETS = {"output_tokens_per_s": 5.0, "ttft_p50": 10.0, "ttft_p99": 10.0, "e2e_p50": 10.0, "e2e_p99": 10.0}
CONFIGS = [(seqs, budget) for seqs in (8, 32) for budget in (256, 1024)]


def engine(*args: str, db: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([sys.executable, "-m", "engine", *args, "--db", db, "--json"], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def real_run(db: str, seqs: int, budget: int, args: argparse.Namespace) -> tuple[dict, float]:  # type: ignore[type-arg]
    """One recorded real run; returns its summary and other processes' CPU use during it (cores)."""
    wait_for_quiet(args.max_other_load, timeout_s=120)
    with CpuLoadMeter() as meter:
        summary = engine("run", "--model", "tiny", "--workload", "mixed", "--num-prompts", str(args.requests),
                         "--request-rate", str(args.rate), "--seed", "1", "--max-num-seqs", str(seqs),
                         "--max-num-batched-tokens", str(budget), "--enable-chunked-prefill",
                         "--num-gpu-blocks", str(args.blocks), "--name", f"fidelity seqs={seqs} budget={budget}", db=db)
    others = meter.others_cores
    return summary, others



def metrics_of(summary: dict) -> dict[str, float]:  # type: ignore[type-arg]
    ttft, e2e = summary["ttft_s"], summary["e2e_s"]
    return {"output_tokens_per_s": summary["output_tokens_per_s"], "ttft_p50": ttft["p50"], "ttft_p99": ttft["p99"],
            "e2e_p50": e2e["p50"], "e2e_p99": e2e["p99"]}


def recorded_runs(db: str) -> dict[tuple[int, int], list[tuple[int, dict[str, float]]]]:
    """The real runs a --keep-db session recorded, by configuration (from their names)."""
    from storage.database import open_for_read
    from storage.queries import get_run, list_runs

    reader = open_for_read(db)
    runs: dict[tuple[int, int], list[tuple[int, dict[str, float]]]] = {c: [] for c in CONFIGS}
    for run_id, name, mode in list_runs(reader)[["id", "name", "mode"]].sort_values("id").itertuples(index=False):
        for seqs, budget in CONFIGS:
            if mode == "real" and name == f"fidelity seqs={seqs} budget={budget}":
                run = get_run(reader, int(run_id))
                assert run is not None and run["summary"], f"run {run_id} has no summary"
                runs[(seqs, budget)].append((int(run_id), metrics_of(run["summary"])))
    if not all(runs.values()):
        raise SystemExit(f"{db} lacks real runs of some configuration; record them with --keep-db first")
    return runs


def error_pct(predicted: dict[str, float], actual: dict[str, float]) -> dict[str, float]:
    return {m: abs(predicted[m] - actual[m]) / actual[m] * 100 for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--blocks", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-other-load", type=float, default=0.15)
    parser.add_argument("--max-redos", type=int, default=6)
    parser.add_argument("--out", default=None)
    parser.add_argument("--keep-db", default=None, help="record into this SQLite file and keep it")
    parser.add_argument("--reuse-db", default=None, help="analyse the runs a --keep-db session recorded (no new runs)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = args.reuse_db or args.keep_db or str(Path(tmp) / "fidelity.db")
        loads: list[float] = []
        redos = 0
        if args.reuse_db:
            runs = recorded_runs(db)
        else:
            runs = {c: [] for c in CONFIGS}
            for _ in range(args.repeats):
                for seqs, budget in CONFIGS:
                    while True:
                        summary, others = real_run(db, seqs, budget, args)
                        if others <= args.max_other_load or redos >= args.max_redos:
                            break
                        redos += 1
                        print(f"redo seqs={seqs} budget={budget}: others used {others:.2f} cores", file=sys.stderr)
                    loads.append(others)
                    runs[(seqs, budget)].append((summary["run_id"], metrics_of(summary)))
                    print(f"seqs={seqs} budget={budget}: run {summary['run_id']} "
                          f"{summary['output_tokens_per_s']:.0f} tok/s (others {others:.2f} cores)", file=sys.stderr)
        repeats = min(len(r) for r in runs.values())
        truth = {c: {m: statistics.median(r[1][m] for r in runs[c]) for m in METRICS} for c in CONFIGS}
        rows, errors = [], {m: [] for m in METRICS}
        for base, target in itertools.product(CONFIGS, CONFIGS):
            for base_id, _ in runs[base]:
                report = engine("simulate", "--from-run", str(base_id), "--max-num-seqs", str(target[0]),
                                "--max-num-batched-tokens", str(target[1]), "--no-record", db=db)
                err = error_pct(report["predicted"], truth[target])
                rows.append((base, base_id, target, err))
                if base != target:
                    for m in METRICS:
                        errors[m].append(err[m])
        noise = {m: statistics.median(error_pct(a[1], b[1])[m] for c in CONFIGS
                                      for a, b in itertools.combinations(runs[c], 2)) for m in METRICS} \
            if repeats > 1 else None

    def cfg(c: tuple[int, int]) -> str:
        return f"seqs {c[0]}, budget {c[1]}"

    lines = [
        f"Command: `python bench/bench_fidelity.py --requests {args.requests} --rate {args.rate:g} "
        f"--repeats {repeats}`" + (" (predictions re-run with --reuse-db)" if args.reuse_db else "") + "  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {date.today()}" +
        (f"; other processes' CPU use during the real runs: median {statistics.median(loads):.2f}, "
         f"max {max(loads):.2f} cores ({redos} redone)  " if loads else "  "),
        f"Workload: mixed, {args.requests} requests (prompts 16..128, outputs 70% 10..20 / 30% 80..100), Poisson "
        f"{args.rate:g} req/s, seed 1; `tiny` on the CPU, chunked prefill, {args.blocks} KV blocks. "
        f"Truth: the median of {repeats} real runs per configuration.",
        "",
        "Real runs (median of repeats):",
        "",
        "| configuration | runs | output tok/s (each run) | TTFT p50 (ms) | TTFT p99 (ms) | E2E p50 (ms) | "
        "E2E p99 (ms) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in CONFIGS:
        t = truth[c]
        each = ", ".join(f"{r[1]['output_tokens_per_s']:.0f}" for r in runs[c])
        ids = ", ".join(str(r[0]) for r in runs[c])
        lines.append(f"| {cfg(c)} | {ids} | {t['output_tokens_per_s']:.0f} ({each}) | "
                     f"{t['ttft_p50'] * 1e3:.1f} | {t['ttft_p99'] * 1e3:.1f} | {t['e2e_p50'] * 1e3:.0f} | "
                     f"{t['e2e_p99'] * 1e3:.0f} |")
    lines += ["", "Every pair (absolute error of the prediction against the real runs, %):", "",
              "| fitted on (run) | predicts | tok/s | TTFT p50 | TTFT p99 | E2E p50 | E2E p99 |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for base, base_id, target, err in rows:
        mark = " (self-check)" if base == target else ""
        cells = " | ".join(f"{err[m]:.1f}" for m in METRICS)
        lines.append(f"| {cfg(base)} ({base_id}) | {cfg(target)}{mark} | {cells} |")
    medians = " | ".join(f"{statistics.median(errors[m]):.1f}" for m in METRICS)
    lines += ["", "| | tok/s | TTFT p50 | TTFT p99 | E2E p50 | E2E p99 |", "|---|---:|---:|---:|---:|---:|",
              f"| median error over the {len(errors['ttft_p50'])} cross pairs (%) | {medians} |",
              "| target (%) | " + " | ".join(f"{TARGETS[m]:.0f}" for m in METRICS) + " |"]
    if noise is not None:
        lines.append("| real run vs real run, same configuration (%) | " + " | ".join(f"{noise[m]:.1f}"
                                                                                     for m in METRICS) + " |")
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
