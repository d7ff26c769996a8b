"""What-if fidelity that measures skill, not sameness.

    python bench/bench_fidelity.py [--repeats 2] [--smollm2] [--out bench/results_fidelity.md]
                                   [--keep-db runs.db | --reuse-db runs.db]

Real runs on `tiny` (and, with --smollm2, a SmolLM2 subset) under named configurations whose
outcomes differ a lot: max_num_seqs 2 / 8 / 64, token budgets 128 vs 2,048 with chunked prefill,
a KV pool small enough to preempt (recompute and swap), static vs continuous batching, fcfs vs
priority vs sjf, at a load past capacity and one under it. Every configuration is recorded
--repeats times (`python -m engine run`, its own process). A device profile is measured first
(`python -m engine profile`), as a user would, so a base that never swapped borrows the measured
block-copy cost.

Every recorded run serves as a base; from it the simulator predicts every other configuration of
the same workload (in process, as `simulate --from-run` does: the base's fitted cost model plus
borrowed costs). For each pair and metric: the simulator's error, the "nothing changes" error
(the base's own figure), and the spread between the target's real runs; skill = 1 - sim / null.
Pairs count towards the skill target where the real outcome differs from the base by more than
twice the target's real-run spread. Every pair goes into a JSON results file.

--fit pooled prices each prediction with a cost model fitted to every real run of the base's model
in the database except the target configuration's runs (whatif/pooled_fit.py: what `simulate
--from-run N --fit pooled` does), where the default prices it with the base run's own fit.

Step pricing splits the errors by their source: the base's cost model applied to each target run's
own recorded steps (no replay; whatif/step_pricing.py, the track record's "step times") says how
far step times alone moved between the runs (the model's transfer plus the machine's drift), and
the same done between a configuration's two real runs measures the drift alone.
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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cpu_load import CpuLoadMeter, wait_for_quiet, write_report  # noqa: E402

METRICS = ("output_tokens_per_s", "ttft_p50", "ttft_p99", "e2e_p50", "e2e_p99")
LABELS = {"output_tokens_per_s": "tok/s", "ttft_p50": "TTFT p50", "ttft_p99": "TTFT p99", "e2e_p50": "E2E p50",
          "e2e_p99": "E2E p99"}


@dataclass(frozen=True)
class Workload:
    name: str
    model: str
    flags: tuple[str, ...]  # workload flags of `python -m engine run`


@dataclass(frozen=True)
class Config:
    name: str
    flags: tuple[str, ...]  # engine flags (vLLM's names)


BASE = ("--block-size", "16", "--num-gpu-blocks", "512", "--enable-chunked-prefill", "--max-num-batched-tokens",
        "2048")
CONFIGS = (
    Config("seqs 2", (*BASE, "--max-num-seqs", "2")),
    Config("seqs 8", (*BASE, "--max-num-seqs", "8")),
    Config("seqs 64", (*BASE, "--max-num-seqs", "64")),
    Config("seqs 64, budget 128", ("--block-size", "16", "--num-gpu-blocks", "512", "--enable-chunked-prefill",
                                   "--max-num-batched-tokens", "128", "--max-num-seqs", "64")),
    Config("pool 48, recompute", ("--block-size", "16", "--num-gpu-blocks", "48", "--enable-chunked-prefill",
                                  "--max-num-batched-tokens", "2048", "--max-num-seqs", "64")),
    Config("pool 48, swap", ("--block-size", "16", "--num-gpu-blocks", "48", "--enable-chunked-prefill",
                             "--max-num-batched-tokens", "2048", "--max-num-seqs", "64", "--preemption-mode", "swap",
                             "--swap-space", "512")),
    Config("static 16", ("--block-size", "16", "--num-gpu-blocks", "512", "--no-enable-chunked-prefill",
                         "--max-num-batched-tokens", "2048", "--max-num-seqs", "16", "--batching", "static")),
    Config("seqs 8, priority", (*BASE, "--max-num-seqs", "8", "--policy", "priority")),
    Config("seqs 8, sjf", (*BASE, "--max-num-seqs", "8", "--policy", "sjf")),
)
WORKLOADS = (
    Workload("tiny, past capacity", "tiny", ("--workload", "mixed", "--num-prompts", "150", "--request-rate", "25",
                                             "--priority-levels", "3", "--seed", "1")),
    Workload("tiny, under capacity", "tiny", ("--workload", "mixed", "--num-prompts", "80", "--request-rate", "4",
                                              "--priority-levels", "3", "--seed", "2")),
)
UNDER_CAPACITY_CONFIGS = ("seqs 2", "seqs 8", "seqs 64", "pool 48, recompute", "static 16")
SMOLLM2 = Workload("SmolLM2, past capacity", "smollm2",
                   ("--workload", "mixed", "--num-prompts", "40", "--request-rate", "4", "--priority-levels", "3",
                    "--seed", "3"))
SMOLLM2_CONFIGS = ("seqs 2", "seqs 8", "seqs 64", "static 16")


def engine(*args: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([sys.executable, "-m", "engine", *args, "--json"], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def run_name(workload: Workload, config: Config) -> str:
    return f"fidelity {workload.name} | {config.name}"


def record_real(db: str, workload: Workload, config: Config, max_load: float, max_tries: int) -> tuple[int, float]:
    """One real run, redone (the loaded one deleted) while other processes used more than max_load
    cores during it, up to max_tries; the last is kept however loaded. A loaded run is a slower
    machine, not the configuration: as a base it would teach the cost model the wrong device."""
    for attempt in range(1, max_tries + 1):
        wait_for_quiet(max_load, timeout_s=120)
        with CpuLoadMeter() as meter:
            summary = engine("run", "--model", workload.model, *workload.flags, *config.flags, "--db", db,
                             "--name", run_name(workload, config))
        run_id, loaded = int(summary["run_id"]), meter.others_cores > max_load
        redo = loaded and attempt < max_tries
        print(f"  {run_name(workload, config)}: run {run_id}, {summary['output_tokens_per_s']:.0f} tok/s "
              f"(others {meter.others_cores:.2f} cores){' -> redone' if redo else ''}", file=sys.stderr)
        if not redo:
            return run_id, meter.others_cores
        subprocess.run([sys.executable, "-m", "engine", "delete", str(run_id), "--db", db], cwd=ROOT,
                       check=True, capture_output=True)
    raise AssertionError("unreachable: the last try returns")


def plan(smollm2: bool) -> list[tuple[Workload, list[Config]]]:
    by_name = {c.name: c for c in CONFIGS}
    groups = [(WORKLOADS[0], list(CONFIGS)), (WORKLOADS[1], [by_name[n] for n in UNDER_CAPACITY_CONFIGS])]
    if smollm2:
        groups.append((SMOLLM2, [by_name[n] for n in SMOLLM2_CONFIGS]))
    return groups


def metrics_of(summary: dict) -> dict[str, float]:  # type: ignore[type-arg]
    ttft, e2e = summary["ttft_s"], summary["e2e_s"]
    return {"output_tokens_per_s": summary["output_tokens_per_s"], "ttft_p50": ttft["p50"], "ttft_p99": ttft["p99"],
            "e2e_p50": e2e["p50"], "e2e_p99": e2e["p99"]}


def rel(a: float, b: float) -> float:
    """|a - b| / b in percent."""
    return abs(a - b) / b * 100 if b else float("inf")


def analyse(db: str, groups: list[tuple[Workload, list[Config]]],  # type: ignore[type-arg]
            fit: str = "run") -> tuple[list[dict], dict, list[float]]:  # type: ignore[type-arg]
    """Every (base run, target configuration) pair of a workload: sim error, null error, spread.
    fit "pooled": each prediction's cost model is fitted to every real run of the base's model in
    the database except the target configuration's runs (whatif/pooled_fit.py)."""
    from engine.config import EngineConfig
    from storage.database import open_for_write
    from storage.queries import get_run, list_runs
    from whatif.base_run import load_base_run, simulate_quietly, summary_metrics
    from whatif.pooled_fit import pooled_cost_model
    from whatif.predict import base_profile, on_pool
    from whatif.pricing import price_for_prediction
    from whatif.step_pricing import step_time_error_pct
    from whatif.trust import extrapolation_warnings

    db_engine = open_for_write(db)
    listed = list_runs(db_engine)
    pairs: list[dict] = []  # type: ignore[type-arg]
    real: dict[str, dict[str, list[tuple[int, dict[str, float]]]]] = {}
    pools: dict[tuple[str, str], Any] = {}  # (model, target): every base of the model gets the same pool
    steps: dict[int, Any] = {}  # each run's steps, read once for every pool
    for workload, configs in groups:
        real[workload.name] = {}
        for config in configs:
            ids = sorted(int(i) for i in listed[listed["name"] == run_name(workload, config)]["id"])
            real[workload.name][config.name] = [(i, metrics_of(get_run(db_engine, i)["summary"])) for i in ids]  # type: ignore[index]
        for base_config in configs:
            for base_id, base_metrics in real[workload.name][base_config.name]:
                own = load_base_run(db_engine, base_id)
                profile = base_profile(db_engine, own)
                for target in configs:
                    if target is base_config:
                        continue
                    target_runs = real[workload.name][target.name]
                    config = EngineConfig.from_record(get_run(db_engine, target_runs[0][0])["config"])  # type: ignore[index]
                    base = own
                    if fit == "pooled":
                        key = (workload.model, target.name)
                        if key not in pools:
                            pools[key] = pooled_cost_model(db_engine, base_id, config, holdout=False, steps=steps)
                        base = on_pool(own, pools[key])
                    priced = price_for_prediction(base.cost_model, base.mode, base.exercised,
                                                  base.executor.get("kv_bytes_per_block"), profile)
                    predicted = summary_metrics(simulate_quietly(config, priced.model, base.workload))
                    warnings = extrapolation_warnings(base, config, priced, "the pooled runs" if fit == "pooled"
                                                      else "the base")  # what the trust indicator says
                    truth = {m: statistics.median(r[1][m] for r in target_runs) for m in METRICS}
                    spread = {m: rel(target_runs[0][1][m], target_runs[1][1][m]) if len(target_runs) > 1
                              else float("nan") for m in METRICS}
                    pairs.append({
                        "workload": workload.name, "base": base_config.name, "base_run": base_id,
                        "target": target.name, "target_runs": [r[0] for r in target_runs],
                        "predicted": predicted, "truth": truth, "base_recorded": base_metrics,
                        "sim_error_pct": {m: rel(predicted[m] or 0.0, truth[m]) for m in METRICS},
                        "null_error_pct": {m: rel(base_metrics[m], truth[m]) for m in METRICS},
                        "spread_pct": spread, "warnings": warnings,
                        "step_pricing_pct": _median_or_nan(
                            step_time_error_pct(db_engine, priced.model, r[0]) for r in target_runs),
                    })
    return pairs, real, twin_pricing_pct(db_engine, real)


def summarise(pairs: list[dict]) -> dict:  # type: ignore[type-arg]
    out: dict = {}  # type: ignore[type-arg]
    for m in METRICS:
        qualifying = [p for p in pairs if p["null_error_pct"][m] > 2 * p["spread_pct"][m]]
        skill = [1 - p["sim_error_pct"][m] / p["null_error_pct"][m] for p in qualifying if p["null_error_pct"][m] > 0]
        quiet = [p for p in pairs if p["spread_pct"][m] < 5.0]
        out[m] = {
            "pairs": len(pairs), "qualifying": len(qualifying),
            "median_skill": statistics.median(skill) if skill else float("nan"),
            "median_sim_error": statistics.median(p["sim_error_pct"][m] for p in pairs),
            "median_null_error": statistics.median(p["null_error_pct"][m] for p in pairs),
            "median_spread": statistics.median(p["spread_pct"][m] for p in pairs),
            "median_sim_error_quiet": (statistics.median(p["sim_error_pct"][m] for p in quiet) if quiet
                                       else float("nan")),
            "quiet_pairs": len(quiet),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smollm2", action="store_true", help="also the SmolLM2 subset")
    parser.add_argument("--max-other-load", type=float, default=0.2,
                        help="redo a real run during which other processes used more cores than this")
    parser.add_argument("--max-tries", type=int, default=3, help="tries per real run (the last is kept)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--pairs-out", default=str(ROOT / "bench" / "results_fidelity_pairs.json"))
    parser.add_argument("--keep-db", default=None, help="record into this SQLite file and keep it")
    parser.add_argument("--reuse-db", default=None, help="analyse the runs a --keep-db session recorded")
    parser.add_argument("--fit", choices=("run", "pooled"), default="run",
                        help="each prediction's step costs: the base run's own fit, or one fitted to every real "
                             "run of its model except the target configuration's")
    args = parser.parse_args()
    groups = plan(args.smollm2)
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = args.reuse_db or args.keep_db or str(Path(tmp) / "fidelity.db")
        if not args.reuse_db:
            models = sorted({w.model for w, _ in groups})
            for model in models:
                print(f"profiling {model}", file=sys.stderr)
                subprocess.run([sys.executable, "-m", "engine", "profile", "--model", model, "--db", db,
                                "--max-num-seqs", "64", "--max-num-batched-tokens", "2048", "--repeats", "3"],
                               cwd=ROOT, check=True, capture_output=True)
            for _ in range(args.repeats):
                for workload, configs in groups:
                    for config in configs:
                        loads.append(record_real(db, workload, config, args.max_other_load, args.max_tries)[1])
        pairs, real, twins = analyse(db, groups, args.fit)
    Path(args.pairs_out).write_text(json.dumps(pairs, indent=1) + "\n")
    write_report(report(args, groups, pairs, real, loads, twins), args.out)


def report(args: argparse.Namespace, groups: list[tuple[Workload, list[Config]]], pairs: list[dict],  # type: ignore[type-arg]
           real: dict, loads: list[float], twins: list[float]) -> str:  # type: ignore[type-arg]
    lines = [
        f"Command: `python bench/bench_fidelity.py --repeats {args.repeats}{' --smollm2' if args.smollm2 else ''}`"
        + (f" --fit {args.fit}" if args.fit != "run" else "")
        + (" (re-analysed with --reuse-db)" if args.reuse_db else "") + "  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {date.today()}"
        + (f"; other processes during the real runs: median {statistics.median(loads):.2f} cores, max "
           f"{max(loads):.2f}" if loads else ""),
        "",
        "Real runs (each run's output tok/s; E2E p50 in ms):",
        "",
        "| workload | configuration | runs | tok/s | E2E p50 (ms) |",
        "|---|---|---|---:|---:|",
    ]
    for workload, configs in groups:
        for config in configs:
            runs = real[workload.name][config.name]
            ids = ", ".join(str(r[0]) for r in runs)
            rates = ", ".join(f"{r[1]['output_tokens_per_s']:.0f}" for r in runs)
            e2e = ", ".join(f"{r[1]['e2e_p50'] * 1e3:.0f}" for r in runs)
            lines.append(f"| {workload.name} | {config.name} | {ids} | {rates} | {e2e} |")
    s = summarise(pairs)
    lines += ["", f"Over all {len(pairs)} pairs (base run -> another configuration of its workload):", "",
              "| metric | median sim error % | median null error % | median real-run spread % | qualifying pairs "
              "(outcome moved > 2x spread) | median skill (1 - sim/null) | median sim error % where spread < 5% "
              "(pairs) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m in METRICS:
        r = s[m]
        lines.append(f"| {LABELS[m]} | {r['median_sim_error']:.1f} | {r['median_null_error']:.1f} | "
                     f"{r['median_spread']:.1f} | {r['qualifying']} | {r['median_skill']:.2f} | "
                     f"{r['median_sim_error_quiet']:.1f} ({r['quiet_pairs']}) |")
    lines += _warned_table(pairs)
    lines += _pricing_table(pairs, twins)
    lines += ["", "Per target configuration (median over bases; sim / null error %):", "",
              "| workload | target | " + " | ".join(LABELS[m] for m in METRICS) + " |",
              "|---|---|" + "---:|" * len(METRICS)]
    for workload, configs in groups:
        for config in configs:
            mine = [p for p in pairs if p["workload"] == workload.name and p["target"] == config.name]
            cells = " | ".join(f"{statistics.median(p['sim_error_pct'][m] for p in mine):.1f} / "
                               f"{statistics.median(p['null_error_pct'][m] for p in mine):.0f}" for m in METRICS)
            lines.append(f"| {workload.name} | {config.name} | {cells} |")
    pairs_out = Path(args.pairs_out).resolve()
    lines += ["", f"Every pair: `{pairs_out.relative_to(ROOT) if pairs_out.is_relative_to(ROOT) else pairs_out}`."]
    return "\n".join(lines)


def _median_or_nan(values: Iterable[float | None]) -> float:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else float("nan")


def twin_pricing_pct(db_engine: Any, real: dict) -> list[float]:  # type: ignore[type-arg]
    """The machine's drift alone: each real run of a configuration priced by its twin's fitted model
    (|error| %; nothing differs between the two but the minute they ran in)."""
    from whatif.base_run import load_base_run
    from whatif.step_pricing import step_time_error_pct

    twins = []
    for configs in real.values():
        for runs in configs.values():
            for a, b in itertools.permutations(runs, 2):
                # The twin's own fit, unborrowed: both runs exercised the same features.
                error = step_time_error_pct(db_engine, load_base_run(db_engine, a[0]).cost_model, b[0])
                if error is not None:
                    twins.append(abs(error))
    return twins


def _pricing_table(pairs: list[dict], twins: list[float]) -> list[str]:  # type: ignore[type-arg]
    """Where the p50 errors come from: the base's cost model pricing the target's own recorded steps
    (cost-model transfer, including the machine's drift between the runs) against the scheduling
    replay."""
    if not pairs or not twins:
        return []
    within = [p for p in pairs if abs(p["step_pricing_pct"]) <= 5.0]
    beyond = [p for p in pairs if abs(p["step_pricing_pct"]) > 5.0]  # NaN (no timed steps) in neither
    priced = within + beyond
    lines = ["", "Step pricing: the base's cost model applied to the target runs' own recorded steps (predicted "
             "over measured total). Median |error| over pairs "
             f"{statistics.median(abs(p['step_pricing_pct']) for p in priced):.1f}%; between the two real runs of one "
             f"configuration, each priced by its twin's fitted model (nothing changed but the minute they ran in): "
             f"median {statistics.median(twins):.1f}%, max {max(twins):.1f}% ({len(twins)} pricings). Errors where "
             "the real runs agree within 5%, split by it:", "",
             "| metric | step pricing within 5%: median sim error % (pairs) | beyond 5%: median sim error % (pairs) |",
             "|---|---:|---:|"]
    for m in METRICS:
        cells = []
        for group in (within, beyond):
            errors = [p["sim_error_pct"][m] for p in group if p["spread_pct"][m] < 5.0]
            cells.append(f"{statistics.median(errors):.1f} ({len(errors)})" if errors else "n/a")
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    return lines


def _warned_table(pairs: list[dict]) -> list[str]:  # type: ignore[type-arg]
    """Does the trust indicator know when to be doubted? The pairs it gave an extrapolation warning
    for (the target leaves what the base exercised) against those it did not."""
    warned = [p for p in pairs if p.get("warnings")]
    clear = [p for p in pairs if not p.get("warnings")]
    lines = ["", f"Split by the trust indicator: {len(clear)} pairs without an extrapolation warning, {len(warned)} "
             "with one (e.g. a max_num_seqs 2 base predicting max_num_seqs 64):", "",
             "| metric | no warning: median sim error % | no warning: median skill | warned: median sim error % "
             "| warned: median skill |", "|---|---:|---:|---:|---:|"]
    for m in METRICS:
        cells = []
        for group in (clear, warned):
            errors = [p["sim_error_pct"][m] for p in group]
            skills = [1 - p["sim_error_pct"][m] / p["null_error_pct"][m] for p in group
                      if p["null_error_pct"][m] > 2 * p["spread_pct"][m] and p["null_error_pct"][m] > 0]
            cells += [f"{statistics.median(errors):.1f}" if errors else "n/a",
                      f"{statistics.median(skills):.2f} ({len(skills)})" if skills else "n/a"]
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    counts: dict[str, int] = {}
    for p in warned:
        for w in p["warnings"]:
            key = w.split(":")[0]
            counts[key] = counts.get(key, 0) + 1
    lines += ["", "Warnings given: " + ", ".join(f"{k} ({n})" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
              + "." if counts else ""]
    return lines


if __name__ == "__main__":
    main()
