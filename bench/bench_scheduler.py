"""Scheduler cost per step (schedule + update_from_output): ours against vLLM V1's, in one run.

Reference workload (shared/NOTES.md): 1,000 requests at t=0, prompts uniform 16..512 tokens,
outputs 70% uniform 10..20 / 30% uniform 80..100 (ignore_eos, so exactly max_tokens), token budget
2,048, block size 16, 2,000 KV blocks, max_num_seqs 64 and 256. No model: a fake executor returns
one token for each request whose chunk completes its known tokens. Only schedule() and
update_from_output() are timed, per step; the fake executor and request creation are not.

Ours runs in this process; vLLM's Scheduler runs in another virtualenv through
bench/vllm_scheduler_driver.py (one long-lived subprocess, one JSON command per run), so the
runs of both alternate under the same machine conditions. Every run records other processes'
CPU use (machine busy time from /proc/stat minus the measuring process's own); a run where it
passed --max-other-load cores is redone. Reported figures are medians over clean runs.

    .venv/bin/python bench/bench_scheduler.py --vllm-python /work/vllm-venv/bin/python
    .venv/bin/python bench/bench_scheduler.py --profile      # cProfile of ours, no timing runs
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import io
import json
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _engine_root() -> Path:
    """--engine-root DIR: import engine/ from DIR (e.g. a `git archive` export of one commit, so a
    benchmark is not measuring someone's half-finished edit); default: this checkout."""
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg == "--engine-root" and i + 1 < len(argv):
            return Path(argv[i + 1]).resolve()
        if arg.startswith("--engine-root="):
            return Path(arg.split("=", 1)[1]).resolve()
    return ROOT


ENGINE_ROOT = _engine_root()
sys.path.insert(0, str(ENGINE_ROOT))

from bench.vllm_scheduler_driver import (  # noqa: E402  (stdlib-only helpers shared with the driver)
    SAMPLED_TOKEN,
    SPEED_CHECK_EVERY,
    _busy_ticks,
    _other_cores,
    calibrate,
    prompt_tokens,
    timed_loop,
)
from engine.config import CacheConfig, SchedulerConfig  # noqa: E402
from engine.outputs import ModelRunnerOutput  # noqa: E402
from engine.request import Request  # noqa: E402
from engine.sampling_params import SamplingParams  # noqa: E402
from engine.scheduler import Scheduler  # noqa: E402

NUM_REQUESTS = 1000
BUDGET = 2048
BLOCK_SIZE = 16
NUM_BLOCKS = 2000
MAX_MODEL_LEN = 2048
NOTES_VLLM_US = {64: 660.0, 256: 910.0}  # shared/NOTES.md, measured in another session


def make_workload(seed: int, n: int = NUM_REQUESTS) -> dict[str, list[int]]:
    rng = random.Random(seed)
    prompt_lens = [rng.randint(16, 512) for _ in range(n)]
    max_tokens = [rng.randint(10, 20) if rng.random() < 0.7 else rng.randint(80, 100) for _ in range(n)]
    return {"prompt_lens": prompt_lens, "max_tokens": max_tokens}


# -- ours -----------------------------------------------------------------------------------------
def run_ours(
    workload: dict[str, list[int]],
    max_num_seqs: int,
    chunked: bool,
    include_ids: bool,
    profiler: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """One run to completion; the same loop and record as vllm_scheduler_driver.run."""
    calib_us = calibrate()
    gc.collect()
    sched = Scheduler(
        SchedulerConfig(
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=BUDGET,
            max_model_len=MAX_MODEL_LEN,
            enable_chunked_prefill=chunked,
        ),
        CacheConfig(block_size=BLOCK_SIZE, num_gpu_blocks=NUM_BLOCKS),
        include_token_ids=include_ids,
    )
    gc.collect()
    gc.freeze()  # as vLLM's EngineCore does after start-up (the driver does the same)
    try:
        reqs = [
            Request(str(i), prompt_tokens(i, p), SamplingParams(max_tokens=m, ignore_eos=True), arrival_time=0.0)
            for i, (p, m) in enumerate(zip(workload["prompt_lens"], workload["max_tokens"], strict=True))
        ]
        if profiler is not None:
            profiler.enable()
        rec = timed_loop(
            sched, reqs,
            lambda out: (ModelRunnerOutput({s.request_id: SAMPLED_TOKEN for s in out.scheduled if s.do_sample}),
                         out.scheduled),
            "our scheduler",
        )
        if profiler is not None:
            profiler.disable()
    finally:
        gc.unfreeze()
    rec["calib_us"] = calib_us
    rec["calib_after_us"] = calibrate()
    return rec


# -- vLLM subprocess ------------------------------------------------------------------------------
class VllmDriver:
    def __init__(self, python: str) -> None:
        self.proc = subprocess.Popen(
            [python, str(ROOT / "bench" / "vllm_scheduler_driver.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
        )

    def ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the vLLM driver exited (code {self.proc.wait()}); see its stderr above")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the vLLM driver failed: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


# -- measurement ------------------------------------------------------------------------------------
@dataclass
class Config:
    key: str
    label: str
    system: str  # ours | vllm
    max_num_seqs: int
    chunked: bool
    include_ids: bool = True  # ours
    prefix_caching: bool = False  # vllm
    log_stats: bool = False  # vllm
    runs: list[dict[str, Any]] = field(default_factory=list)  # clean runs
    dirty: list[dict[str, Any]] = field(default_factory=list)  # runs redone for contamination

    def median(self, name: str) -> float:
        pool = self.runs or self.dirty
        return statistics.median(r[name] for r in pool) if pool else float("nan")


def configs(with_vllm: bool) -> list[Config]:
    out: list[Config] = []
    for seqs in (64, 256):
        for chunked in (True, False):
            c = "chunked" if chunked else "no-chunk"
            out.append(Config(f"ours-{seqs}-{c}", f"ours, {c}, token+block ids", "ours", seqs, chunked, True))
            out.append(
                Config(
                    f"ours-{seqs}-{c}-noids",
                    f"ours, {c}, counts only (include_token_ids=False)",
                    "ours",
                    seqs,
                    chunked,
                    False,
                )
            )
            if with_vllm:
                out.append(
                    Config(f"vllm-{seqs}-{c}", f"vLLM V1, {c}, no prefix caching, no stats", "vllm", seqs, chunked)
                )
        if with_vllm:
            out.append(
                Config(
                    f"vllm-{seqs}-chunked-defaults",
                    "vLLM V1, chunked, prefix caching + log_stats (its serving defaults)",
                    "vllm",
                    seqs,
                    True,
                    prefix_caching=True,
                    log_stats=True,
                )
            )
    return out


class Discipline:
    """When a run counts: others' CPU use under max_other_load, and the interpreter speed check
    (calibrate(), before and after the run) within max_slowdown of the fastest seen this session."""

    def __init__(self, max_other_load: float, max_slowdown: float, quiet_timeout: float) -> None:
        self.max_other_load = max_other_load
        self.max_slowdown = max_slowdown
        self.quiet_timeout = quiet_timeout
        self.ref_calib_us = min(calibrate() for _ in range(20))

    def see(self, *calibs: float) -> None:
        self.ref_calib_us = min(self.ref_calib_us, *calibs)

    def why_dirty(self, rec: dict[str, Any]) -> str:
        reasons = []
        if rec["other_cores"] > self.max_other_load:
            reasons.append(f"others {rec['other_cores']:.2f} cores")
        slow = max(rec["calib_us"], rec["calib_after_us"], *rec["calib_during_us"]) / self.ref_calib_us
        if slow > self.max_slowdown:
            reasons.append(f"machine {slow:.2f}x slower")
        return ", ".join(reasons)

    def wait(self) -> None:
        """Until a 0.3 s window with quiet neighbours and a fast speed check, or quiet_timeout."""
        deadline = time.monotonic() + self.quiet_timeout
        while time.monotonic() < deadline:
            b0, t0 = _busy_ticks(), time.perf_counter()
            time.sleep(0.3)
            load = _other_cores(b0, _busy_ticks(), time.perf_counter() - t0)
            c = calibrate()
            self.see(c)
            if load <= self.max_other_load and c <= self.max_slowdown * self.ref_calib_us:
                return


def measure_once(
    cfg: Config, workload_path: str, workload: dict[str, list[int]], driver: VllmDriver | None
) -> dict[str, Any]:
    if cfg.system == "ours":
        return run_ours(workload, cfg.max_num_seqs, cfg.chunked, cfg.include_ids)
    assert driver is not None
    return driver.ask(
        {
            "cmd": "run",
            "workload": workload_path,
            "max_num_seqs": cfg.max_num_seqs,
            "chunked": cfg.chunked,
            "prefix_caching": cfg.prefix_caching,
            "log_stats": cfg.log_stats,
            "num_blocks": NUM_BLOCKS,
            "block_size": BLOCK_SIZE,
            "max_num_batched_tokens": BUDGET,
            "max_model_len": MAX_MODEL_LEN,
        }
    )


def measure(
    cfgs: list[Config],
    args: argparse.Namespace,
    workload_path: str,
    workload: dict[str, list[int]],
    driver: VllmDriver | None,
) -> Discipline:
    disc = Discipline(args.max_other_load, args.max_slowdown, args.quiet_timeout)
    for cfg in cfgs:  # warm-up: imports, first-call caches; not recorded
        measure_once(cfg, workload_path, workload, driver)
    for rnd in range(args.runs):  # rounds alternate every configuration under the same conditions
        for cfg in cfgs:
            for attempt in range(args.max_attempts):
                disc.wait()
                rec = measure_once(cfg, workload_path, workload, driver)
                disc.see(rec["calib_us"], rec["calib_after_us"], *rec["calib_during_us"])
                rec["round"], rec["attempt"] = rnd, attempt
                why = disc.why_dirty(rec)
                rec["dirty"] = why
                (cfg.dirty if why else cfg.runs).append(rec)
                print(
                    f"  round {rnd} {cfg.key:28s} mean {rec['mean_us']:8.1f} us  median {rec['median_us']:8.1f} us"
                    f"  others {rec['other_cores']:.2f} cores  speed check {rec['calib_us']:.0f}/"
                    f"{max(rec['calib_during_us'], default=0):.0f}/{rec['calib_after_us']:.0f} us"
                    f"{'  -> redo: ' + why if why else ''}",
                    file=sys.stderr,
                )
                if not why:
                    break
    for cfg in cfgs:  # judge every run again against the session's final fastest speed check
        for rec in list(cfg.runs):
            why = disc.why_dirty(rec)
            if why:
                rec["dirty"] = why + " (judged at the end)"
                cfg.runs.remove(rec)
                cfg.dirty.append(rec)
    return disc


# -- report -------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def engine_source(args: argparse.Namespace) -> str:
    """Which engine code was measured: the label given, or this checkout's commit and dirty files."""
    import engine.scheduler

    where = Path(engine.scheduler.__file__).resolve().parent.parent
    if args.engine_label:
        return f"{args.engine_label} (from {where})"
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--", "engine"], capture_output=True, text=True
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return str(where)
    changed = [line[3:] for line in dirty if line.strip()]
    return f"commit {commit}" + (f", plus uncommitted changes in {', '.join(changed)}" if changed else "")


def render(
    cfgs: list[Config],
    args: argparse.Namespace,
    command: str,
    vllm_info: dict[str, Any] | None,
    started: str,
    elapsed_s: float,
    disc: Discipline,
) -> str:
    m = machine()
    by = {c.key: c for c in cfgs}
    lines = [
        "# Scheduler cost per step: ours vs vLLM V1",
        "",
        f"- Command: `{command}`",
        f"- Date: {started} (took {elapsed_s:.0f} s)",
        f"- Machine: {m['nproc']} CPUs, {m['cpu']}, Python {m['python']}, Linux {m['kernel']}",
        f"- Our engine measured: {engine_source(args)}",
        f"- vLLM: {vllm_info['vllm']} (torch {vllm_info['torch']}, Python {vllm_info['python']}), "
        "driven in its own virtualenv by bench/vllm_scheduler_driver.py"
        if vllm_info
        else "- vLLM: not measured in this run",
        f"- Workload: {NUM_REQUESTS} requests at t=0, prompts uniform 16..512, outputs 70% 10..20 / 30% 80..100 "
        f"(seed {args.seed}, ignore_eos), max_num_batched_tokens={BUDGET}, block_size={BLOCK_SIZE}, "
        f"{NUM_BLOCKS} KV blocks (vLLM keeps one as its null block: 1,999 usable), max_model_len={MAX_MODEL_LEN}, "
        "fcfs, recompute preemption.",
        "- Timed per step: schedule() + update_from_output(); the fake executor (one token per request "
        "whose chunk reaches its last known token) and request creation are not. Both processes "
        "gc.freeze() after building the scheduler, as vLLM's EngineCore does.",
        f"- Discipline: {args.runs} rounds; each round runs every configuration once, alternating ours and "
        f"vLLM, after waiting (up to {args.quiet_timeout:.0f} s) for a quiet machine. A run is redone (up to "
        f"{args.max_attempts} attempts) when other processes used more than {args.max_other_load} cores "
        "during it (machine busy time from /proc/stat minus the measuring process's own), or when the "
        "speed check, a fixed pure-Python loop timed in the measuring process just before, every "
        f"{SPEED_CHECK_EVERY} steps during (outside the timed calls) and just after the run, was more than "
        f"{args.max_slowdown}x slower than the fastest seen in the session "
        f"({disc.ref_calib_us:.0f} us): on this VM the machine's speed swings up to 2x with nothing "
        "visible in /proc/stat (other tenants of the host). Figures are medians over clean runs (each "
        "run gives the mean and the median of its per-step times).",
        "",
        "## Per configuration",
        "",
        "| configuration | max_num_seqs | mean us/step | of which schedule() | median us/step | p90 us/step | "
        "requests/step | tokens/step | us per scheduled request | steps | preemptions | clean runs (redone) | "
        "others' load, clean runs: median / max (cores) | interpreter speed check (us) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cfgs:
        loads = [r["other_cores"] for r in c.runs]
        load_s = f"{statistics.median(loads):.2f} / {max(loads):.2f}" if loads else "n/a (no clean run)"
        lines.append(
            f"| {c.label} | {c.max_num_seqs} | {c.median('mean_us'):.0f} | {c.median('schedule_mean_us'):.0f} | "
            f"{c.median('median_us'):.0f} | "
            f"{c.median('p90_us'):.0f} | {c.median('reqs_per_step'):.1f} | {c.median('tokens_per_step'):.0f} | "
            f"{c.median('us_per_scheduled_req'):.2f} | {c.median('steps'):.0f} | {c.median('preemptions'):.0f} | "
            f"{len(c.runs)} ({len(c.dirty)}) | {load_s} | {c.median('calib_us'):.0f} |"
        )
    dirty = [r for c in cfgs for r in c.dirty]
    n_load = sum("others" in r["dirty"] for r in dirty)
    n_slow = sum("slower" in r["dirty"] for r in dirty)
    short = [c.key for c in cfgs if len(c.runs) < args.runs]
    if short:
        enough = (
            f"Configurations with fewer than {args.runs} clean runs: {', '.join(short)} (one with none reports "
            "the median of its set-aside runs)."
        )
    else:
        enough = f"Every configuration has {args.runs} clean runs."
    lines += [
        "",
        f"Contamination: {len(dirty)} of {len(dirty) + sum(len(c.runs) for c in cfgs)} runs were set aside "
        f"({n_load} for other processes' CPU use, {n_slow} for a slow speed check; a run can have both). {enough}",
    ]
    lines += ["", "## Ratio ours / vLLM (same run)", ""]
    if not vllm_info:
        lines += [
            "vLLM was not measured in this run. For orientation only, shared/NOTES.md reports (another "
            "session, same machine kind): ~660 us/step at 64, ~910 us/step at 256.",
            "",
            "| max_num_seqs | ours chunked, ids: mean us/step | NOTES.md vLLM (other session) | ratio |",
            "|---|---|---|---|",
        ]
        for seqs in (64, 256):
            ours = by[f"ours-{seqs}-chunked"].median("mean_us")
            lines.append(f"| {seqs} | {ours:.0f} | {NOTES_VLLM_US[seqs]:.0f} | {ours / NOTES_VLLM_US[seqs]:.2f} |")
        return "\n".join(lines) + "\n"
    lines += [
        "Like-for-like is the first row of each pair: both chunk prefills (vLLM V1's mode) and ours carries "
        "token and block ids like vLLM's SchedulerOutput. Target: ratio <= 0.50.",
        "",
        "| max_num_seqs | ours | vLLM | ours mean / vLLM mean | ours median / vLLM median | "
        "per scheduled request: ours / vLLM |",
        "|---|---|---|---|---|---|",
    ]
    pairs = [
        ("chunked", "chunked", "chunked, ids", "chunked, no prefix caching"),
        ("chunked-noids", "chunked", "chunked, counts only", "chunked, no prefix caching"),
        ("chunked", "chunked-defaults", "chunked, ids", "chunked, prefix caching + stats"),
        ("no-chunk", "no-chunk", "no chunking, ids", "no chunking, no prefix caching"),
        ("no-chunk-noids", "no-chunk", "no chunking, counts only", "no chunking, no prefix caching"),
    ]
    for seqs in (64, 256):
        for ok, vk, ol, vl in pairs:
            o, v = by[f"ours-{seqs}-{ok}"], by[f"vllm-{seqs}-{vk}"]
            lines.append(
                f"| {seqs} | {ol}: {o.median('mean_us'):.0f} us | {vl}: {v.median('mean_us'):.0f} us | "
                f"**{o.median('mean_us') / v.median('mean_us'):.2f}** | "
                f"{o.median('median_us') / v.median('median_us'):.2f} | "
                f"{o.median('us_per_scheduled_req') / v.median('us_per_scheduled_req'):.2f} |"
            )
    lines += [
        "",
        "shared/NOTES.md's vLLM figures (another session, same machine kind): ~660 us/step at 64, "
        "~910 us/step at 256; this run's vLLM figures above are the ones the ratios use.",
    ]
    return "\n".join(lines) + "\n"


def profile(workload: dict[str, list[int]], top: int) -> str:
    out = io.StringIO()
    for seqs in (64, 256):
        for include_ids in (True, False):
            run_ours(workload, seqs, True, include_ids)  # warm-up
            prof = cProfile.Profile()
            rec = run_ours(workload, seqs, True, include_ids, profiler=prof)
            out.write(
                f"\n=== ours, max_num_seqs={seqs}, chunked, include_token_ids={include_ids}: "
                f"{rec['steps']} steps, {rec['mean_us']:.0f} us/step under the profiler ===\n"
            )
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--vllm-python",
        default=os.environ.get("BATCHSCOPE_VLLM_PYTHON", ""),
        help="python of a virtualenv with vllm installed (env BATCHSCOPE_VLLM_PYTHON); "
        "empty: measure ours only and compare with NOTES.md's figures",
    )
    p.add_argument("--runs", type=int, default=5, help="clean runs wanted per configuration")
    p.add_argument("--max-other-load", type=float, default=0.15, help="redo a run above this many cores of others")
    p.add_argument("--max-attempts", type=int, default=4, help="attempts per configuration per round")
    p.add_argument(
        "--max-slowdown",
        type=float,
        default=1.2,
        help="redo a run whose speed check (before, during or after) is slower than this x the session's fastest",
    )
    p.add_argument("--quiet-timeout", type=float, default=20.0, help="seconds to wait for a quiet machine per run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine-root", default=str(ROOT), help="directory whose engine/ is measured (read early)")
    p.add_argument("--engine-label", default="", help="what --engine-root holds, for the report (e.g. a commit)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results_scheduler.md"), help="markdown results file")
    p.add_argument("--json", default="", help="also write every run's record here")
    p.add_argument("--profile", action="store_true", help="cProfile ours (chunked, 64 and 256) and exit")
    p.add_argument("--profile-top", type=int, default=20)
    args = p.parse_args()

    workload = make_workload(args.seed)
    if args.profile:
        print(profile(workload, args.profile_top))
        return
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t_start = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(workload, f)
        workload_path = f.name
    disc: Discipline
    driver = VllmDriver(args.vllm_python) if args.vllm_python else None
    try:
        vllm_info = driver.ask({"cmd": "info"}) if driver else None
        cfgs = configs(driver is not None)
        disc = measure(cfgs, args, workload_path, workload, driver)
    finally:
        if driver:
            driver.close()
        os.unlink(workload_path)
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    report = render(cfgs, args, command, vllm_info, started, time.monotonic() - t_start, disc)
    Path(args.out).write_text(report)
    if args.json:
        Path(args.json).write_text(json.dumps({c.key: {"clean": c.runs, "redone": c.dirty} for c in cfgs}, indent=1))
    print(report)


if __name__ == "__main__":
    main()
