"""The systems bench_real.py compares, each run on the same requests and timed the same way.

- HF generate in static batches (left padding, greedy, every request forced to its length),
- transformers' own continuous batching (its manager API, per-request max_new_tokens),
- our engine (continuous or static), with where each step's time went and what it padded.

Both baselines already compute the LM head on sampling rows only (generate passes logits_to_keep=1,
transformers' CB passes its logits indices); what our engine has and they lack is its CPU linear
kernels (oneDNN packed weights, engine/executors/packed_linear.py, or where those are unavailable
the chunked LM head, engine/executors/lm_head.py), which bench_real.py gives them or measures apart.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.flop_budget import hf_static_padding
from engine.clock import WallClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.lm_head import ChunkedLMHead
from engine.executors.model_loading import LoadedModel
from engine.executors.packed_linear import install_packed_linears, packing_unavailable, stock_linears
from engine.executors.torch_executor import TorchExecutor
from engine.outputs import ModelRunnerOutput, SchedulerOutput
from engine.snapshot import StepSnapshot
from engine.workload.spec import RequestSpec

BLOCK_SIZE = 16
NUM_GPU_BLOCKS = 1024  # 16k token slots: the whole workload fits, so no preemption muddies the comparison


@dataclass(frozen=True)
class BenchRequest:
    request_id: str
    prompt: list[int]
    max_tokens: int


@dataclass
class RunResult:
    duration_s: float  # start to last finish
    output_tokens: int
    latencies_s: list[float]  # end to end, per request
    breakdown: dict[str, float] = field(default_factory=dict)  # seconds per part (ours only)
    padding_rows: int = 0  # token rows computed and thrown away (static batching)
    computed_rows: int = 0  # every token row computed, padding included; 0: not known
    engine_flops: float | None = None  # ours: useful FLOPs as the engine counted them, step by step
    static_pad_flops: float = 0.0  # ours: FLOPs of static pad rows
    bucket_pad_flops: float = 0.0  # ours: FLOPs of keys attention length buckets padded with
    # Seconds inside the model's forward passes (embeddings, layers with attention and the KV cache's
    # update, LM head): HF's timed around each call generate makes, ours from the executor's parts.
    # The rest of the run is the loop around the model (generate's per-step work; our scheduler,
    # input preparation and sampling). None: not timed.
    forward_s: float | None = None

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.duration_s

    @property
    def padding_share(self) -> float | None:
        return self.padding_rows / self.computed_rows if self.computed_rows else None

    @property
    def p50_s(self) -> float:
        return float(np.percentile(self.latencies_s, 50))

    @property
    def p99_s(self) -> float:
        return float(np.percentile(self.latencies_s, 99))


def run_hf_static(model: Any, reqs: list[BenchRequest], batch_size: int,
                  device: torch.device | None = None, cache: str = "dynamic") -> RunResult:
    """HF generate in static batches of batch_size, left-padded to the batch's longest prompt, every
    member generating the batch's longest output (finished rows keep computing, as generate does).

    cache: "dynamic" (generate's default: DynamicCache grows each layer's K/V by torch.cat, copying
    the whole cache every step) or "static" (StaticCache: preallocated for the batch's full length
    and written in place, as our paged pool is; attention then spans the preallocated length)."""
    implementation = {"dynamic": None, "static": "static"}[cache]  # None: generate's default, DynamicCache
    device = device or torch.device("cpu")
    latencies: list[float] = []
    forward = ForwardTimer()
    t0 = time.perf_counter()
    for i in range(0, len(reqs), batch_size):
        batch = reqs[i : i + batch_size]
        width = max(len(r.prompt) for r in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, r in enumerate(batch):  # left padding: every prompt ends at the same column
            ids[row, width - len(r.prompt) :] = torch.tensor(r.prompt)
            mask[row, width - len(r.prompt) :] = 1
        new = max(r.max_tokens for r in batch)
        with torch.inference_mode(), timed_forwards(model, forward):
            model.generate(ids.to(device), attention_mask=mask.to(device), max_new_tokens=new, min_new_tokens=new,
                           do_sample=False, pad_token_id=0, cache_implementation=implementation)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        latencies += [time.perf_counter() - t0] * len(batch)
    pad, computed = hf_static_padding([(len(r.prompt), r.max_tokens) for r in reqs], batch_size)
    return RunResult(time.perf_counter() - t0, sum(r.max_tokens for r in reqs), latencies,
                     padding_rows=pad, computed_rows=computed, forward_s=forward.seconds)


@dataclass
class ForwardTimer:
    seconds: float = 0.0
    started: float = 0.0


@contextmanager
def timed_forwards(model: Any, timer: ForwardTimer) -> Iterator[None]:
    """Add to timer the wall time of every call of `model` (hooks on its top module) while inside."""

    def before(*_: Any) -> None:
        timer.started = time.perf_counter()

    def after(*_: Any) -> None:
        timer.seconds += time.perf_counter() - timer.started

    handles = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_hf_cb(model: Any, reqs: list[BenchRequest], max_batch_tokens: int, max_seqs: int) -> RunResult:
    from transformers import ContinuousBatchingConfig, GenerationConfig

    gen = GenerationConfig(max_new_tokens=max(r.max_tokens for r in reqs), do_sample=False, eos_token_id=-1,
                           pad_token_id=0)
    # On CPU its defaults would reserve 6-9 GB: size the pages and the batch by hand (NOTES.md).
    cb = ContinuousBatchingConfig(num_blocks=64, max_batch_tokens=max_batch_tokens, max_requests_per_batch=max_seqs)
    latencies: dict[str, float] = {}
    tokens = 0
    with model.continuous_batching_context_manager(generation_config=gen, continuous_batching_config=cb,
                                                   block=True, timeout=30, warmup=False) as manager:
        t0 = time.perf_counter()
        for r in reqs:
            manager.add_request(r.prompt, request_id=r.request_id, max_new_tokens=r.max_tokens, eos_token_id=-1)
        while len(latencies) < len(reqs):
            result = manager.get_result(timeout=1)
            if result is None:
                continue
            if result.is_finished():
                if result.error:
                    raise RuntimeError(f"transformers CB failed on {result.request_id}: {result.error}")
                latencies[result.request_id] = time.perf_counter() - t0
                tokens += len(result.generated_tokens)
    return RunResult(max(latencies.values()), tokens, list(latencies.values()))


class _TimedExecutor:
    """Passes through to the torch executor and sums its per-step timings."""

    def __init__(self, inner: TorchExecutor) -> None:
        self.inner = inner
        self.mode, self.include_token_ids = inner.mode, inner.include_token_ids
        self.eos_token_id, self.vocab_size = inner.eos_token_id, inner.vocab_size
        self.extra_eos_token_ids = inner.extra_eos_token_ids
        self.totals: dict[str, float] = defaultdict(float)

    def execute_model(self, out: SchedulerOutput) -> ModelRunnerOutput:
        result = self.inner.execute_model(out)
        for part, seconds in result.timings.items():
            self.totals[part] += seconds
        self.totals["executor"] += result.model_time_s
        return result

    def encode(self, text: str) -> list[int]:
        return list(self.inner.encode(text))

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def shutdown(self) -> None:
        self.inner.shutdown()


_executors: dict[tuple[int, str], TorchExecutor] = {}


def run_ours(loaded: LoadedModel, reqs: list[BenchRequest], budget: int, max_seqs: int, chunked: bool,
             batching: str) -> RunResult:
    config = EngineConfig(
        SchedulerConfig(max_num_seqs=max_seqs, max_num_batched_tokens=budget, enable_chunked_prefill=chunked,
                        batching=batching,  # type: ignore[arg-type]
                        max_model_len=min(2048, loaded.max_position_embeddings or 2048)),  # GPT-2: 1,024
        CacheConfig(block_size=BLOCK_SIZE, num_gpu_blocks=NUM_GPU_BLOCKS),
    )
    key = (id(loaded), loaded.name)
    if key not in _executors:  # one KV pool per model, reused: the pool does not depend on the schedule
        _executors[key] = TorchExecutor(loaded, config)
    executor = _TimedExecutor(_executors[key])
    specs = [RequestSpec(r.request_id, 0.0, r.max_tokens, prompt_token_ids=tuple(r.prompt)) for r in reqs]
    steps_wall = 0.0
    finished_pad_rows = 0  # static: finished members' pad rows, whose logits are computed too

    def on_step(s: StepSnapshot) -> None:
        nonlocal steps_wall, finished_pad_rows
        steps_wall += s.end_time - s.start_time
        finished_pad_rows += s.counts.num_padding_seqs

    engine = Engine(config, executor, WallClock())  # type: ignore[arg-type]
    summary = engine.run(specs, on_step=on_step)
    t = executor.totals
    breakdown = {
        "model (matmuls, norms, ...)": t["model"],
        "kv gather": t["kv_gather"],
        "attention (+ kv write)": t["attention"] + t["kv_write"],
        "sampling": t["sampling"],
        "prepare + swap": t["prepare"] + t["swap"] + t["other"],
        "scheduler + engine loop": steps_wall - t["executor"],
        "rest": summary.duration_s - steps_wall,
    }
    latencies = [r.finish_time - r.arrival_time for r in engine.requests.values() if r.finish_time is not None]
    stats = engine.stats
    static_pad = executor.inner.flop_model.padding_flops(stats.sum_padding_tokens, 0, finished_pad_rows)
    return RunResult(summary.duration_s, summary.output_tokens, latencies, breakdown,
                     padding_rows=stats.sum_padding_tokens,
                     computed_rows=stats.sum_batched_tokens + stats.sum_padding_tokens,
                     engine_flops=stats.model_flops, static_pad_flops=static_pad,
                     bucket_pad_flops=stats.padding_flops - static_pad,
                     forward_s=t["model"] + t["kv_gather"] + t["attention"] + t["kv_write"])


def give_our_cpu_kernels(model: Any) -> str:
    """Give a baseline the CPU linear kernels our engine runs (same weights, same results to rounding):
    packed oneDNN linears where they probe right, else the chunked LM head. Says what it gave."""
    why_not = packing_unavailable(next(model.parameters()).dtype, next(model.parameters()).device)
    if why_not is None:
        return f"oneDNN packed linears ({install_packed_linears(model)} layers)"
    head = model.get_output_embeddings()
    if type(head) is nn.Linear:
        model.set_output_embeddings(ChunkedLMHead(head))
    if isinstance(model.get_output_embeddings(), ChunkedLMHead):
        return f"the chunked LM head ({why_not})"
    return f"nothing: its LM head is not a plain Linear ({why_not})"


@contextmanager
def stock_kernels(model: Any) -> Iterator[None]:
    """Our engine's model with its own nn.Linear layers on the same weights while the block runs."""
    with stock_linears(model):
        head = model.get_output_embeddings()
        if not isinstance(head, ChunkedLMHead):
            yield
            return
        linear = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None, device="meta")
        linear.weight = head.weight
        linear.bias = head.bias
        model.set_output_embeddings(linear)
        try:
            yield
        finally:
            model.set_output_embeddings(head)
