"""The most compute utilization bench_real's workload allows on this machine: its matmuls alone.

bench_real.py reports useful FLOP/s over a fixed fp32 1024^3 matmul peak. How close any engine
can come depends on the shapes the workload hands the matmuls: a decode step has one row per
running sequence (at most max_num_seqs), and once the short outputs finish a batch decodes with a
few dozen rows, where a GEMM runs far below its 1024^3 rate. This script takes our continuous
schedule of the same workload (the scheduler on a virtual clock: with every request arriving at
t=0 the schedule does not depend on step times), and times, for every step, only the matmuls it
must run, on the engine's own CPU kernels (engine/executors/packed_linear.py): every linear of the
body on all of the step's rows, the output projection on the rows that sample. Attention, norms,
activations, sampling, the scheduler and Python are left out, so an engine that did nothing but
these matmuls would take that time; useful FLOPs over it and the peak is an upper bound on the
utilization of any engine on this schedule.

    .venv/bin/python bench/matmul_bound.py --model smollm2            # the utilization target's model
    .venv/bin/python bench/matmul_bound.py --model tiny --seqs 16 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.bench_real import bench_workload  # noqa: E402
from bench.flop_budget import matmul_peak, workload_flops  # noqa: E402
from engine.clock import VirtualClock  # noqa: E402
from engine.config import CacheConfig, EngineConfig, SchedulerConfig  # noqa: E402
from engine.engine_loop import Engine  # noqa: E402
from engine.executors.cost_model import UnitCostModel  # noqa: E402
from engine.executors.flops import FlopModel  # noqa: E402
from engine.executors.lm_head import install_chunked_lm_head  # noqa: E402
from engine.executors.model_loading import load_model  # noqa: E402
from engine.executors.packed_linear import PackedLinear, install_packed_linears, packing_unavailable  # noqa: E402
from engine.executors.simulated import SimulatedExecutor  # noqa: E402
from engine.snapshot import StepSnapshot  # noqa: E402
from engine.workload.spec import RequestSpec  # noqa: E402

REPEATS = 3  # each distinct step shape timed this many times, the median kept


def step_shapes(lengths: list[tuple[int, int]], max_seqs: int, budget: int) -> Counter[tuple[int, int]]:
    """(token rows, sampling rows) of each step of our continuous schedule, with their counts."""
    config = EngineConfig(SchedulerConfig(max_num_seqs=max_seqs, max_num_batched_tokens=budget),
                          CacheConfig(block_size=16, num_gpu_blocks=1 << 16))
    engine = Engine(config, SimulatedExecutor(UnitCostModel()), VirtualClock())
    shapes: Counter[tuple[int, int]] = Counter()

    def on_step(s: StepSnapshot) -> None:
        shapes[(s.counts.num_rows, s.num_output_tokens)] += 1

    engine.run([RequestSpec(f"r{i}", 0.0, out, prompt_len=p) for i, (p, out) in enumerate(lengths)], on_step=on_step)
    return shapes


def body_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every linear layer every token goes through (the decoder's, the output projection not)."""
    head = model.get_output_embeddings()  # type: ignore[operator]
    return [m for m in model.modules() if isinstance(m, (torch.nn.Linear, PackedLinear)) and m is not head]


def time_step(layers: list[torch.nn.Module], head: torch.nn.Module, rows: int, sampled: int) -> float:
    """Median seconds of one step's matmuls, on the engine's own kernels: every body layer on `rows`
    rows, the head on `sampled`."""
    inputs = {m.in_features: torch.randn(rows, m.in_features) for m in layers}
    hidden = torch.randn(sampled, layers[0].in_features)
    times = []
    with torch.inference_mode():
        for _ in range(REPEATS + 1):  # the first is a warm-up
            t = time.perf_counter()
            for m in layers:
                m(inputs[m.in_features])
            if sampled:
                head(hidden)
            times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--seqs", type=int, nargs="+", default=[64], help="max_num_seqs of the continuous schedule")
    p.add_argument("--budget", type=int, default=2048, help="max_num_batched_tokens (bench_real's continuous)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu")
    model = loaded.model
    if packing_unavailable(loaded.dtype, loaded.device) is None:  # the kernels TorchExecutor installs
        install_packed_linears(model)
    else:
        install_chunked_lm_head(model)
    layers, head = body_layers(model), model.get_output_embeddings()
    lengths = [(len(r.prompt), r.max_tokens) for r in bench_workload(loaded.vocab_size)]
    useful = workload_flops(FlopModel.of(model, loaded.num_layers, loaded.num_heads, loaded.head_dim), lengths)
    before = matmul_peak(max_load=0.15)
    results = []
    for seqs in args.seqs:
        shapes = step_shapes(lengths, seqs, args.budget)
        total = sum(n * time_step(layers, head, rows, sampled) for (rows, sampled), n in shapes.items())
        decode_rows = [rows for (rows, sampled), n in shapes.items() for _ in range(n) if rows == sampled]
        results.append((seqs, sum(shapes.values()), statistics.median(decode_rows) if decode_rows else 0, total))
    peak = max(before.flops, matmul_peak(max_load=0.15).flops)
    print(f"{args.model}: {len(lengths)} requests, useful work {useful / 1e9:.1f} GFLOP; fp32 1024^3 peak "
          f"{peak / 1e9:.1f} GFLOP/s (fastest kernel, the higher of before and after, {args.threads} threads)")
    print("| max_num_seqs | steps | median decode rows | matmuls alone (s) | utilization bound |")
    print("|---:|---:|---:|---:|---:|")
    for seqs, steps, median_rows, total in results:
        print(f"| {seqs} | {steps} | {median_rows:.0f} | {total:.2f} | {100 * useful / total / peak:.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
