"""bench_serving part 2: the highest request rate at which `serve --simulate` keeps to its own schedule.

The served simulation sleeps each step's predicted time on the wall clock; `python -m engine simulate`
runs the same scheduler and cost model on a virtual clock. Both get the same workload (uniform, the
same seed, prompt lengths, 32-token outputs with ignore_eos) and the same arrival times: `simulate`
draws Poisson arrivals at --request-rate from the workload generator's seed, and `bench serve` with a
generated workload, --request-rate and burstiness 1 sends each request at the arrival time that same
generator gives it (cli.bench_serve.run_bench_serve), so the send times are the offline arrivals exactly;
the server stamps a request's arrival when it receives it. A rate keeps to the schedule when the
client's TTFT p50 and ITL p50 are within --sim-tolerance of the offline prediction.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.serving_procs import (
    RunMeter,
    RunRecord,
    client_startup_cpu_s,
    engine_cmd,
    engine_env,
    run_timed,
    served,
    server_side_means_ms,
    started,
    with_redo,
)

RUN_TIMEOUT_S = 600.0
FLOOR_SERVER = [sys.executable, str(Path(__file__).with_name("http_floor.py"))]
TARGET_RATE, TARGET_TOK_S = 100.0, 3200.0
SERVER_START_S = 5.0  # serve --simulate and bench serve processes started, the quiet wait


@dataclass(frozen=True)
class SimOptions:
    rates: list[float]
    seconds: float  # of arrivals at each rate
    min_prompts: int
    max_prompts: int
    repeats: int
    prompt_lens: str
    output_len: int
    seed: int
    max_num_seqs: int
    cost_model: list[str]  # the same flags for serve --simulate and simulate
    tolerance: float

    @staticmethod
    def add_args(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("simulated serving (part 2)")
        g.add_argument("--rates", default="25,50,100,150,200,300,400", help="request rates to step through")
        g.add_argument("--sim-seconds", type=float, default=6.0, help="seconds of arrivals at each rate (6)")
        g.add_argument("--sim-min-prompts", type=int, default=150)
        g.add_argument("--sim-max-prompts", type=int, default=2400)
        g.add_argument("--sim-repeats", type=int, default=2, help="runs per rate (2)")
        g.add_argument("--sim-prompt-lens", default="16:128")
        g.add_argument("--sim-output-len", type=int, default=32)
        g.add_argument("--sim-max-num-seqs", type=int, default=256)
        g.add_argument("--sim-cost-model-file", default=None,
                       help="a cost model from `engine profile -o` for both sides (default: --cost-model default)")
        g.add_argument("--sim-tolerance", type=float, default=0.10, help="relative error that still keeps to it")

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> SimOptions:
        cost = ["--cost-model-file", a.sim_cost_model_file] if a.sim_cost_model_file else ["--cost-model", "default"]
        return cls([float(r) for r in a.rates.split(",") if r], a.sim_seconds, a.sim_min_prompts, a.sim_max_prompts,
                   a.sim_repeats, a.sim_prompt_lens, a.sim_output_len, a.seed, a.sim_max_num_seqs, cost,
                   a.sim_tolerance)

    def num_prompts(self, rate: float) -> int:
        return min(max(round(rate * self.seconds), self.min_prompts), self.max_prompts)

    def workload(self, rate: float) -> list[str]:
        return ["--workload", "uniform", "--num-prompts", str(self.num_prompts(rate)), "--prompt-lens",
                self.prompt_lens, "--output-lens", f"{self.output_len}:{self.output_len}", "--request-rate",
                f"{rate:g}", "--seed", str(self.seed)]

    def estimated_s(self) -> float:
        """On a quiet machine: the arrivals, the last streams, a server and a client started, per run."""
        return sum(self.repeats * (self.num_prompts(r) / r + 0.5 + SERVER_START_S) + 2.0 for r in self.rates)

    def engine_flags(self) -> list[str]:
        return ["--max-num-seqs", str(self.max_num_seqs), *self.cost_model]


@dataclass
class SimRow:
    rate: float
    offline: dict[str, float]  # the prediction
    runs: list[RunRecord]  # the served runs kept, one a repeat
    floor: list[RunRecord]  # the same client and arrivals against a bare endpoint, one a repeat


def offline(opts: SimOptions, rate: float, env: dict[str, str]) -> dict[str, float]:
    """What the simulation predicts (deterministic: run once per rate)."""
    cmd = engine_cmd("simulate", *opts.engine_flags(), *opts.workload(rate), "--no-record", "--json")
    out, _ = run_timed(cmd, env, RUN_TIMEOUT_S)
    s = json.loads(out[out.index("{"):])
    return {"ttft_p50_ms": s["ttft_s"]["p50"] * 1e3, "itl_p50_ms": s["itl_s"]["p50"] * 1e3,
            "ttft_mean_ms": s["ttft_s"]["mean"] * 1e3,
            "req_s": s["requests_per_s"], "tok_s": s["output_tokens_per_s"]}


def served_run(opts: SimOptions, rate: float, env: dict[str, str], client_env: dict[str, str],
               startup_cpu_s: float) -> tuple[dict[str, float], float]:
    """A fresh server per run: a run refuses a request id it has seen, and every workload says r0, r1, ..."""
    with served(["--simulate", "--model", "sim", *opts.engine_flags()], env) as server, \
            tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "result.json"
        cmd = engine_cmd("bench", "serve", "--base-url", server.url, *opts.workload(rate), "--save-result",
                         str(saved))
        with RunMeter([server.pid]) as meter:
            _, client_cpu = run_timed(cmd, client_env, RUN_TIMEOUT_S)
        server_pid = server.pid
        r = json.loads(saved.read_text())
        server_side = server_side_means_ms(server.url)
    if r["failed"]:
        raise RuntimeError(f"{r['failed']} request(s) failed at {rate:g} req/s: {next(e for e in r['errors'] if e)}")
    return {"ttft_p50_ms": r["median_ttft_ms"], "itl_p50_ms": r["median_itl_ms"], "req_s": r["request_throughput"],
            "tok_s": r["output_throughput"], "duration_s": r["duration"],
            "server_cores": meter.live_cpu_s[server_pid] / r["duration"],
            "client_cores": max(client_cpu - startup_cpu_s, 0.0) / r["duration"], "ttft_mean_ms": r["mean_ttft_ms"],
            **server_side}, meter.others_cores


def floor_run(opts: SimOptions, rate: float, client_env: dict[str, str]) -> tuple[dict[str, float], float]:
    """The same client and arrivals against bench/http_floor.py, which answers at once: the HTTP
    round trip's share of a client's TTFT at this rate on this machine."""
    with started(FLOOR_SERVER, client_env) as server, tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "result.json"
        cmd = engine_cmd("bench", "serve", "--base-url", server.url, *opts.workload(rate), "--save-result",
                         str(saved))
        with RunMeter([server.pid]) as meter:
            run_timed(cmd, client_env, RUN_TIMEOUT_S)
        r = json.loads(saved.read_text())
    if r["failed"]:
        raise RuntimeError(f"{r['failed']} request(s) to the bare endpoint failed at {rate:g} req/s")
    return {"ttft_p50_ms": r["median_ttft_ms"], "ttft_mean_ms": r["mean_ttft_ms"]}, meter.others_cores


def run_sim_part(opts: SimOptions, records: list[RunRecord], max_load: float, max_redo: int,
                 threads: int) -> list[SimRow]:
    env, client_env = engine_env(threads), engine_env(1)
    startup = client_startup_cpu_s(client_env)
    predicted = {rate: offline(opts, rate, env) for rate in opts.rates}
    served_by_rate: dict[float, list[RunRecord]] = {rate: [] for rate in opts.rates}
    floor_by_rate: dict[float, list[RunRecord]] = {rate: [] for rate in opts.rates}
    for rep in range(opts.repeats):
        for rate in opts.rates:
            label = f"{rate:g} req/s, {opts.num_prompts(rate)} requests"
            measure = partial(served_run, opts, rate, env, client_env, startup)
            served_by_rate[rate].append(with_redo(measure, records, max_load, max_redo, "simulated", label,
                                                  "served", rep))
            floor_by_rate[rate].append(with_redo(partial(floor_run, opts, rate, client_env), records, max_load,
                                                 max_redo, "simulated", label, "bare HTTP", rep))
    return [SimRow(rate, predicted[rate], served_by_rate[rate], floor_by_rate[rate]) for rate in opts.rates]


def _medians(runs: list[RunRecord]) -> dict[str, float]:
    kept = [r for r in runs if r.clean] or runs
    return {k: statistics.median(r.figures[k] for r in kept) for k in kept[0].figures}


def _err(got: float, want: float) -> float:
    return got / want - 1.0 if want else float("inf")


def sim_report(opts: SimOptions, rows: list[SimRow]) -> list[str]:
    lines = ["## 2. Simulated serving: the highest rate that keeps to its own schedule", "",
             f"`serve --simulate {' '.join(opts.engine_flags())}` against `simulate` with the same flags: "
             f"uniform workload, prompts {opts.prompt_lens} tokens, {opts.output_len} output tokens (ignore_eos), "
             f"Poisson arrivals at each rate, seed {opts.seed}. Arrivals match exactly: `bench serve` with a "
             "generated workload, --request-rate and burstiness 1 sends each request at the arrival time the "
             "workload generator (same seed, same rate) gives `simulate`. Client TTFT/ITL: vllm bench serve's "
             "(send to first chunk; gaps between chunks, pooled); offline: the engine's (arrival to first "
             "token; gaps between tokens, pooled). Server cores: the serve process's CPU over the benchmark "
             "duration; client cores: the bench serve process's, less its start-up CPU. TTFT mean client / "
             "server-side / offline: the server's own mean (receipt to first token, from its /metrics "
             "histogram) shows whether the schedule slipped (server-side off offline) or the HTTP path "
             "added the difference (client off server-side). Bare HTTP: the same client and arrivals against "
             "bench/http_floor.py, an endpoint that answers at once (no engine): the round trip of a bare "
             "Python endpoint on this machine at these arrivals (it idles between requests, so its wake-ups "
             "can be slower than a busy server's). Medians over "
             f"{opts.repeats} run(s) per rate; kept: both errors within {opts.tolerance:.0%}.", "",
             "| rate (req/s) | requests | TTFT p50 client / offline ms | TTFT error | ITL p50 client / offline ms "
             "| ITL error | TTFT mean client / server-side / offline ms | achieved req/s | output tok/s "
             "| bare HTTP TTFT p50 / mean ms | server + client cores | keeps to it |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    best: float | None = None
    failed = False
    floor_bound: list[str] = []  # missed rates where a bare endpoint's round trip alone exceeds the tolerance
    kept: list[str] = []
    for row in rows:
        rate, want, runs = row.rate, row.offline, row.runs
        med = _medians(runs)
        bare = _medians(row.floor)
        e_ttft = _err(med["ttft_p50_ms"], want["ttft_p50_ms"])
        e_itl = _err(med["itl_p50_ms"], want["itl_p50_ms"])
        ok = abs(e_ttft) <= opts.tolerance and abs(e_itl) <= opts.tolerance
        if ok:
            kept.append(f"{rate:g}")
        failed = failed or not ok
        best = rate if ok and not failed else best
        share = bare["ttft_p50_ms"] / want["ttft_p50_ms"]
        if not ok and share > opts.tolerance:
            floor_bound.append(f"{rate:g} req/s (bare round trip {share:.0%} of the offline TTFT p50)")
        loaded = "" if any(r.clean for r in runs) else " (loaded)"
        d_ttft, d_itl = med["ttft_p50_ms"] - want["ttft_p50_ms"], med["itl_p50_ms"] - want["itl_p50_ms"]
        lines.append(f"| {rate:g}{loaded} | {opts.num_prompts(rate)} | {med['ttft_p50_ms']:.2f} / "
                     f"{want['ttft_p50_ms']:.2f} | {e_ttft:+.1%} ({d_ttft:+.2f} ms) | {med['itl_p50_ms']:.2f} / "
                     f"{want['itl_p50_ms']:.2f} | {e_itl:+.1%} ({d_itl:+.2f} ms) | {med['ttft_mean_ms']:.2f} / "
                     f"{med['server_ttft_mean_ms']:.2f} / {want['ttft_mean_ms']:.2f} | {med['req_s']:.1f} | "
                     f"{med['tok_s']:.0f} | {bare['ttft_p50_ms']:.2f} / {bare['ttft_mean_ms']:.2f} | "
                     f"{med['server_cores']:.2f} + {med['client_cores']:.2f} | "
                     f"{'yes' if ok else 'no'} |")
    verdict = (f"**Highest rate that keeps to the schedule (every rate up to it within {opts.tolerance:.0%}): "
               f"{best:g} req/s**" if best is not None else "**No rate kept to the schedule**")
    lines += ["", f"{verdict}; target to beat: {TARGET_RATE:g} req/s, {TARGET_TOK_S:,.0f} streamed tokens/s "
              "on 2 cores."]
    lines += ["", f"Rates that keep to it: {', '.join(kept) + ' req/s' if kept else 'none'}."]
    if floor_bound:
        lines += ["", "Missed where the bare endpoint's round trip at the same arrivals alone exceeds the tolerance: "
                  + "; ".join(floor_bound) + " (a reference for this machine, not a bound)."]
    print(verdict, file=sys.stderr)
    return lines
