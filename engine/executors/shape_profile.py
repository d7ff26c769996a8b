"""The batch shapes `python -m engine profile` times, and the timing: hand-made SchedulerOutputs with
real block tables, each run through an executor a few times, the median kept.

The grid covers what runs exercise (decodes at several contexts, prefill chunks with and without
earlier context, mixed steps) and what a run may never exercise, so a what-if can borrow its cost
from a profile: static batching's pad rows and block copies between the pools.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.block_manager import BlockManager
from engine.executors.base import Executor
from engine.executors.cost_model import cost_features
from engine.outputs import ScheduledRequest, SchedulerOutput
from engine.sampling_params import SamplingParams
from engine.step_counts import StepCounts

GREEDY = SamplingParams(max_tokens=1, temperature=0.0)


@dataclass(frozen=True)
class Shape:
    decodes: int  # sequences decoding one token
    decode_context: int  # tokens already in each decoding sequence's cache
    prefills: int  # sequences computing a prefill chunk
    chunk: int  # tokens in each prefill chunk
    prefill_context: int = 0  # tokens already cached before each chunk
    padding: int = 0  # static batching's pad rows
    finished_pads: int = 0  # of them, finished members' (lockstep decode): their logits are computed too
    swap_blocks: int = 0  # KV blocks copied between the pools before the pass (half out, half in)

    def label(self) -> str:
        parts = []
        if self.decodes:
            parts.append(f"{self.decodes} decodes @ {self.decode_context}")
        if self.prefills:
            ctx = f" after {self.prefill_context}" if self.prefill_context else ""
            parts.append(f"{self.prefills} x {self.chunk}-token prefill{ctx}")
        if self.padding:
            kind = " (finished members, with logits)" if self.finished_pads == self.padding else ""
            parts.append(f"{self.padding} pad rows{kind}")
        if self.swap_blocks:
            parts.append(f"{self.swap_blocks} blocks swapped")
        return " + ".join(parts)


def default_grid(max_seqs: int, max_tokens: int) -> list[Shape]:
    shapes = []
    for batch in (1, 2, 4, 8, 16, 32, 64, 128):
        if batch <= max_seqs:
            for context in (32, 256, 1024):
                shapes.append(Shape(batch, context, 0, 0))
    for chunk in (16, 64, 128, 256, 512, 1024):
        for seqs in (1, 2, 4):
            if chunk * seqs <= max_tokens:
                shapes.append(Shape(0, 0, seqs, chunk))
                shapes.append(Shape(0, 0, seqs, chunk, prefill_context=512))
    for batch in (4, 16, 32):
        for chunk in (64, 256):
            if batch <= max_seqs and batch + chunk <= max_tokens:
                shapes.append(Shape(batch, 256, 1, chunk))
    # What a run may never exercise, so a what-if can borrow it from here: pad rows and block copies.
    for pad in (8, 32, 128, 512):
        if 8 + pad <= max_tokens:
            shapes.append(Shape(8, 128, 0, 0, padding=pad))
    for pad in (8, 32, 128):
        if 8 + pad <= max_tokens:
            shapes.append(Shape(8, 128, 0, 0, padding=pad, finished_pads=pad))
    for blocks in (8, 32, 128):
        shapes.append(Shape(4, 128, 0, 0, swap_blocks=blocks))
    return shapes


SWAP_POOL_BLOCKS = 128  # CPU blocks the profile's swap shapes copy into


def build_output(shape: Shape, step: int, block_size: int, num_blocks: int, vocab: int,
                 rng: np.random.Generator) -> SchedulerOutput:
    """A hand-made SchedulerOutput with real block tables, as the scheduler would hand out."""
    bm = BlockManager(num_blocks, 0, block_size)
    scheduled = []
    for i in range(shape.decodes + shape.prefills):
        decode = i < shape.decodes
        start = shape.decode_context if decode else shape.prefill_context
        n = 1 if decode else shape.chunk
        rid = f"p{i}"
        if bm.grow(rid, start + n) is None:
            raise SystemExit(f"error: the profile pool ({num_blocks} blocks) is too small for {shape.label()}")
        tokens = tuple(int(t) for t in rng.integers(1000, vocab, n))
        scheduled.append(ScheduledRequest(rid, n, start, not decode, True, GREEDY, tokens,
                                          tuple(bm.block_table(rid))))
    # Block copies between blocks no request of this step uses: half out to the CPU pool, half back.
    spare = [b for b in range(num_blocks - 1, -1, -1) if b not in {x for s in scheduled for x in s.block_ids}]
    half = shape.swap_blocks // 2
    swap_out = tuple((spare[i], i) for i in range(half))
    swap_in = tuple((half + i, spare[half + i]) for i in range(shape.swap_blocks - half))
    counts = StepCounts(
        num_prefill_seqs=shape.prefills, num_prefill_tokens=shape.prefills * shape.chunk, num_decode_seqs=shape.decodes,
        num_batched_tokens=sum(s.num_tokens for s in scheduled), num_padding_tokens=shape.padding,
        num_padding_seqs=shape.finished_pads,
        num_context_tokens=shape.decodes * (shape.decode_context + 1),
        num_prefill_pairs=shape.prefills * (shape.chunk * shape.prefill_context + shape.chunk * (shape.chunk + 1) // 2),
        num_swap_blocks=shape.swap_blocks)
    return SchedulerOutput(step=step, scheduled=tuple(scheduled), counts=counts,
                           finished_req_ids=tuple(f"p{i}" for i in range(len(scheduled))),
                           blocks_to_swap_out=swap_out, blocks_to_swap_in=swap_in)



def time_shapes(executor: Executor, shapes: list[Shape], block_size: int, num_blocks: int, vocab: int, *,
                repeats: int, budget_s: float, seed: int,
                progress: Callable[[str, float], None] | None = None) -> tuple[list[tuple[float, ...]], list[float]]:
    """Each shape's cost features and median time over `repeats` passes, after one warm-up pass; stops
    starting new shapes once budget_s has passed."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[float, ...]] = []
    durations: list[float] = []
    deadline = time.monotonic() + budget_s
    executor.execute_model(build_output(shapes[0], 0, block_size, num_blocks, vocab, rng))  # warm-up
    for i, shape in enumerate(shapes):
        if time.monotonic() > deadline:
            print(f"stopping after {i} shapes: --budget-s reached", file=sys.stderr)
            break
        out = build_output(shape, i, block_size, num_blocks, vocab, rng)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            executor.execute_model(out)
            times.append(time.perf_counter() - start)
        rows.append(cost_features(out.counts))
        durations.append(statistics.median(times))
        if progress is not None:
            progress(shape.label(), durations[-1])
    return rows, durations
