"""Serving benchmarks: (1) the same workload in-process vs through HTTP, (2) how fast `serve --simulate`
can be driven while it keeps to the schedule its own offline simulation predicts.

    python bench/bench_serving.py [--models tiny,smollm2] [--concurrency 1,8,32] [--repeats 3]
        [--rates 25,50,100,150,200,300,400] [--skip-overhead | --skip-sim] [--out bench/results_serving.md]

(1) `python -m engine run --max-concurrency C` (a closed-loop client inside the engine) against
`python -m engine bench serve --max-concurrency C` driving `python -m engine serve` on a free loopback
port: the same generated workload (uniform, same seed, so the same prompt lengths; prompts as the
same synthetic token ids, the client told the model's vocabulary), the same max_tokens with
ignore_eos, the same engine flags and torch threads (OMP_NUM_THREADS); in-process then HTTP, A B A B
over --repeats, each on a fresh process, medians. (2) is in bench/serving_sim.py.

Every run records other processes' CPU use (this benchmark's own server and client excluded) and is
redone when it passed --max-load cores; the report lists every run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cpu_load import write_report  # noqa: E402
from bench.serving_procs import (  # noqa: E402
    RunMeter,
    RunRecord,
    client_startup_cpu_s,
    engine_cmd,
    engine_env,
    every_run,
    run_timed,
    served,
    server_side_means_ms,
    with_redo,
)
from bench.serving_sim import SimOptions, run_sim_part, sim_report  # noqa: E402

RUN_TIMEOUT_S = 600.0
PROCESS_START_S = 6.0  # a fresh engine process: imports, model load, the peak-FLOPs timing (quiet machine)


@dataclass(frozen=True)
class ModelPlan:
    vocab_size: int  # the client synthesizes prompt ids below it, as the engine does for this model
    output_len: int
    peak_tok_s: float  # rough output tokens/s on a quiet 2-core machine, to size the workload
    half_streams: float  # streams at which it reaches half of that

    def tok_s(self, streams: int) -> float:
        return self.peak_tok_s * streams / (streams + self.half_streams)


MODELS = {"tiny": ModelPlan(32_000, 64, 700.0, 2.5), "smollm2": ModelPlan(49_152, 32, 55.0, 2.0)}


def num_prompts(plan: ModelPlan, streams: int, target_s: float, scale: float) -> int:
    """About target_s seconds of generation, at least 1.5 waves of streams (8 requests at 1 stream,
    for a TTFT median), times scale (smoke runs)."""
    wanted = max(round(target_s * plan.tok_s(streams) / plan.output_len), streams + streams // 2, 8)
    return max(round(wanted * scale), streams, 2)


def estimated_s(args: argparse.Namespace) -> float:
    """Roughly how long the overhead part takes on a quiet machine (the sim part estimates its own)."""
    total = 0.0
    for model in args.models:
        plan = MODELS[model]
        for streams in args.concurrency:
            gen = num_prompts(plan, streams, args.target_seconds, args.scale) * plan.output_len / plan.tok_s(streams)
            total += 2 * args.repeats * (gen + PROCESS_START_S + 0.5)
    return total


def workload_args(n: int, prompt_lens: str, output_len: int, seed: int) -> list[str]:
    return ["--workload", "uniform", "--num-prompts", str(n), "--prompt-lens", prompt_lens,
            "--output-lens", f"{output_len}:{output_len}", "--seed", str(seed)]


def expected_input_tokens(n: int, prompt_lens: str, output_len: int, seed: int) -> int:
    """The prompt tokens the generated workload asks for (the same draws as `--workload uniform`)."""
    from engine.workload.generators import synthetic_workload

    lo, hi = (int(x) for x in prompt_lens.split(":"))
    workload = synthetic_workload("uniform", n, (lo, hi), (output_len, output_len), seed=seed)
    return sum(s.prompt_len or 0 for s in workload.requests)


def in_process(model: str, streams: int, workload: list[str], engine_flags: list[str],
               env: dict[str, str]) -> tuple[dict[str, float], float]:
    cmd = engine_cmd("run", "--model", model, *engine_flags, *workload, "--max-concurrency", str(streams),
                     "--no-record", "--json")
    with RunMeter() as meter:
        out, cpu_s = run_timed(cmd, env, RUN_TIMEOUT_S)
    s = json.loads(out[out.index("{"):])
    return {"tok_s": s["output_tokens_per_s"], "ttft_p50_ms": s["ttft_s"]["p50"] * 1e3,
            "itl_p50_ms": s["itl_s"]["p50"] * 1e3, "output_tokens": s["output_tokens"],
            "duration_s": s["duration_s"], "engine_cpu_s": cpu_s}, meter.others_cores


def via_http(model: str, streams: int, workload: list[str], engine_flags: list[str], env: dict[str, str],
             client_env: dict[str, str], startup_cpu_s: float) -> tuple[dict[str, float], float]:
    with served(["--model", model, *engine_flags], env) as server, \
            tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "result.json"
        cmd = engine_cmd("bench", "serve", "--base-url", server.url, *workload, "--max-concurrency", str(streams),
                         "--vocab-size", str(MODELS[model].vocab_size), "--save-result", str(saved))
        with RunMeter([server.pid]) as meter:
            _, client_cpu = run_timed(cmd, client_env, RUN_TIMEOUT_S)
        r = json.loads(saved.read_text())
        server_side = server_side_means_ms(server.url)
    if r["failed"]:
        raise RuntimeError(f"{r['failed']} request(s) failed: {next(e for e in r['errors'] if e)}")
    return {"tok_s": r["output_throughput"], "ttft_p50_ms": r["median_ttft_ms"], "itl_p50_ms": r["median_itl_ms"],
            "output_tokens": r["total_output_tokens"], "input_tokens": r["total_input_tokens"],
            "duration_s": r["duration"], "client_cpu_s": client_cpu,
            "client_cores": max(client_cpu - startup_cpu_s, 0.0) / r["duration"],
            "server_cores": meter.live_cpu_s[server.pid] / r["duration"],
            "ttft_mean_ms": r["mean_ttft_ms"], **server_side}, meter.others_cores


@dataclass
class OverheadRow:
    label: str
    pairs: list[tuple[RunRecord, RunRecord]]  # (in-process, HTTP) kept, one a repeat


def run_overhead_part(args: argparse.Namespace, records: list[RunRecord]) -> list[OverheadRow]:
    env, client_env = engine_env(args.threads), engine_env(1)
    startup = client_startup_cpu_s(client_env)
    print(f"bench serve start-up CPU: {startup:.2f} s (subtracted for client cores)", file=sys.stderr)
    rows: list[OverheadRow] = []
    flags = args.engine_flags
    for model in args.models:
        plan = MODELS[model]
        for streams in args.concurrency:
            n = num_prompts(plan, streams, args.target_seconds, args.scale)
            workload = workload_args(n, args.prompt_lens, plan.output_len, args.seed)
            label = f"{model}, {streams} streams, {n} x {plan.output_len} tokens"
            prompt_tokens = expected_input_tokens(n, args.prompt_lens, plan.output_len, args.seed)
            pairs: list[tuple[RunRecord, RunRecord]] = []
            for rep in range(args.repeats):  # A B A B: both sides see the same drift of the machine
                a = with_redo(partial(in_process, model, streams, workload, flags, env), records,
                              args.max_load, args.max_redo, "overhead", label, "in-process", rep)
                b = with_redo(partial(via_http, model, streams, workload, flags, env, client_env, startup),
                              records, args.max_load, args.max_redo, "overhead", label, "http", rep)
                check_same_work(a, b, n * plan.output_len, prompt_tokens)
                pairs.append((a, b))
            rows.append(OverheadRow(label, pairs))
    return rows


def check_same_work(a: RunRecord, b: RunRecord, output_tokens: int, input_tokens: int) -> None:
    """Both sides generated every token, and the server read prompts of the planned lengths."""
    got = (a.figures["output_tokens"], b.figures["output_tokens"], b.figures["input_tokens"])
    if got != (output_tokens, output_tokens, input_tokens):
        raise RuntimeError(f"not the same work: output {got[0]} / {got[1]} (want {output_tokens}), "
                           f"input {got[2]} (want {input_tokens})")


def _kept(records: Sequence[RunRecord]) -> tuple[list[RunRecord], str]:
    clean = [r for r in records if r.clean]
    return (clean, "") if clean else (list(records), " (loaded)")


def _med(records: Sequence[RunRecord], key: str) -> float:
    return statistics.median(r.figures[key] for r in records)


def overhead_report(rows: list[OverheadRow]) -> list[str]:
    lines = ["## 1. Serving overhead: in-process vs HTTP", "",
             "Output tokens/s: in-process, the run's output tokens over its duration (start to last finish); "
             "HTTP, the client's total over its benchmark duration (first send to last response). TTFT p50: "
             "in-process, the engine's first-token time minus the request's arrival (the closed-loop client "
             "lets a request in when a slot frees: that is its arrival); HTTP, measured at the client as "
             "vllm bench serve does (send to the first streamed chunk, one chunk per step with new tokens). "
             "Client CPU: the bench serve process's utime + stime (its rusage as a child); cores: that less "
             "its start-up CPU, over the benchmark duration. Server cores: the serve process's CPU during the "
             "client's run over that time. TTFT mean client / server-side: the client's mean against the "
             "server's own (receipt to first token, its /metrics histogram sum / count): the gap is the HTTP "
             "path. Medians over repeats; ratio: median of per-repeat ratios (the repeats with both sides "
             "within the load limit). TTFT diff per repeat: HTTP less in-process within each A B pair; "
             "in-process spread: the largest less the smallest in-process TTFT p50 over the repeats, how far "
             "two runs of the same side differ (a TTFT difference inside it is not the HTTP path's).", "",
             "| model, streams, workload | tok/s in-process | tok/s HTTP | HTTP / in-process | TTFT p50 in-process ms "
             "| TTFT p50 HTTP ms | TTFT diff ms | TTFT diff per repeat ms | in-process TTFT p50 spread ms "
             "| TTFT mean client / server-side ms | ITL p50 in-process / HTTP ms "
             "| client CPU s | client cores | server cores |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        pairs = row.pairs
        a, note_a = _kept([p[0] for p in pairs])
        b, note_b = _kept([p[1] for p in pairs])
        both_clean = [p for p in pairs if p[0].clean and p[1].clean] or pairs
        ratio = statistics.median(p[1].figures["tok_s"] / p[0].figures["tok_s"] for p in both_clean)
        ttft_a, ttft_b = _med(a, "ttft_p50_ms"), _med(b, "ttft_p50_ms")
        per_repeat = " / ".join(f"{p[1].figures['ttft_p50_ms'] - p[0].figures['ttft_p50_ms']:+.0f}" for p in pairs)
        spread = max(r.figures["ttft_p50_ms"] for r in a) - min(r.figures["ttft_p50_ms"] for r in a)
        lines.append(f"| {row.label}{note_a or note_b} | {_med(a, 'tok_s'):.1f} | {_med(b, 'tok_s'):.1f} | "
                     f"{ratio:.3f} | {ttft_a:.1f} | {ttft_b:.1f} | {ttft_b - ttft_a:+.1f} | {per_repeat} | "
                     f"{spread:.1f} | "
                     f"{_med(b, 'ttft_mean_ms'):.1f} / {_med(b, 'server_ttft_mean_ms'):.1f} | "
                     f"{_med(a, 'itl_p50_ms'):.1f} / {_med(b, 'itl_p50_ms'):.1f} | {_med(b, 'client_cpu_s'):.2f} | "
                     f"{_med(b, 'client_cores'):.2f} | {_med(b, 'server_cores'):.2f} |")
    return lines


def header(argv: Sequence[str], args: argparse.Namespace) -> list[str]:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "engine", "serving", "cli", "sessions")
    commit = (git("rev-parse", "--short", "HEAD") or "?") + (" with uncommitted changes to the engine" if dirty else "")
    import torch

    return ["# Serving benchmarks", "",
            f"Command: `python bench/bench_serving.py {shlex.join(argv)}`  ",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch "
            f"{torch.__version__}, {args.threads} torch threads (OMP_NUM_THREADS) in every engine process; commit "
            f"{commit}; {datetime.now():%Y-%m-%d %H:%M}  ",
            f"Engine flags both ways: `{' '.join(args.engine_flags)}`; workload: uniform, prompts "
            f"{args.prompt_lens} tokens, seed {args.seed}, ignore_eos; other-load limit {args.max_load} cores "
            f"(up to {args.max_redo} redos)", ""]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=lambda t: t.split(","), default=["tiny", "smollm2"], help="tiny,smollm2")
    p.add_argument("--concurrency", type=ints, default=[1, 8, 32], help="streams, e.g. 1,8,32")
    p.add_argument("--repeats", type=int, default=3, help="A B pairs per point (3)")
    p.add_argument("--target-seconds", type=float, default=6.0, help="generation time to size workloads by (6)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every workload's size (smoke: 0.3)")
    p.add_argument("--prompt-lens", default="32:128")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads in every engine process (2)")
    p.add_argument("--engine-flags", type=shlex.split, default=["--max-num-seqs", "64"],
                   help="engine flags for both ways (--max-num-seqs 64)")
    p.add_argument("--max-load", type=float, default=0.15, help="redo a run where others used more cores (0.15)")
    p.add_argument("--max-redo", type=int, default=2)
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--skip-sim", action="store_true")
    SimOptions.add_args(p)
    p.add_argument("--out", default="bench/results_serving.md")
    args = p.parse_args(argv)
    unknown = set(args.models) - set(MODELS)
    if unknown:
        p.error(f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODELS)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers
    records: list[RunRecord] = []
    lines = header(argv, args)
    sim = SimOptions.from_args(args)
    estimate = (0 if args.skip_overhead else estimated_s(args)) + (0 if args.skip_sim else sim.estimated_s())
    print(f"estimated duration on a quiet machine: ~{estimate / 60:.1f} min", file=sys.stderr, flush=True)
    try:
        if not args.skip_overhead:
            lines += [*overhead_report(run_overhead_part(args, records)), ""]
        if not args.skip_sim:
            lines += [*sim_report(sim, run_sim_part(sim, records, args.max_load, args.max_redo, args.threads)), ""]
    except BaseException as exc:  # keep what was measured: the runs so far, and why it stopped
        lines += [f"**Stopped early: {type(exc).__name__}: {exc}**", ""]
        raise
    finally:
        write_report("\n".join(lines + every_run(records)), args.out)


if __name__ == "__main__":
    main()
