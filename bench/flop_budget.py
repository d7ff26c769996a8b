"""What bench_real.py's compute utilization is made of: the workload's useful FLOPs, a fixed matmul
peak timed in the same run, and HF static's padding worked out from its batches.

Useful FLOPs are the same token work whoever serves the workload: every prompt prefilled once,
every output token but the last decoded once, the LM head on the rows that sample (one per output
token), counted by the engine's own FlopModel (engine/executors/flops.py). What a system computes
on top (static pad rows, keys an attention length bucket pads with) is padding, not useful work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bench.cpu_load import CpuLoadMeter, wait_for_quiet
from engine.executors.flops import FlopModel, measure_peak_flops
from engine.outputs import ScheduledRequest
from engine.sampling_params import SamplingParams

PEAK_SIZE = 1024  # one fixed square fp32 matmul, so peaks compare across runs and machines
PEAK_REPEATS = 7


@dataclass(frozen=True)
class PeakReading:
    flops: float  # FLOP/s of the median timing
    others_cores: float  # other processes' CPU use while it was timed


def matmul_peak(max_load: float, size: int = PEAK_SIZE, repeats: int = PEAK_REPEATS) -> PeakReading:
    """fp32 size^3 matmul FLOP/s in this process's torch threads: warm-up, then the median of repeats."""
    wait_for_quiet(max_load, timeout_s=60)
    with CpuLoadMeter() as meter:
        flops = measure_peak_flops(torch.device("cpu"), torch.float32, sizes=(size,), repeats=repeats)
    return PeakReading(flops, meter.others_cores)


def workload_flops(model: FlopModel, lengths: Sequence[tuple[int, int]]) -> float:
    """Useful FLOPs of serving (prompt length, output tokens) requests: each prompt in one chunk,
    then one decode per output token but the last, as the engine's FLOP model counts a step."""
    params = SamplingParams()
    pieces: list[ScheduledRequest] = []
    num_outputs = 0
    for prompt, outputs in lengths:
        pieces.append(ScheduledRequest("r", prompt, 0, True, True, params))
        pieces += [ScheduledRequest("r", 1, prompt + k, False, True, params) for k in range(outputs - 1)]
        num_outputs += outputs
    return model.step_flops(pieces, num_outputs)


def hf_static_padding(lengths: Sequence[tuple[int, int]], batch_size: int) -> tuple[int, int]:
    """(pad rows, all rows computed) of HF generate in consecutive static batches: each batch
    prefills batch x longest prompt rows, then decodes batch rows for longest output - 1 steps;
    pad rows are the left padding and the decode rows of members already done."""
    pad = computed = 0
    for i in range(0, len(lengths), batch_size):
        batch = lengths[i : i + batch_size]
        width = max(p for p, _ in batch)
        longest = max(o for _, o in batch)
        computed += len(batch) * (width + longest - 1)
        pad += sum(width - p for p, _ in batch) + sum(longest - o for _, o in batch)
    return pad, computed


def hf_static_flops(model: FlopModel, lengths: Sequence[tuple[int, int]], batch_size: int) -> float:
    """Every FLOP HF generate computes in consecutive static batches, padding included: all batch x
    (longest prompt + longest output - 1) rows run the body, every row of every forward gets its
    logits (finished members too), a prefill attends its whole padded width (a padding mask, so no
    causal skipping) and a decode every cached key, left padding included."""
    body = lm_rows = pairs = 0
    for i in range(0, len(lengths), batch_size):
        n = len(lengths[i : i + batch_size])
        width = max(p for p, _ in lengths[i : i + batch_size])
        longest = max(o for _, o in lengths[i : i + batch_size])
        body += n * (width + longest - 1)
        lm_rows += n * longest
        pairs += n * width * width + n * sum(width + t for t in range(1, longest))
    return float(2 * model.body_params * body + 2 * model.lm_head_params * lm_rows) + model.attention_flops(pairs)
