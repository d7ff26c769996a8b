"""Decode step time when contexts are skewed vs even, through TorchExecutor.execute_model on `tiny`.

    python bench/bench_decode_attention.py [--rounds 5] [--steps 5] [--old REV] [--out FILE.md]

Hand-built SchedulerOutputs of decodes only (blocks scattered over the pool, as in a used one):
- skewed: 32 requests at context 64 plus one at 2,000; even: 33 requests with the same total
  context spread evenly. Target: skewed / even <= 1.3 (one padded call for all decodes: ~10).
- step time vs total context (256 .. 16k) at a fixed batch of 32, spread evenly, and skewed
  (one request holds min(2,000, half) of it).
Each figure is the median over rounds of a round's median step; the cases alternate inside every
round so all see the same machine. Other processes' CPU use is measured per round (bench/cpu_load)
and a round where it passed --max-other-load is redone (up to --max-redos times). With --old REV,
the implementation at that git revision (engine/executors/{paged_attention,step_batch}.py) runs in
the same process, on the same model and KV pool, as the baseline.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.cpu_load import CpuLoadMeter, wait_for_quiet, write_report  # noqa: E402
from engine.config import CacheConfig, EngineConfig, SchedulerConfig  # noqa: E402
from engine.executors import torch_executor  # noqa: E402
from engine.executors.model_loading import load_model  # noqa: E402
from engine.executors.paged_attention import register_paged_attention  # noqa: E402
from engine.executors.torch_executor import TorchExecutor  # noqa: E402
from engine.outputs import ScheduledRequest, SchedulerOutput  # noqa: E402
from engine.sampling_params import SamplingParams  # noqa: E402
from engine.step_counts import StepCounts  # noqa: E402

BLOCK = 16
POOL_BLOCKS = 4096
GREEDY = SamplingParams(temperature=0)


def decode_step(contexts: list[int], rng: random.Random) -> SchedulerOutput:
    """One decode per context length (the token attends context tokens, itself included)."""
    free = list(range(POOL_BLOCKS))
    rng.shuffle(free)
    scheduled = []
    for i, ctx in enumerate(contexts):
        need = -(-ctx // BLOCK)
        table = tuple(free[:need])
        del free[:need]
        scheduled.append(ScheduledRequest(f"r{i}", 1, ctx - 1, False, True, GREEDY, (rng.randrange(3, 30000),),
                                          table))
    return SchedulerOutput(step=0, scheduled=tuple(scheduled),
                           counts=StepCounts(num_batched_tokens=len(contexts), num_decode_seqs=len(contexts)))


def even(total: int, n: int) -> list[int]:
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def skewed(total: int, n: int, long: int) -> list[int]:
    return [*even(total - long, n - 1), long]


class OldImplementation:
    """The attention and batch builder of an older revision, run by the same executor."""

    def __init__(self, rev: str) -> None:
        self.rev = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                                  text=True).stdout.strip()
        attn = self._load("old_paged_attention", "engine/executors/paged_attention.py", rev, {})
        self.build = self._load("old_step_batch", "engine/executors/step_batch.py", rev,
                                {"engine.executors.paged_attention": "old_paged_attention"}).build_step_batch
        from transformers import AttentionInterface

        self.name = "batchscope_paged_old"
        AttentionInterface.register(self.name, attn.paged_attention)

    @staticmethod
    def _load(module: str, path: str, rev: str, renames: dict[str, str]) -> types.ModuleType:
        source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                                text=True).stdout
        for old, new in renames.items():
            source = source.replace(f"from {old} import", f"from {new} import")
        folder = Path(tempfile.mkdtemp(prefix="old-attention-"))
        (folder / f"{module}.py").write_text(source)
        sys.path.insert(0, str(folder))
        return __import__(module)

    def builder(self) -> Callable[..., Any]:
        build = self.build

        def shim(out: SchedulerOutput, kv_cache: Any, backend: Any, timed: bool, pad_token_id: int = 0) -> Any:
            del backend, pad_token_id
            return _OldBatch(build(out, kv_cache, timed))

        return shim


class _OldBatch:
    """An old StepBatch as the executor reads it now (the old code counted no padding)."""

    padded_pairs = 0

    def __init__(self, batch: Any) -> None:
        self._batch = batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)


@dataclass
class Case:
    label: str
    step: SchedulerOutput
    old: bool = False


def run_case(executor: TorchExecutor, case: Case, steps: int, old: OldImplementation | None,
             new_name: str) -> float:
    """Median seconds of `steps` execute_model calls (after one warm-up), wall clock around each."""
    original = torch_executor.build_step_batch
    if case.old:
        assert old is not None
        executor.model.set_attn_implementation(old.name)
        torch_executor.build_step_batch = old.builder()  # type: ignore[assignment]
    try:
        executor.execute_model(case.step)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            executor.execute_model(case.step)
            times.append(time.perf_counter() - t0)
    finally:
        torch_executor.build_step_batch = original
        executor.model.set_attn_implementation(new_name)
    return statistics.median(times)


def measure(executor: TorchExecutor, cases: list[Case], args: argparse.Namespace, old: OldImplementation | None,
            new_name: str) -> tuple[dict[str, list[float]], list[float], int]:
    results: dict[str, list[float]] = {c.label: [] for c in cases}
    loads: list[float] = []
    redos = 0
    while len(loads) < args.rounds:
        wait_for_quiet(args.max_other_load, timeout_s=args.quiet_timeout, window_s=1.0)
        with CpuLoadMeter() as meter:
            round_times = {c.label: run_case(executor, c, args.steps, old, new_name) for c in cases}
        if meter.others_cores > args.max_other_load and redos < args.max_redos:
            redos += 1
            print(f"redo: other processes used {meter.others_cores:.2f} cores", file=sys.stderr)
            continue
        loads.append(meter.others_cores)
        for label, t in round_times.items():
            results[label].append(t)
        print(" ".join(f"{k}={v * 1e3:.1f}ms" for k, v in round_times.items()),
              f"(others {meter.others_cores:.2f} cores)", file=sys.stderr)
    return results, loads, redos


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--old", default=None, help="git revision of the implementation to compare against")
    parser.add_argument("--batch", type=int, default=32, help="requests in the context table")
    parser.add_argument("--max-other-load", type=float, default=0.15)
    parser.add_argument("--max-redos", type=int, default=10)
    parser.add_argument("--quiet-timeout", type=float, default=120.0,
                        help="seconds to wait for other processes to go quiet before each round")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    torch.set_num_threads(2)
    loaded = load_model("tiny", device="cpu")
    config = EngineConfig(SchedulerConfig(max_model_len=2048, max_num_seqs=64),
                          CacheConfig(block_size=BLOCK, num_gpu_blocks=POOL_BLOCKS))
    executor = TorchExecutor(loaded, config, peak_flops=1e11)
    executor.kv_cache.device_blocks.normal_()  # real-looking values; the step reads whatever is there
    new_name = register_paged_attention()
    old = OldImplementation(args.old) if args.old else None
    rng = random.Random(0)

    total = 32 * 64 + 2000
    head = [Case("skewed", decode_step([64] * 32 + [2000], rng)), Case("even", decode_step(even(total, 33), rng))]
    if old:
        head += [Case("old skewed", head[0].step, old=True), Case("old even", head[1].step, old=True)]
    print("== skewed vs even ==", file=sys.stderr)
    head_res, head_loads, head_redos = measure(executor, head, args, old, new_name)

    totals = [256, 512, 1024, 2048, 4096, 8192, 16384]
    table: list[Case] = []
    for t in totals:
        long = min(2000, t // 2)
        table += [Case(f"even {t}", decode_step(even(t, args.batch), rng)),
                  Case(f"skewed {t}", decode_step(skewed(t, args.batch, long), rng))]
        if old:
            table += [Case(f"old even {t}", table[-2].step, old=True),
                      Case(f"old skewed {t}", table[-1].step, old=True)]
    print("== context table ==", file=sys.stderr)
    table_res, table_loads, table_redos = measure(executor, table, args, old, new_name)

    ratio = statistics.median(head_res["skewed"]) / statistics.median(head_res["even"])
    loads = head_loads + table_loads
    lines = [
        f"Command: `python bench/bench_decode_attention.py --rounds {args.rounds} --steps {args.steps}"
        + (f" --old {args.old}" if args.old else "") + "`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other users, Python "
        f"{platform.python_version()}, torch {torch.__version__}, 2 torch threads, {date.today()}; other processes' "
        f"CPU use during kept rounds: median {statistics.median(loads):.2f}, max {max(loads):.2f} cores "
        f"({head_redos + table_redos} rounds redone). The machine is shared and noisy: compare figures within a "
        "table (measured alternately, same process), not across runs.  ",
        f"Model: `tiny` (11M Llama, 4 layers, 4 heads / 2 KV heads, head_dim 64), fp32 CPU, block size {BLOCK}, "
        f"blocks scattered over a {POOL_BLOCKS}-block pool; attention backend `{executor.attention.name}`. "
        f"Step = `TorchExecutor.execute_model` on a hand-built decode-only SchedulerOutput (wall clock around the "
        f"call); each figure the median over {args.rounds} rounds of a round's median of {args.steps} steps.",
        "",
        "## One long context among short ones",
        "",
        "| case | step ms (median) | per round |",
        "|---|---:|---|",
    ]
    for c in head:
        what = {"skewed": "32 x 64 + 1 x 2,000", "even": f"33 x ~{total // 33} (same total, {total:,})"}[
            c.label.removeprefix("old ")]
        impl = f"old ({old.rev})" if c.old and old else "new"
        lines.append(f"| {impl}: {what} | {ms(head_res[c.label])} | "
                     f"{', '.join(f'{v * 1e3:.1f}' for v in head_res[c.label])} |")
    lines += ["", f"Skewed / even, new: **{ratio:.2f}** (target <= 1.3)."]
    if old:
        old_ratio = statistics.median(head_res["old skewed"]) / statistics.median(head_res["old even"])
        lines[-1] += (f" Old ({old.rev}): {old_ratio:.2f}. Skewed step, old / new: "
                      f"{statistics.median(head_res['old skewed']) / statistics.median(head_res['skewed']):.1f}x.")
    header = "| total context | even, ms | skewed, ms |" + (" old even, ms | old skewed, ms |" if old else "")
    lines += ["", f"## Step time vs total context, {args.batch} decodes", "",
              f"Skewed: one request holds min(2,000, half) of the total, the other {args.batch - 1} share the rest.",
              "",
              header, "|---:|---:|---:|" + ("---:|---:|" if old else "")]
    for t in totals:
        row = f"| {t:,} | {ms(table_res[f'even {t}'])} | {ms(table_res[f'skewed {t}'])} |"
        if old:
            row += f" {ms(table_res[f'old even {t}'])} | {ms(table_res[f'old skewed {t}'])} |"
        lines.append(row)
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
