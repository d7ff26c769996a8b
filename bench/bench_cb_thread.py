"""transformers' continuous batching steps on a generation thread of its own: what that costs it on
CPU, measured apart (bench_real's CB figures include it).

    python bench/bench_cb_thread.py [--models smollm2 tiny] [--pairs 3] [--out bench/results_cb_thread.md]

torch's CPU kernels keep one OpenMP team per calling thread, and when the thread that loaded the
model (and ran other systems, as in bench_real) has a team, a second thread's forward passes are
slower on 2 cores (`serve` met the same: BENCHMARKS.md, Serving). Each run is a fresh process that
loads the model and runs transformers CB at bench_real's best setting on bench_real's workload
(with our LM-head kernel, as there), in one of two ways: `shared` as in bench_real (the main thread
loads with 2 torch threads and runs a forward first), `alone` (the main thread loads with 1 torch
thread, so it never makes a team of 2, and sets 2 back before CB starts its thread). A B B A ...;
the ratio is alone / shared output tokens/s per pair.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cpu_load import CpuLoadMeter, wait_for_quiet, write_report  # noqa: E402

BEST = {"smollm2": (1024, 64), "tiny": (512, 64)}  # transformers CB's best setting in bench_real

ONE_RUN = """
import sys, time, torch
mode, name, budget, seqs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1 if mode == "alone" else 2)
from transformers import AutoModelForCausalLM
from bench.bench_real import _model_folder, bench_workload
from bench.real_systems import give_our_cpu_kernels, run_hf_cb
model = AutoModelForCausalLM.from_pretrained(str(_model_folder(name)), dtype=torch.float32).eval()
give_our_cpu_kernels(model)
reqs = bench_workload(model.config.vocab_size)
if mode == "shared":
    with torch.inference_mode():
        model(torch.tensor([reqs[0].prompt]))  # the loading thread computes, as bench_real's other systems do
else:
    torch.set_num_threads(2)  # for the threads started from here on
run_hf_cb(model, reqs[:8], budget, seqs)  # warm-up, as bench_real
r = run_hf_cb(model, reqs, budget, seqs)
print(r.output_tokens_per_s)
"""


def one(mode: str, name: str) -> tuple[float, float]:
    budget, seqs = BEST[name]
    wait_for_quiet(0.3, timeout_s=60)
    with CpuLoadMeter() as meter:
        out = subprocess.run([sys.executable, "-c", ONE_RUN, mode, name, str(budget), str(seqs)], cwd=ROOT,
                             check=True, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"})
    return float(out.stdout.strip().splitlines()[-1]), meter.others_cores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["smollm2", "tiny"], choices=sorted(BEST))
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    lines = [f"Command: `python bench/bench_cb_thread.py --models {' '.join(args.models)} --pairs {args.pairs}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             f"{date.today()}; 2 torch threads (OMP_NUM_THREADS=2)", "",
             "| model (CB setting) | shared: tok/s (median) | alone: tok/s (median) | alone / shared (median of pairs) "
             "| runs (tok/s; others' cores) |",
             "|---|---:|---:|---:|---|"]
    raw: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for name in args.models:
        runs: dict[str, list[tuple[float, float]]] = {"shared": [], "alone": []}
        for i in range(args.pairs):
            for mode in (("shared", "alone") if i % 2 == 0 else ("alone", "shared")):
                runs[mode].append(one(mode, name))
                print(f"{name} {mode}: {runs[mode][-1][0]:.1f} tok/s (others {runs[mode][-1][1]:.2f} cores)",
                      file=sys.stderr)
        ratio = statistics.median(a[0] / s[0] for a, s in zip(runs["alone"], runs["shared"], strict=True))
        detail = "; ".join(f"{m}: " + ", ".join(f"{t:.1f} ({o:.2f})" for t, o in runs[m]) for m in runs)
        budget, seqs = BEST[name]
        lines.append(f"| {name} ({budget}:{seqs}) | {statistics.median(t for t, _ in runs['shared']):.1f} | "
                     f"{statistics.median(t for t, _ in runs['alone']):.1f} | **{ratio:.3f}** | {detail} |")
        raw[name] = runs
    lines += ["", json.dumps(raw)]
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
