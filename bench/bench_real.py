"""Real-model throughput and compute utilization: HF generate (static batches), our engine static and
continuous, transformers' continuous batching, all in one run, taking turns on the same machine.

    .venv/bin/python bench/bench_real.py                    # tiny and smollm2, seqs 16 32 64, 3 rounds
    .venv/bin/python bench/bench_real.py --models tiny --seqs 16 --repeats 1 --out /tmp/smoke.md
    .venv/bin/python bench/bench_real.py --static-only          # HF static (both caches) vs ours static alone

The workload of NOTES.md: 64 requests at t=0, prompts 16..128 tokens, outputs 70% 10..20 /
30% 80..100 tokens, exact lengths (EOS ignored). Every system gets the same prompt token ids.
For each max_num_seqs: HF generate in static batches of that size (on its default DynamicCache and on
its in-place StaticCache, --hf-cache), our engine with static batching
at that max_num_seqs (the same algorithm: a batch of min(max_num_seqs, waiting), prompts left-padded
to the longest, finished members computing pad rows until the batch ends), our engine continuous;
then transformers' CB at each --hf-cb setting. Each round runs every system once (odd rounds in
reverse order), so drift on a shared machine hits all of them alike; other processes' CPU load is
recorded per run, runs above --max-other-load are redone (up to --max-tries), medians are reported.
A fixed fp32 1024^3 matmul peak is timed before and after each model's runs for utilization.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import zlib
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.cpu_load import CpuLoadMeter, wait_for_quiet, write_report  # noqa: E402
from bench.flop_budget import PeakReading, hf_static_flops, matmul_peak, workload_flops  # noqa: E402
from bench.real_report import (  # noqa: E402
    HF_CB,
    HF_STATIC,
    HF_STATIC_CACHE,
    OURS_CONT,
    OURS_STATIC,
    OURS_STOCK,
    Attempt,
    Contender,
    ModelReport,
    format_header,
    format_model,
)
from bench.real_systems import (  # noqa: E402
    BenchRequest,
    RunResult,
    give_our_cpu_kernels,
    run_hf_cb,
    run_hf_static,
    run_ours,
    stock_kernels,
)
from engine.executors.flops import FlopModel  # noqa: E402
from engine.workload.generators import synthetic_workload  # noqa: E402
from engine.workload.synthetic import SyntheticPrompt  # noqa: E402


def bench_workload(vocab_size: int, num_requests: int = 64) -> list[BenchRequest]:
    wl = synthetic_workload("mixed", num_requests, (16, 128), seed=0)
    return [BenchRequest(s.request_id, list(SyntheticPrompt(s.prompt_len or 1, zlib.crc32(s.request_id.encode()),
                                                            vocab_size)), s.max_tokens) for s in wl.requests]


def run_clean(c: Contender, reqs: list[BenchRequest], rnd: int, max_load: float, max_tries: int) -> None:
    """One kept run of c: redone while other processes used more than max_load cores, the last try kept anyway."""
    for attempt in range(max_tries):
        wait_for_quiet(max_load, timeout_s=60)
        with CpuLoadMeter() as meter:
            result = c.run(reqs)
        kept = meter.others_cores <= max_load or attempt == max_tries - 1
        c.attempts.append(Attempt(rnd, result, meter.others_cores, kept))
        print(f"  [{rnd + 1}] {c.label}: {result.output_tokens_per_s:8.1f} tok/s  ({result.duration_s:.2f} s, "
              f"others {meter.others_cores:.2f} cores){'' if kept else ' -> redo'}", file=sys.stderr)
        if kept:
            return


def build_contenders(loaded: Any, reference: Any, reqs: list[BenchRequest],
                     args: argparse.Namespace) -> list[Contender]:
    longest_prompt = max(len(r.prompt) for r in reqs)
    out: list[Contender] = []
    for seqs in args.seqs:
        # Static gets a budget for its whole padded batch, so it prefills in one forward like generate.
        static_budget = max(args.our_budget, seqs * longest_prompt)
        if args.hf_cache in ("dynamic", "both"):
            out.append(Contender(f"HF generate, static batches of {seqs}", HF_STATIC, seqs,
                                 partial(run_hf_static, reference, batch_size=seqs)))
        if args.hf_cache in ("static", "both"):
            out.append(Contender(f"HF generate, static batches of {seqs}, StaticCache", HF_STATIC_CACHE, seqs,
                                 partial(run_hf_static, reference, batch_size=seqs, cache="static")))
        out.append(
            Contender(f"ours static ({seqs} seqs, budget {static_budget})", OURS_STATIC, seqs,
                      partial(run_ours, loaded, budget=static_budget, max_seqs=seqs, chunked=False,
                              batching="static")))
        if not args.static_only:
            out.append(Contender(f"ours continuous ({seqs} seqs, budget {args.our_budget})", OURS_CONT, seqs,
                                 partial(run_ours, loaded, budget=args.our_budget, max_seqs=seqs, chunked=False,
                                         batching="continuous")))
    if args.static_only:
        return out
    for budget, seqs in args.hf_cb_settings:
        out.append(Contender(f"transformers CB (max_batch_tokens {budget}, {seqs} seqs)", HF_CB, seqs,
                             partial(run_hf_cb, reference, max_batch_tokens=budget, max_seqs=seqs)))
    if args.stock_head_run:
        seqs = max(args.seqs)
        out.append(Contender(f"ours continuous, stock linears ({seqs} seqs)", OURS_STOCK, seqs,
                             partial(_run_stock_head, loaded, budget=args.our_budget, seqs=seqs)))
    return out


def _run_stock_head(loaded: Any, reqs: list[BenchRequest], budget: int, seqs: int) -> RunResult:
    with stock_kernels(loaded.model):
        return run_ours(loaded, reqs, budget, seqs, False, "continuous")


def bench_model(name: str, args: argparse.Namespace) -> ModelReport:
    from transformers import AutoModelForCausalLM

    from engine.executors.model_loading import load_model

    loaded = load_model(name, device="cpu")  # our copy: its attention gets switched to the paged one
    reference = AutoModelForCausalLM.from_pretrained(str(_model_folder(name)), dtype=torch.float32).eval()  # SDPA
    if args.baseline_kernels == "ours":
        print(f"{name}: the baselines get {give_our_cpu_kernels(reference)}", file=sys.stderr)
    reqs = bench_workload(loaded.vocab_size, args.num_requests)
    lengths = [(len(r.prompt), r.max_tokens) for r in reqs]
    flop_model = FlopModel.of(loaded.model, loaded.num_layers, loaded.num_heads, loaded.head_dim)
    useful = workload_flops(flop_model, lengths)
    print(f"{name}: {len(reqs)} requests, {sum(p for p, _ in lengths)} prompt + {sum(o for _, o in lengths)} "
          f"output tokens, {useful / 1e9:.1f} useful GFLOP", file=sys.stderr)
    contenders = build_contenders(loaded, reference, reqs, args)
    for c in contenders:  # warm-up on a few requests: first-call allocations, thread pools, our KV pool
        c.run(reqs[:8])
    before = _peak(name, "before", args)
    for rnd in range(args.repeats):
        for c in contenders if rnd % 2 == 0 else contenders[::-1]:
            run_clean(c, reqs, rnd, args.max_other_load, args.max_tries)
    after = _peak(name, "after", args)
    hf_flops = {s: hf_static_flops(flop_model, lengths, s) for s in args.seqs}
    return ModelReport(name, lengths, useful, contenders, before, after, hf_flops, args.max_other_load)


def _peak(name: str, when: str, args: argparse.Namespace) -> PeakReading:
    peak = matmul_peak(args.max_other_load)
    print(f"{name}: fp32 1024^3 matmul peak {when} the runs: {peak.flops / 1e9:.1f} GFLOP/s "
          f"(others {peak.others_cores:.2f} cores)", file=sys.stderr)
    return peak


def _model_folder(name: str) -> Path:
    from engine.executors.model_loading import resolve_model_path

    folder, gguf = resolve_model_path(name)
    assert gguf is None, "bench models are loaded from safetensors"
    return folder


def parse_pairs(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in (p.split(":") for p in text.split(","))]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["tiny", "smollm2"])
    p.add_argument("--seqs", nargs="+", type=int, default=[16, 32, 64],
                   help="max_num_seqs values (= HF static batch sizes)")
    p.add_argument("--repeats", type=int, default=3, help="rounds: every system runs once per round")
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--max-other-load", type=float, default=0.15, help="redo runs above this many other cores")
    p.add_argument("--max-tries", type=int, default=3, help="tries per kept run (the last is kept however loaded)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (NOTES.md's figures are at 2)")
    p.add_argument("--hf-cb", default="256:16,512:64,1024:64", help="transformers CB settings BUDGET:SEQS,...")
    p.add_argument("--our-budget", type=int, default=2048, help="our continuous max_num_batched_tokens")
    p.add_argument("--baseline-kernels", choices=["ours", "stock"], default="ours",
                   help="ours: the baselines get our CPU linear kernels too; stock: their own nn.Linear layers")
    p.add_argument("--no-stock-run", dest="stock_head_run", action="store_false",
                   help="skip our continuous run on stock nn.Linear layers (what our kernels alone are worth)")
    p.add_argument("--hf-cache", choices=["dynamic", "static", "both"], default="both",
                   help="HF generate's KV cache: its default DynamicCache (a torch.cat of the whole cache each "
                        "step), StaticCache (preallocated, written in place), or both as separate systems")
    p.add_argument("--static-only", action="store_true",
                   help="only the static systems (HF generate and ours static): the static comparison alone")
    p.add_argument("--out", default=str(ROOT / "bench" / "results_real.md"))
    args = p.parse_args(argv)
    args.hf_cb_settings = parse_pairs(args.hf_cb)
    args.stock_head_run = args.stock_head_run and not args.static_only  # a continuous system, not run then
    return args


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    sections = []
    for name in args.models:
        sections.append(format_model(bench_model(name, args)))
        print(sections[-1], file=sys.stderr)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    header = format_header(command, dt.datetime.now().isoformat(timespec="minutes"),
                           f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                           f"torch {torch.__version__} with {args.threads} threads, fp32", args)
    write_report(header + "\n\n" + "\n\n".join(sections), args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
